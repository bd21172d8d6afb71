"""The archive parser on every realdata layout, a 2025 µs case, and bad input."""

import csv
import io
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mnemo_assets import DatasetType
from mnemo_assets.binance import read_trades_file
from mnemo_assets.binance.archive import CorruptArchiveError
from mnemo_assets.binance.parse import TRADES_SCHEMA, TradesParseError, split_pair
from mnemo_assets_tests.conftest import REALDATA, realdata_files

CONTRACT = {"BTC": 100.0, "ETH": 10.0}


def raw_rows(path: Path) -> list[list[str]]:
    rows = list(csv.reader(path.read_text().splitlines()))
    return rows[1:] if not rows[0][0].isdigit() else rows


def expected(path: Path, market: str) -> list[dict]:
    """Independent reading of a realdata CSV with the csv module."""
    symbol = path.name.split("USD")[0]
    peg = "USD" if market == "cm" else "USDT"
    out = []
    for r in raw_rows(path):
        t = int(r[4])
        micros = t * 1000 if t < 10**14 else t
        out.append(
            {
                "symbol": symbol, "peg_symbol": peg, "trade_id": int(r[0]), "price": float(r[1]),
                "qty": float(r[3]) if market == "cm" else float(r[2]),
                "quote_qty": float(r[2]) * CONTRACT[symbol] if market == "cm" else float(r[3]),
                "time": datetime(1970, 1, 1) + timedelta(microseconds=micros),
                "is_buyer_maker": r[5].lower() == "true",
            }
        )
    return out


@pytest.mark.parametrize("path,market", realdata_files(), ids=lambda v: getattr(v, "name", v))
def test_every_realdata_file_parses_to_its_rows(path, market):
    df = read_trades_file(path, DatasetType.from_market(market))
    assert df.schema == TRADES_SCHEMA
    assert df.to_dicts() == expected(path, market)


def test_documented_row_counts():
    counts = {(m, p.name.split("-trades-")[0], p.name.split("-trades-")[1][:10]): read_trades_file(p, m).height for p, m in realdata_files()}
    assert counts[("spot", "BTCUSDT", "2021-01-08")] == 2001
    assert counts[("spot", "BTCUSDT", "2024-08-09")] == 10166
    assert counts[("spot", "ETHUSDT", "2024-08-09")] == 8417
    assert counts[("um", "BTCUSDT", "2024-08-08")] == 21313
    assert counts[("um", "ETHUSDT", "2024-08-09")] == 25
    assert counts[("cm", "BTCUSD_PERP", "2024-08-08")] == 2285
    assert counts[("cm", "ETHUSD_PERP", "2024-08-09")] == 1863


def test_first_rows_by_hand():
    spot = read_trades_file(REALDATA / "spot/trades/BTCUSDT-trades-2024-08-08.partial.csv", "spot").row(0, named=True)
    assert spot == {
        "symbol": "BTC", "peg_symbol": "USDT", "trade_id": 3735683259, "price": 61837.63, "qty": 0.02,
        "quote_qty": 1236.7526, "time": datetime(2024, 8, 8, 23, 54, 15, 342000), "is_buyer_maker": True,
    }
    cm = read_trades_file(REALDATA / "futures/cm/trades/BTCUSD_PERP-trades-2024-08-08.partial.csv", "cm").row(0, named=True)
    # 4 contracts of 100 USD; base_qty 0.00647199 BTC
    assert (cm["qty"], cm["quote_qty"], cm["is_buyer_maker"]) == (0.00647199, 400.0, False)


def make_zip(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name.replace(".zip", ".csv"), text)
    return path


def test_2025_spot_microseconds(tmp_path):
    src = REALDATA / "spot/trades/BTCUSDT-trades-2024-08-09.partial.csv"
    lines = []
    for r in raw_rows(src)[:50]:
        r[4] = str(int(r[4]) * 1000 + 123)  # a µs file; sub-ms digits survive
        lines.append(",".join(r))
    path = make_zip(tmp_path, "BTCUSDT-trades-2025-08-09.zip", "\n".join(lines) + "\n")
    df = read_trades_file(path, DatasetType.BinanceSpotTrades)
    first = int(raw_rows(src)[0][4])
    assert df.get_column("time")[0] == datetime(1970, 1, 1) + timedelta(microseconds=first * 1000 + 123)
    assert df.height == 50


