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
                "symbol": symbol,
                "peg_symbol": peg,
                "trade_id": int(r[0]),
                "price": float(r[1]),
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
        "symbol": "BTC",
        "peg_symbol": "USDT",
        "trade_id": 3735683259,
        "price": 61837.63,
        "qty": 0.02,
        "quote_qty": 1236.7526,
        "time": datetime(2024, 8, 8, 23, 54, 15, 342000),
        "is_buyer_maker": True,
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
    with pytest.raises(CorruptArchiveError, match=r"BTCUSDT-trades-2024-08-09\.zip"):
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
    """The single-file reader gives zero rows; quality.read_pair_day records such a file as `empty`
    and read_day refuses it (see test_quality.py)."""
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


# ---------------------------------------------------------------- headers, time units, values, members

ROWS_UM = "1,10.5,2,21,1723161600000,true\n2,10.5,1,10.5,1723161600001,False\n"


@pytest.mark.parametrize(
    "market,header",
    [
        ("um", "id,price,qty,quote_qty,time,is_buyer_maker"),
        ("um", "trade_id,price,qty,quoteQty,time,isBuyerMaker"),
        ("um", "ID,PRICE,QTY,QUOTE_QTY,TIME,IS_BUYER_MAKER"),
        ("um", "Id, Price, Qty, QuoteQty, Time, IsBuyerMaker"),
        ("um", "\ufefftrade_id,price,qty,quote_qty,time,is_buyer_maker"),
        ("um", '"id","price","qty","quote_qty","time","is_buyer_maker"'),
        ("cm", "id,price,qty,base_qty,time,is_buyer_maker"),
        ("cm", "trade_id,price,qty,baseQty,time,isBuyerMaker"),
        ("spot", "id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch"),
        ("spot", "trade_id,price,qty,quote_qty,time,is_buyer_maker,is_best_match"),
    ],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_every_known_header_spelling_parses(tmp_path, market, header, newline):
    rows = ROWS_UM if market != "spot" else ROWS_UM.replace("true\n", "true,True\n").replace("False\n", "False,True\n")
    text = (header + "\n" + rows).replace("\n", newline)
    pair = "BTCUSD_PERP" if market == "cm" else "BTCUSDT"
    with_header = read_trades_file(make_zip(tmp_path, f"{pair}-trades-2024-08-09.zip", text), market)
    (tmp_path / "plain").mkdir()
    plain = read_trades_file(make_zip(tmp_path / "plain", f"{pair}-trades-2024-08-09.zip", rows), market)
    assert with_header.height == 2 and with_header.equals(plain)


@pytest.mark.parametrize(
    "market,header,match",
    [
        ("um", "tid,price,qty,quote_qty,time,is_buyer_maker", "neither a trade nor a known header"),
        ("um", "id,price,qty,base_qty,time,is_buyer_maker", "does not match the um layout"),
        ("cm", "id,price,qty,quote_qty,time,is_buyer_maker", "does not match the cm layout"),
        ("um", "id,price,qty,quote_qty,time", "does not match the um layout"),
        ("um", "price,id,qty,quote_qty,time,is_buyer_maker", "does not match the um layout"),
    ],
)
def test_unknown_or_wrong_header_names_file_header_and_layout(tmp_path, market, header, match):
    pair = "BTCUSD_PERP" if market == "cm" else "BTCUSDT"
    path = make_zip(tmp_path, f"{pair}-trades-2024-08-09.zip", header + "\n" + ROWS_UM)
    with pytest.raises(TradesParseError, match=match) as err:
        read_trades_file(path, market)
    text = str(err.value)
    assert path.name in text and header[:20] in text
    expected_layout = "id,price,qty,base_qty,time,is_buyer_maker" if market == "cm" else "id,price,qty,quote_qty,time,is_buyer_maker"
    assert expected_layout in text


@pytest.mark.parametrize(
    "times,match",
    [
        ((1723161600000000000, 1723161600000000001), r"1723161600000000001 at line 2 is in nanoseconds"),
        ((1723161601, 1723161600), r"1723161600 at line 2 is in seconds"),
        ((1723161600000, -5), r"negative trade time -5 at line 2"),
    ],
)
def test_time_units_other_than_ms_and_us_are_clear_errors(tmp_path, times, match):
    """A nanosecond file used to crash while formatting its error (``year 56577 is out of range``)."""
    text = "".join(f"{i},10.5,2,21,{t},True,True\n" for i, t in enumerate(times, start=1))
    path = make_zip(tmp_path, "BTCUSDT-trades-2024-08-09.zip", text)
    with pytest.raises(TradesParseError, match=match) as err:
        read_trades_file(path, "spot")
    assert path.name in str(err.value)


def test_ms_and_ns_in_one_file(tmp_path):
    text = "1,10.5,2,21,1723161600000,True,True\n2,10.5,2,21,1723161600000000000,True,True\n"
    with pytest.raises(TradesParseError, match=r"mix milliseconds and nanoseconds .*line 1 .. .*line 2"):
        read_trades_file(make_zip(tmp_path, "BTCUSDT-trades-2024-08-09.zip", text), "spot")


def test_format_epoch_never_raises():
    from mnemo_assets.binance.parse import format_epoch

    assert format_epoch(1723161600000, "ms") == "2024-08-09 00:00:00"
    assert "outside the datetime range" in format_epoch(1723161600000000000, "us")
    assert "outside the datetime range" in format_epoch(-(2**62), "ms")


def test_blank_lines(tmp_path):
    ok = read_trades_file(make_zip(tmp_path, "BTCUSDT-trades-2024-08-09.zip", ROWS_UM + "\n\n"), "um")
    assert ok.height == 2
    with pytest.raises(TradesParseError, match="line 2 is blank"):
        read_trades_file(make_zip(tmp_path, "ETHUSDT-trades-2024-08-09.zip", ROWS_UM.replace("\n", "\n\n", 1)), "um")
    with pytest.raises(TradesParseError, match="line 1 is blank"):
        read_trades_file(make_zip(tmp_path, "XRPUSDT-trades-2024-08-09.zip", "\n" + ROWS_UM), "um")


@pytest.mark.parametrize("column", [1, 2, 3])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400"])
def test_non_finite_values_are_rejected_naming_lines(tmp_path, column, value):
    rows = [r.split(",") for r in ROWS_UM.splitlines()] + [["3", "10.5", "1", "10.5", "1723161600002", "true"]]
    rows[1][column] = value
    path = make_zip(tmp_path, "BTCUSDT-trades-2024-08-09.zip", "\n".join(",".join(r) for r in rows) + "\n")
    with pytest.raises(TradesParseError, match=r"1 row\(s\) with a non-finite price or quantity .* at line 2$") as err:
        read_trades_file(path, "um")
    assert path.name in str(err.value)


def test_non_finite_base_qty_of_coin_m(tmp_path):
    path = make_zip(tmp_path, "BTCUSD_PERP-trades-2024-08-09.zip", "1,60000.1,4,nan,1723161600000,true\n")
    with pytest.raises(TradesParseError, match="non-finite"):
        read_trades_file(path, "cm")


@pytest.mark.parametrize(
    "row", ["1,0,2,0,1723161600000,true", "1,-10.5,2,-21,1723161600000,true", "1,10.5,0,0,1723161600000,true", "1,10.5,2,-21,1723161600000,true"]
)
def test_non_positive_values_are_rejected(tmp_path, row):
    path = make_zip(tmp_path, "BTCUSDT-trades-2024-08-09.zip", ROWS_UM + row.replace("1,", "3,", 1) + "\n")
    with pytest.raises(TradesParseError, match=r"price <= 0, qty <= 0 .* at line 3"):
        read_trades_file(path, "um")


def test_parse_trades_bytes_counts_values_without_raising():
    from mnemo_assets.binance.parse import parse_trades_bytes

    text = b"id,price,qty,quote_qty,time,is_buyer_maker\n1,nan,1,1,1723161600000,true\n2,1,1,1,1723161600001,true\n3,1,inf,1,1723161600002,true\n"
    parsed = parse_trades_bytes(text, "BTCUSDT", "um", "x.zip", ["USDT"])
    assert (parsed.non_finite, parsed.non_finite_lines, parsed.first_line, parsed.time_unit) == (2, (2, 4), 2, "ms")
    assert parsed.header == "id,price,qty,quote_qty,time,is_buyer_maker" and parsed.trades.height == 3


def zip_with_member(path: Path, member: str, text: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo(member), text)
    return path


@pytest.mark.parametrize(
    "member,match",
    [
        ("ETHUSDT-trades-2024-08-09.csv", "is not 'BTCUSDT-trades-2024-08-09.csv'"),
        ("BTCUSDT-trades-2024-08-08.csv", "is not 'BTCUSDT-trades-2024-08-09.csv'"),
        ("BTCUSDT-aggTrades-2024-08-09.csv", "is not 'BTCUSDT-trades-2024-08-09.csv'"),
        ("btcusdt-trades-2024-08-09.csv", "is not 'BTCUSDT-trades-2024-08-09.csv'"),
        ("../BTCUSDT-trades-2024-08-09.csv", "path components"),
        ("/tmp/BTCUSDT-trades-2024-08-09.csv", "path components"),
        ("sub/BTCUSDT-trades-2024-08-09.csv", "path components"),
        ("sub\\BTCUSDT-trades-2024-08-09.csv", "path components"),
        ("C:BTCUSDT-trades-2024-08-09.csv", "path components"),
    ],
)
def test_zip_member_must_be_this_pair_and_day(tmp_path, member, match):
    from mnemo_assets.binance.parse import WrongMemberError

    path = zip_with_member(tmp_path / "BTCUSDT-trades-2024-08-09.zip", member, "1,10.5,2,21,1723161600000,True,True\n")
    with pytest.raises(WrongMemberError, match=match) as err:
        read_trades_file(path, "spot")
    assert "BTCUSDT-trades-2024-08-09.zip" in str(err.value) and repr(member) in str(err.value)
    assert isinstance(err.value, CorruptArchiveError)


def test_partial_member_name_is_the_same_file(tmp_path):
    path = zip_with_member(
        tmp_path / "BTCUSDT-trades-2024-08-09.zip", "BTCUSDT-trades-2024-08-09.partial.csv", "1,10.5,2,21,1723161600000,True,True\n"
    )
    assert read_trades_file(path, "spot").height == 1
