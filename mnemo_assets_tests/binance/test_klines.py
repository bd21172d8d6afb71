"""1m klines: the real files parse exactly, minute_bars makes the exchange's minutes, and the
synthetic archive's klines reconcile with its trades in every market."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from mnemo_assets.binance import KLINES_SCHEMA, minute_bars, read_klines_file
from mnemo_assets.binance.formats import KLINES_HEADER
from mnemo_assets.binance.klines import KlinesParseError, parse_klines_csv
from mnemo_assets.binance.parse import TRADES_SCHEMA, read_trades_file
from mnemo_assets.binance.synthetic import SyntheticArchive
from mnemo_assets_tests.conftest import REALDATA

KLINES = sorted((REALDATA / "spot/klines").glob("*.csv"))
EPOCH = datetime(1970, 1, 1)


def expected_rows(text: str, per_unit_us: int = 1000) -> list[dict]:
    """An independent reading of a spot klines CSV with the csv module."""
    out = []
    for r in csv.reader(text.splitlines()):
        out.append(
            {
                "open_time": EPOCH + timedelta(microseconds=int(r[0]) * per_unit_us),
                "open": float(r[1]),
                "high": float(r[2]),
                "low": float(r[3]),
                "close": float(r[4]),
                "volume": float(r[5]),
                "quote_volume": float(r[7]),
                "count": int(r[8]),
                "taker_buy_volume": float(r[9]),
                "taker_buy_quote_volume": float(r[10]),
                "close_time": EPOCH + timedelta(microseconds=int(r[6]) * per_unit_us),
            }
        )
    return out


# ---------------------------------------------------------------- real files


def test_fixtures_are_the_documented_real_files():
    assert [p.name for p in KLINES] == ["ADABTC-1m-2021-11-27.csv", "ADABTC-1m-2021-11-28.csv"]
    assert [len(p.read_text().splitlines()) for p in KLINES] == [10, 11]


@pytest.mark.parametrize("path", KLINES, ids=lambda p: p.name)
def test_real_klines_parse_row_by_row(path: Path):
    df = read_klines_file(path, "spot")
    assert df.schema == KLINES_SCHEMA
    assert df.to_dicts() == expected_rows(path.read_text())
    day = date.fromisoformat(path.name[-14:-4])
    assert df["open_time"][0] == datetime(day.year, day.month, day.day)  # the day's first minute
    assert (df["open_time"].diff().drop_nulls() == timedelta(minutes=1)).all()
    assert ((df["close_time"] - df["open_time"]) == timedelta(seconds=59, milliseconds=999)).all()
    # spot klines: volume in ADA, quote volume in BTC (ADA at ~2.8e-5 BTC)
    first = {"ADABTC-1m-2021-11-27.csv": (0.00002853, 36304.2, 1.03547608, 79), "ADABTC-1m-2021-11-28.csv": (0.00002820, 85342.7, 2.40584425, 96)}[
        path.name
    ]
    assert (df["open"][0], df["volume"][0], df["quote_volume"][0], df["count"][0]) == first


@pytest.mark.parametrize("path", KLINES, ids=lambda p: p.name)
def test_units_are_detected_from_values_not_the_date(tmp_path: Path, path: Path):
    rows = [r.split(",") for r in path.read_text().splitlines()]
    micro = "\n".join(",".join([str(int(r[0]) * 1000), *r[1:6], str(int(r[6]) * 1000 + 999), *r[7:]]) for r in rows) + "\n"
    # a 2021 file name holding 2025-style microseconds: read as µs
    as_us = tmp_path / path.name
    as_us.write_text(micro)
    got = read_klines_file(as_us, "spot")
    ms = read_klines_file(path, "spot")
    assert_frame_equal(got.drop("close_time"), ms.drop("close_time"))
    assert ((got["close_time"] - got["open_time"]) == timedelta(microseconds=59_999_999)).all()
    # a 2025 file name holding milliseconds: read as ms
    as_ms = tmp_path / path.name.replace("2021", "2025")
    as_ms.write_text(path.read_text())
    assert_frame_equal(read_klines_file(as_ms, "spot"), ms)


def test_zip_and_header_and_futures_layouts(tmp_path: Path):
    path = KLINES[0]
    want = read_klines_file(path, "spot")
    zipped = tmp_path / "ADABTC-1m-2021-11-27.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("ADABTC-1m-2021-11-27.csv", path.read_text())
    assert_frame_equal(read_klines_file(zipped, "spot"), want)
    um = tmp_path / "ADAUSDT-1m-2021-11-27.csv"
    um.write_text(KLINES_HEADER + "\n" + path.read_text())
    assert_frame_equal(read_klines_file(um, "um"), want)


def test_coin_m_volumes_become_base_and_usd():
    header = KLINES_HEADER + "\n"
    row = "1591258320000,9640.7,9642.4,9640.6,9642.0,206,1591258379999,2.13660389,48,119,1.23424865,0\n"  # README example
    df = parse_klines_csv((header + row).encode(), "cm", "x", "BTCUSD_PERP")
    got = df.row(0, named=True)
    assert got["volume"] == 2.13660389 and got["quote_volume"] == 206 * 100.0
    assert got["taker_buy_volume"] == 1.23424865 and got["taker_buy_quote_volume"] == 119 * 100.0
    eth = parse_klines_csv((header + row).encode(), "cm", "x", "ETHUSD_PERP")
    assert eth["quote_volume"][0] == 2060.0
    with pytest.raises(KlinesParseError, match="pair name"):
        parse_klines_csv(row.encode(), "cm", "x")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1637971200000,1,2,3\n", r"f\.csv: line 1 has 4 fields, expected 12"),
        ("open,close\n1,2\n", r"f\.csv: line 1 is neither a kline nor the klines header"),
        ("1637971200000,0.1,0.1,0.1,0.1,1,1637971259999,x,1,1,1,0\n", r"f\.csv: line 1 is malformed"),
        (
            "1637971200000,0.1,0.1,0.1,0.1,1,1637971259999,1,1,1,1,0\n1637971260000000,0.1,0.1,0.1,0.1,1,1637971319999999,1,1,1,1,0\n",
            r"f\.csv: times mix milliseconds and microseconds",
        ),
    ],
)
def test_bad_klines_are_clear_errors(text, match):
    with pytest.raises(KlinesParseError, match=match):
        parse_klines_csv(text.encode(), "spot", "f.csv")


# ---------------------------------------------------------------- minute_bars


def trades(rows: list[tuple[str, float, float, bool]], first_id: int = 1) -> pl.DataFrame:
    """Normalised trades of one pair from (time, price, qty, is_buyer_maker)."""
    return pl.DataFrame(
        {
            "symbol": ["ADA"] * len(rows),
            "peg_symbol": ["USDT"] * len(rows),
            "trade_id": list(range(first_id, first_id + len(rows))),
            "price": [r[1] for r in rows],
            "qty": [r[2] for r in rows],
            "quote_qty": [float(Decimal(str(r[1])) * Decimal(str(r[2]))) for r in rows],
            "time": [datetime.fromisoformat(r[0]) for r in rows],
            "is_buyer_maker": [r[3] for r in rows],
        },
        schema=TRADES_SCHEMA,
    )


T = trades(
    [
        ("2025-01-02T00:03:10", 0.5, 0.1, False),
        ("2025-01-02T00:03:20", 0.7, 0.2, True),
        ("2025-01-02T00:03:20", 0.4, 0.3, False),  # same time: order by trade id, so it closes the minute
        ("2025-01-02T00:05:00.000250", 0.6, 1.0, True),
    ]
)


def test_minutes_start_at_the_first_trade_and_run_to_midnight():
    bars = minute_bars(T)
    assert bars.schema == KLINES_SCHEMA
    assert bars["open_time"][0] == datetime(2025, 1, 2, 0, 3) and bars["open_time"][-1] == datetime(2025, 1, 2, 23, 59)
    assert bars.height == 1440 - 3
    first = bars.row(0, named=True)
    assert (first["open"], first["high"], first["low"], first["close"], first["count"]) == (0.5, 0.7, 0.4, 0.4, 3)
    assert first["volume"] == 0.6  # exact decimal sum: 0.1 + 0.2 + 0.3 is 0.6000000000000001 in floats
    assert first["taker_buy_volume"] == 0.4
    assert first["taker_buy_quote_volume"] == 0.17 != 0.05 + 0.12  # again the exact sum, not the float one
    assert first["quote_volume"] == 0.31
    empty = bars.row(1, named=True)  # 00:04, no trade: the last price, zero volumes
    assert (empty["open"], empty["high"], empty["low"], empty["close"]) == (0.4, 0.4, 0.4, 0.4)
    assert (empty["count"], empty["volume"], empty["quote_volume"], empty["taker_buy_volume"]) == (0, 0.0, 0.0, 0.0)
    assert bars.row(2, named=True)["close"] == 0.6 and bars.row(3, named=True)["open"] == 0.6
    assert bars["count"].sum() == 4 and (bars["count"][3:] == 0).all()
    # a µs trade time: the file unit is µs, close_time = start + 59.999999 s
    assert bars["close_time"][0] - bars["open_time"][0] == timedelta(microseconds=59_999_999)


def test_minutes_start_at_midnight_with_a_previous_close_and_stop_at_the_end():
    bars = minute_bars(T, previous_close=0.45, end=datetime(2025, 1, 2, 12))
    assert bars.height == 720 and bars["open_time"][0] == datetime(2025, 1, 2)
    assert bars["open_time"][-1] == datetime(2025, 1, 2, 11, 59)
    head = bars.head(3)
    assert head["count"].to_list() == [0, 0, 0] and set(head["open"]) == set(head["close"]) == {0.45}
    with pytest.raises(ValueError, match="before the first trade"):
        minute_bars(T, start=datetime(2025, 1, 2))
    with pytest.raises(ValueError, match="outside"):
        minute_bars(T, end=datetime(2025, 1, 2, 0, 4))


def test_file_unit_inferred_or_given():
    ms = T.with_columns(pl.col("time").dt.truncate("1ms"))
    assert minute_bars(ms)["close_time"][0] - minute_bars(ms)["open_time"][0] == timedelta(milliseconds=59_999)
    forced = minute_bars(ms, time_unit="us")
    assert forced["close_time"][0] - forced["open_time"][0] == timedelta(microseconds=59_999_999)


def test_one_pair_at_a_time_and_empty_input():
    two = pl.concat([T, T.with_columns(pl.lit("BTC").alias("symbol"))])
    with pytest.raises(ValueError, match="several"):
        minute_bars(two)
    assert minute_bars(T.head(0)).height == 0
    flat = minute_bars(T.head(0), previous_close=1.5, start=datetime(2025, 1, 2), end=datetime(2025, 1, 2, 0, 10))
    assert flat.height == 10 and set(flat["close"]) == {1.5} and flat["count"].sum() == 0


def decimal_bars(csv_text: str, cols: dict[str, int], time_us: int) -> dict[int, dict]:
    """Independent 1m bars of raw trade rows with Python's Decimal (open_time µs -> fields)."""
    out: dict[int, dict] = {}
    for r in csv.reader(io.StringIO(csv_text)):
        if not r or not r[0].isdigit():
            continue
        t = int(r[cols["time"]]) * time_us
        minute = t - t % 60_000_000
        price, qty, quote = (Decimal(r[cols[k]]) for k in ("price", "qty", "quote"))
        buy = r[cols["bm"]].lower() == "false"
        b = out.setdefault(
            minute,
            {
                "open": price,
                "high": price,
                "low": price,
                "close": price,
                "volume": Decimal(0),
                "quote_volume": Decimal(0),
                "count": 0,
                "taker_buy_volume": Decimal(0),
                "taker_buy_quote_volume": Decimal(0),
            },
        )
        b["high"], b["low"], b["close"] = max(b["high"], price), min(b["low"], price), price
        b["volume"] += qty
        b["quote_volume"] += quote
        b["count"] += 1
        if buy:
            b["taker_buy_volume"] += qty
            b["taker_buy_quote_volume"] += quote
    return out