def test_header_or_none_and_boolean_spellings(tmp_path):
    no_header = "1,10.5,2,21,1723161600000,true\n2,10.5,1,10.5,1723161600001,False\n"
    with_header = "id,price,qty,quote_qty,time,is_buyer_maker\n" + no_header
    a = read_trades_file(make_zip(tmp_path, "XUSDT-trades-2024-08-09.zip", no_header), "um")
    b = read_trades_file(make_zip(tmp_path, "YUSDT-trades-2024-08-09.zip", with_header), "um")
    assert a.get_column("is_buyer_maker").to_list() == [True, False]
    assert a.drop("symbol").equals(b.drop("symbol"))


@pytest.mark.parametrize(
    "text,match",
    [
        ("1,10.5,2,21,1723161600000,True,True\n2,10.5,oops,21,1723161600000,True,True\n", "line 2"),
        ("1,10.5,2,21,1723161600000,True,True\n2,10.5,2,21,1723161600000,True\n", "line 2 has 6 fields"),
        ("1,10.5,2,21,1723161600000,maybe,True\n", "is_buyer_maker"),
        ("foo,bar,baz\n1,10.5,2,21,1723161600000,True,True\n", "neither a trade nor a known header"),
        ("1,10.5,2,21,1723161600000,True,True\n2,10.5,2,21,1723161600000000,True,True\n", "mix milliseconds"),
        ("id,price,qty,base_qty,time,is_buyer_maker\n1,10.5,2,21,1723161600000,true\n", "does not match the spot layout"),
    ],
)
def test_malformed_input_names_the_file(tmp_path, text, match):
    path = make_zip(tmp_path, "BADUSDT-trades-2024-08-09.zip", text)
    with pytest.raises(TradesParseError, match=match) as err:
        read_trades_file(path, "spot")
    assert "BADUSDT-trades-2024-08-09.zip" in str(err.value)


def test_corrupt_zip(tmp_path):
    path = tmp_path / "BTCUSDT-trades-2024-08-09.zip"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CorruptArchiveError, match="BTCUSDT-trades-2024-08-09.zip"):
        read_trades_file(path, "spot")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.csv", "1")
        zf.writestr("b.csv", "2")
    path.write_bytes(buf.getvalue())
    with pytest.raises(CorruptArchiveError, match="exactly one CSV"):
        read_trades_file(path, "spot")


@pytest.mark.parametrize("text", ["", "\n", "id,price,qty,quote_qty,time,is_buyer_maker\n"])
def test_empty_file(tmp_path, text):
    df = read_trades_file(make_zip(tmp_path, "BTCUSDT-trades-2024-08-09.zip", text), "um")
    assert df.height == 0 and df.schema == TRADES_SCHEMA


@pytest.mark.parametrize(
    "pair,market,pegs,want",
    [
        ("BTCUSDT", "spot", ["USDT", "USDC"], ("BTC", "USDT")),
        ("BTCUSDC", "spot", ["USDT", "USDC"], ("BTC", "USDC")),
        ("ETHBTC", "spot", ["USDT", "USDC"], None),
        ("1000PEPEUSDT", "um", ["USDT"], ("1000PEPE", "USDT")),
        ("BTCUSDT_250328", "um", ["USDT"], ("BTC_250328", "USDT")),
        ("BTCUSD_PERP", "cm", ["USD"], ("BTC", "USD")),
        ("ETHUSD_250627", "cm", ["USD"], ("ETH_250627", "USD")),
        ("USDCUSDT", "spot", ["USDT", "USDC"], ("USDC", "USDT")),
        ("BTCFDUSD", "spot", ["USD", "FDUSD"], ("BTC", "FDUSD")),  # longest suffix wins
    ],
)
def test_split_pair(pair, market, pegs, want):
    assert split_pair(pair, market, pegs) == want


def test_split_pair_known_exchange_split_wins():
    assert split_pair("ABUSDT", "spot", ["USDT", "BUSDT"], known={"ABUSDT": ("AB", "USDT")}) == ("AB", "USDT")
    assert split_pair("ABUSDT", "spot", ["USDT", "BUSDT"]) == ("A", "BUSDT")