SPOT_COLS = {"price": 1, "qty": 2, "quote": 3, "time": 4, "bm": 5}


def test_minute_bars_of_real_trades_match_a_decimal_oracle():
    path = REALDATA / "spot/trades/BTCUSDT-trades-2024-08-09.partial.csv"  # 00:00:00 - 00:05:05
    bars = minute_bars(read_trades_file(path, "spot"), end=datetime(2024, 8, 9, 0, 6))
    oracle = decimal_bars(path.read_text(), SPOT_COLS, 1000)
    assert bars.height == 6 == len(oracle) and bars["count"].sum() == 10166
    for row in bars.iter_rows(named=True):
        want = oracle[int((row["open_time"] - EPOCH) / timedelta(microseconds=1))]
        assert {k: row[k] for k in want} == {k: (v if k == "count" else float(v)) for k, v in want.items()}


# ---------------------------------------------------------------- the synthetic archive's klines


START = date(2024, 12, 20)
END = date(2025, 1, 5)


@pytest.fixture(scope="module")
def arch(tmp_path_factory) -> SyntheticArchive:
    return SyntheticArchive(tmp_path_factory.mktemp("klines-cache"), seed=7, n_pairs=20, trades_per_day=20_000, start=START, end=END)


def zipped_csv(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        (info,) = zf.infolist()
        return zf.read(info).decode()


def independent_bars(arch: SyntheticArchive, market: str, pair: str, day: date) -> pl.DataFrame:
    """minute_bars of the day's trades, the previous close taken from the previous day's trades."""
    info = arch.pair_info(market, pair)
    if day > info.listed:
        prev = arch.normalised_trades(market, pair, day - timedelta(days=1))["price"][-1]
    else:
        prev = arch.previous_close(market, pair, day)
        assert (prev is None) == info.new_listing
    end = datetime.combine(day, datetime.min.time()) + timedelta(hours=info.close_hour) if info.delisted == day else None
    unit = "us" if market == "spot" and day >= date(2025, 1, 1) else "ms"
    return minute_bars(arch.normalised_trades(market, pair, day), previous_close=prev, end=end, time_unit=unit)


def interesting_days(arch: SyntheticArchive, market: str) -> list[tuple[str, date]]:
    cases = []
    for pair in arch.list_pairs(market):
        days = arch.list_days(market, pair, "klines")
        info = arch.pair_info(market, pair)
        if info.new_listing or info.delisted is not None:
            cases += [(pair, days[0]), (pair, days[-1])]
    pair = arch.list_pairs(market)[0]
    return cases + [(pair, START), (pair, date(2024, 12, 31)), (pair, date(2025, 1, 1))]


@pytest.mark.parametrize("market", ["spot", "um", "cm"])
def test_synthetic_klines_reconcile_with_the_trades(arch, tmp_path, market):
    cases = interesting_days(arch, market)
    assert len(cases) >= 3
    for pair, day in cases:
        path = tmp_path / f"{pair}-1m-{day}.zip"
        path.write_bytes(arch.klines_zip_bytes(market, pair, day))
        parsed = read_klines_file(path, market)
        assert_frame_equal(parsed, independent_bars(arch, market, pair, day), check_exact=True)
        trades = arch.normalised_trades(market, pair, day)
        assert parsed["count"].sum() == trades.height
        info = arch.pair_info(market, pair)
        first = datetime.combine(day, datetime.min.time())
        if info.new_listing and day == info.listed:
            assert parsed["open_time"][0] == trades["time"].min().replace(second=0, microsecond=0)
        else:
            assert parsed["open_time"][0] == first
        last = first + timedelta(hours=info.close_hour if info.delisted == day else 24) - timedelta(minutes=1)
        assert parsed["open_time"][-1] == last
    # a full ordinary day: 1440 minutes, and quiet minutes repeat the last price
    pair = arch.list_pairs(market)[0]
    full = arch.normalised_klines(market, pair, date(2024, 12, 23))
    assert full.height == 1440
    quiet = full.with_columns(prev=pl.col("close").shift(1)).filter(pl.col("count") == 0).drop_nulls("prev")
    assert quiet.height and (quiet["open"] == quiet["prev"]).all() and (quiet["high"] == quiet["low"]).all()


def test_synthetic_klines_bytes(arch):
    spot_ms = zipped_csv(arch.klines_zip_bytes("spot", "BTCUSDT", date(2024, 12, 31))).splitlines()
    spot_us = zipped_csv(arch.klines_zip_bytes("spot", "BTCUSDT", date(2025, 1, 1))).splitlines()
    d8 = r"\d+\.\d{8}"
    for lines, digits, offset in ((spot_ms, 13, 59_999), (spot_us, 16, 59_999_999)):
        assert len(lines) == 1440
        row = re.compile(rf"^(\d{{{digits}}}),{d8},{d8},{d8},{d8},{d8},(\d{{{digits}}}),{d8},\d+,{d8},{d8},0$")
        for line in lines:
            m = row.match(line)
            assert m, line
            assert int(m.group(2)) - int(m.group(1)) == offset
    um = zipped_csv(arch.klines_zip_bytes("um", "BTCUSDT", date(2025, 1, 1))).splitlines()
    assert um[0] == KLINES_HEADER and len(um) == 1441
    short = r"(?:0|[1-9]\d*)(?:\.\d*[1-9])?"
    assert all(re.fullmatch(rf"\d{{13}},{short},{short},{short},{short},{short},\d{{13}},{short},\d+,{short},{short},0", x) for x in um[1:])
    cm = zipped_csv(arch.klines_zip_bytes("cm", "BTCUSD_PERP", date(2025, 1, 1))).splitlines()
    assert cm[0] == KLINES_HEADER
    assert all(re.fullmatch(rf"\d{{13}},{short},{short},{short},{short},\d+,\d{{13}},{d8},\d+,\d+,{d8},0", x) for x in cm[1:])


def test_synthetic_klines_match_a_decimal_oracle_of_the_trades_file(arch):
    """Bytes, not floats: the printed sums are the exact decimal sums of the printed trades."""
    day = date(2024, 12, 24)
    for market, pair, cols in (
        ("spot", "BTCUSDT", SPOT_COLS),
        ("um", "ETHUSDT", SPOT_COLS),
        ("cm", "BTCUSD_PERP", {"price": 1, "qty": 3, "quote": 2, "time": 4, "bm": 5}),
    ):
        oracle = decimal_bars(arch.csv_bytes(market, pair, day).decode(), cols, 1000)
        lines = [x.split(",") for x in zipped_csv(arch.klines_zip_bytes(market, pair, day)).splitlines() if x[0].isdigit()]
        seen = 0
        for f in lines:
            want = oracle.get(int(f[0]) * 1000)
            if want is None:
                assert f[8] == "0"
                continue
            seen += 1
            got = [Decimal(x) for x in (f[1], f[2], f[3], f[4])]
            assert got == [want["open"], want["high"], want["low"], want["close"]]
            assert int(f[8]) == want["count"]
            if market == "cm":  # file: contracts, then base; the oracle read qty=base, quote=contracts
                assert (Decimal(f[5]), Decimal(f[7])) == (want["quote_volume"], want["volume"])
                assert (Decimal(f[9]), Decimal(f[10])) == (want["taker_buy_quote_volume"], want["taker_buy_volume"])
            else:
                assert [Decimal(f[i]) for i in (5, 7, 9, 10)] == [
                    want["volume"],
                    want["quote_volume"],
                    want["taker_buy_volume"],
                    want["taker_buy_quote_volume"],
                ]
        assert seen == len(oracle) > 100


def test_synthetic_serves_klines_like_any_source(arch, tmp_path):
    got = arch.fetch("um", "ETHUSDT", date(2025, 1, 2), "klines")
    assert got.dataset == "klines"
    assert got.path.name == "ETHUSDT-1m-2025-01-02.zip"
    assert got.path.parent.name == "1m" and got.path.parent.parent.name == "ETHUSDT"
    assert got.path.read_bytes() == arch.klines_zip_bytes("um", "ETHUSDT", date(2025, 1, 2))
    assert arch.list_days("um", "ETHUSDT", "klines") == arch.list_days("um", "ETHUSDT")
    mirror = arch.write_mirror(
        tmp_path / "m", markets=("cm",), start=date(2025, 1, 1), end=date(2025, 1, 2), datasets=("trades", "klines"), workers=2
    )
    for pair in arch.list_pairs("cm"):
        want = [d for d in arch.list_days("cm", pair) if date(2025, 1, 1) <= d <= date(2025, 1, 2)]
        assert want and mirror.list_days("cm", pair, "klines") == want == mirror.list_days("cm", pair)
        for day in mirror.list_days("cm", pair, "klines"):
            assert mirror.fetch("cm", pair, day, "klines").path.read_bytes() == arch.klines_zip_bytes("cm", pair, day)


def test_synthetic_klines_are_deterministic(arch, tmp_path):
    other = SyntheticArchive(tmp_path, seed=7, n_pairs=20, trades_per_day=20_000, start=START, end=END)
    for market, pair, day in (("spot", "BTCUSDT", date(2025, 1, 3)), ("um", "ETHUSDT", START), ("cm", "BTCUSD_PERP", date(2024, 12, 28))):
        assert other.klines_zip_bytes(market, pair, day) == arch.klines_zip_bytes(market, pair, day)
    assert SyntheticArchive(tmp_path / "x", seed=8, n_pairs=20, trades_per_day=20_000, start=START, end=END).klines_zip_bytes(
        "spot", "BTCUSDT", date(2025, 1, 3)
    ) != arch.klines_zip_bytes("spot", "BTCUSDT", date(2025, 1, 3))
