"""The synthetic archive: determinism, exact archive bytes, round trip through the parser, model
invariants, the cache and the mirror it writes."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from mnemo_assets.binance.archive import (
    ArchiveError,
    ArchiveMissingError,
    LocalMirror,
    archive_key,
    verify_zip,
)
from mnemo_assets.binance.parse import TRADES_SCHEMA, parse_trades_csv, read_trades_file, split_pair
from mnemo_assets.binance.synthetic import SyntheticArchive

START = date(2024, 12, 20)
END = date(2025, 1, 5)
D2024 = date(2024, 12, 22)
D2025 = date(2025, 1, 3)
KW = dict(seed=7, n_pairs=30, trades_per_day=30_000, start=START, end=END)


@pytest.fixture(scope="module")
def arch(tmp_path_factory) -> SyntheticArchive:
    return SyntheticArchive(tmp_path_factory.mktemp("synth-cache"), **KW)


def _csv(zip_bytes: bytes) -> tuple[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        (info,) = zf.infolist()
        assert info.compress_type == zipfile.ZIP_DEFLATED
        return info.filename, zf.read(info)


def _pairs_on(arch: SyntheticArchive, market: str, day: date) -> list[str]:
    return [p for p in arch.list_pairs(market) if day in arch.list_days(market, p)]


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(arch, tmp_path):
    other = SyntheticArchive(tmp_path, **KW)
    cases = [
        ("spot", "BTCUSDT", D2024),
        ("spot", "BTCUSDC", D2025),
        ("spot", "SHIBUSDT", D2025),
        ("um", "ETHUSDT", D2024),
        ("cm", "BTCUSD_PERP", D2025),
        ("cm", "ETHUSD_PERP", D2024),
    ]
    for market, pair, day in cases:
        a, b = arch.zip_bytes(market, pair, day), other.zip_bytes(market, pair, day)
        assert a == b, (market, pair, day)
        assert arch.checksum_text(market, pair, day) == other.checksum_text(market, pair, day)
    for market in ("spot", "um", "cm"):
        assert arch.list_pairs(market) == other.list_pairs(market)
        assert arch.universe(market) == other.universe(market)


def test_other_seed_differs(arch, tmp_path):
    other = SyntheticArchive(tmp_path, **{**KW, "seed": 8})
    assert other.zip_bytes("spot", "BTCUSDT", D2024) != arch.zip_bytes("spot", "BTCUSDT", D2024)
    assert other.list_pairs("spot") != arch.list_pairs("spot")


def test_a_day_does_not_depend_on_other_days(tmp_path):
    """Generating a late day first, or alone, gives the same bytes."""
    a = SyntheticArchive(tmp_path / "a", **KW)
    b = SyntheticArchive(tmp_path / "b", **KW)
    for day in (START, D2024, D2025):
        a.zip_bytes("um", "BTCUSDT", day)
    assert b.zip_bytes("um", "BTCUSDT", D2025) == a.zip_bytes("um", "BTCUSDT", D2025)


# ---------------------------------------------------------------- exact formats


def test_checksum_and_zip_layout(arch):
    day = D2025
    data = arch.zip_bytes("spot", "ETHUSDT", day)
    name, _ = _csv(data)
    assert name == "ETHUSDT-trades-2025-01-03.csv"
    expected = f"{hashlib.sha256(data).hexdigest()}  ETHUSDT-trades-2025-01-03.zip\n"
    assert arch.checksum_text("spot", "ETHUSDT", day) == expected


@pytest.mark.parametrize(("day", "digits"), [(D2024, 13), (D2025, 16)])
def test_spot_format(arch, day, digits):
    line_re = re.compile(rf"^(\d+),(\d+\.\d{{8}}),(\d+\.\d{{8}}),(\d+\.\d{{8}}),(\d{{{digits}}}),(True|False),True$")
    for pair in ("BTCUSDT", "SHIBUSDT", "ETHUSDC"):
        _, raw = _csv(arch.zip_bytes("spot", pair, day))
        assert raw.endswith(b"\n") and b"\r" not in raw
        lines = raw.decode().split("\n")[:-1]
        assert lines and all(len(line.split(",")) == 7 for line in lines)
        for line in lines:
            m = line_re.match(line)
            assert m, line
            price, qty, quote = (Decimal(m.group(i)) for i in (2, 3, 4))
            assert quote == price * qty, line  # exact, no rounding needed
            assert price > 0 and qty > 0
        sides = {line.split(",")[5] for line in lines}
        assert sides <= {"True", "False"}


def test_um_format(arch):
    shortest = r"(?:0|[1-9]\d*)(?:\.\d*[1-9])?"
    line_re = re.compile(rf"^(\d+),({shortest}),({shortest}),({shortest}),(\d{{13}}),(true|false)$")
    for pair in ("BTCUSDT", "ETHUSDT", "BTCUSDC"):
        _, raw = _csv(arch.zip_bytes("um", pair, D2025))
        assert raw.endswith(b"\n") and b"\r" not in raw
        header, *lines = raw.decode().split("\n")[:-1]
        assert header == "id,price,qty,quote_qty,time,is_buyer_maker"
        assert lines
        for line in lines:
            m = line_re.match(line)
            assert m, line
            assert Decimal(m.group(4)) == Decimal(m.group(2)) * Decimal(m.group(3)), line


def test_cm_format(arch):
    assert len(arch.universe("cm")) == 6
    assert {"BTCUSD_PERP", "ETHUSD_PERP"} <= set(arch.list_pairs("cm"))
    line_re = re.compile(r"^(\d+),((?:0|[1-9]\d*)(?:\.\d*[1-9])?),([1-9]\d*),(\d+\.\d{8}),(\d{13}),(true|false)$")
    for pair, size in (("BTCUSD_PERP", 100), ("ETHUSD_PERP", 10)):
        assert arch.pair_info("cm", pair).contract_size == size
        _, raw = _csv(arch.zip_bytes("cm", pair, D2024))
        header, *lines = raw.decode().split("\n")[:-1]
        assert header == "id,price,qty,base_qty,time,is_buyer_maker"
        assert lines
        for line in lines:
            m = line_re.match(line)
            assert m, line
            price, contracts, base_qty = Decimal(m.group(2)), int(m.group(3)), Decimal(m.group(4))
            want = (contracts * size / price).quantize(Decimal("1e-8"), rounding=ROUND_HALF_UP)
            assert base_qty == want, line


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize(("market", "day"), [("spot", D2024), ("spot", D2025), ("um", D2024), ("cm", D2025)])
def test_normalised_equals_parsed_zip(arch, tmp_path, market, day):
    """Every pair of the day: the fast path equals parsing the bytes, bit for bit."""
    pairs = _pairs_on(arch, market, day)
    assert len(pairs) >= 5
    for pair in pairs:
        path = tmp_path / f"{pair}-trades-{day}.zip"
        path.write_bytes(arch.zip_bytes(market, pair, day))
        parsed = read_trades_file(path, market)
        fast = arch.normalised_trades(market, pair, day)
        assert fast.schema == TRADES_SCHEMA
        assert_frame_equal(fast, parsed, check_exact=True)
        assert fast.height > 0


def test_time_unit_switches_in_2025(arch):
    for day, digits, unit in ((D2024, 13, 1000), (D2025, 16, 1)):
        _, raw = _csv(arch.zip_bytes("spot", "BTCUSDT", day))
        first_time = raw.split(b"\n", 1)[0].split(b",")[4]
        assert len(first_time) == digits
        df = parse_trades_csv(raw, "BTCUSDT", "spot", "x")
        assert df["time"][0] == datetime(1970, 1, 1) + timedelta(microseconds=int(first_time) * unit)
    _, raw = _csv(arch.zip_bytes("um", "BTCUSDT", D2025))
    assert len(raw.split(b"\n")[1].split(b",")[4]) == 13  # futures stay in ms


# ---------------------------------------------------------------- universe and listing


def test_universe(arch):
    spot = arch.universe("spot")
    assert len(spot) == KW["n_pairs"]
    assert {p.peg for p in spot} == {"USDT", "USDC"}
    assert sum(p.peg == "USDT" for p in spot) > 2 * sum(p.peg == "USDC" for p in spot)
    usdc_bases = {p.symbol for p in spot if p.peg == "USDC"}
    assert usdc_bases <= {p.symbol for p in spot if p.peg == "USDT"}
    for market in ("spot", "um", "cm"):
        pairs = arch.list_pairs(market)
        assert pairs == sorted(pairs)
        for p in arch.universe(market):
            assert split_pair(p.pair, market) == (p.symbol, p.peg)
            assert re.fullmatch(r"[A-Z0-9]+(USD_PERP)?", p.pair)
    assert {p.pair for p in arch.universe("um")} >= {"BTCUSDT", "ETHUSDT", "BTCUSDC"}
    um_bases = {p.symbol for p in arch.universe("um")}
    assert um_bases < {p.symbol for p in spot}


def test_listing_and_delisting(arch):
    spot_days = {p: arch.list_days("spot", p) for p in arch.list_pairs("spot")}
    late = [p for p, days in spot_days.items() if days[0] > START]
    gone = [p for p, days in spot_days.items() if days[-1] < END]
    assert late and gone
    for days in spot_days.values():
        assert days == [days[0] + timedelta(k) for k in range(len(days))]  # no holes
    pair = late[0]
    first = spot_days[pair][0]
    with pytest.raises(ArchiveMissingError, match=rf"{pair}.*{first - timedelta(1)}"):
        arch.fetch("spot", pair, first - timedelta(1))
    with pytest.raises(ArchiveMissingError):
        arch.normalised_trades("spot", gone[0], spot_days[gone[0]][-1] + timedelta(1))
    with pytest.raises(ArchiveMissingError, match="NOPEUSDT"):
        arch.fetch("spot", "NOPEUSDT", D2024)
    with pytest.raises(ArchiveMissingError):
        arch.fetch("spot", "BTCUSDT", END + timedelta(1))
    assert arch.list_days("spot", "NOPEUSDT") == []
    # the first listed day is a partial day, and its first trade id is 0
    df = arch.normalised_trades("spot", pair, first)
    assert df["trade_id"][0] == 0
    assert df["time"].min() >= datetime.combine(first, datetime.min.time()) + timedelta(hours=arch.pair_info("spot", pair).open_hour)


# ---------------------------------------------------------------- model invariants


@pytest.fixture(scope="module")
def spot_days(arch) -> dict[date, pl.DataFrame]:
    days = [D2024 + timedelta(k) for k in range(3)]
    return {d: pl.concat([arch.normalised_trades("spot", p, d).with_columns(pair=pl.lit(p)) for p in _pairs_on(arch, "spot", d)]) for d in days}


def test_ids_contiguous_and_times_in_day(spot_days):
    last_id: dict[str, int] = {}
    for day, df in sorted(spot_days.items()):
        lo = datetime.combine(day, datetime.min.time())
        for (pair,), g in df.group_by("pair"):
            ids = g["trade_id"]
            assert (ids.diff().drop_nulls() == 1).all(), pair
            if pair in last_id:
                assert ids[0] == last_id[pair] + 1, (pair, day)
            last_id[pair] = ids[-1]
            assert g["time"].is_sorted(), pair
            assert g["time"].min() >= lo and g["time"].max() < lo + timedelta(days=1)


def test_bursts_dead_hours_skew_and_scales(spot_days, arch):
    df = spot_days[D2024]
    per_time = df.group_by("pair", "time").len()
    assert per_time["len"].max() >= 3  # several trades share a timestamp
    # bursts share the taker side
    sides = df.group_by("pair", "time").agg(pl.col("is_buyer_maker").n_unique().alias("n"))
    assert (sides["n"] == 1).mean() > 0.95
    hours = df.group_by("pair").agg(pl.col("time").dt.hour().n_unique().alias("hours"))
    full_day = {p for p in hours["pair"] if arch.pair_info("spot", p).listed < D2024}
    assert hours.filter(pl.col("pair").is_in(full_day), pl.col("hours") < 24).height >= 1
    counts = df.group_by("pair").len()["len"]
    assert counts.max() >= 8 * counts.median()
    assert df["price"].min() < 0.001 and df["price"].max() > 10_000
    imbalance = df.group_by("pair").agg(pl.col("is_buyer_maker").mean())["is_buyer_maker"]
    assert imbalance.std() > 0.02
    notional = df["quote_qty"]
    assert notional.quantile(0.999) > 30 * notional.median()  # heavy tail


def test_intraday_seasonality_and_continuity(arch, spot_days):
    btc = pl.concat([g.filter(pl.col("pair") == "BTCUSDT") for g in spot_days.values()]).sort("time")
    by_hour = btc.group_by(pl.col("time").dt.hour()).len()
    assert by_hour["len"].max() > 1.8 * by_hour["len"].min()
    # the price continues across midnight
    last = btc.filter(pl.col("time") < datetime(2024, 12, 23))["price"][-1]
    first = btc.filter(pl.col("time") >= datetime(2024, 12, 23))["price"][0]
    assert abs(first / last - 1) < 0.01
    # markets share the base's path
    um = arch.normalised_trades("um", "BTCUSDT", D2024)
    assert abs(um["price"].median() / spot_days[D2024].filter(pl.col("pair") == "BTCUSDT")["price"].median() - 1) < 0.01


# ---------------------------------------------------------------- cache and mirror


def test_fetch_caches_and_verifies(tmp_path, monkeypatch):
    arch = SyntheticArchive(tmp_path, **KW)
    got = arch.fetch("spot", "BTCUSDT", D2025)
    assert got.path == tmp_path / archive_key("spot", "BTCUSDT", D2025)
    assert got.sha256 == hashlib.sha256(got.path.read_bytes()).hexdigest()
    assert verify_zip(got.path, got.path.with_name(got.path.name + ".CHECKSUM")) == got.sha256
    assert got.path.read_bytes() == arch.zip_bytes("spot", "BTCUSDT", D2025)
    mtime = got.path.stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("regenerated a cached file")

    monkeypatch.setattr(arch, "_generate", boom)
    again = arch.fetch("spot", "BTCUSDT", D2025)
    assert again == got and got.path.stat().st_mtime_ns == mtime
    # a fresh instance over the same cache reuses it too
    fresh = SyntheticArchive(tmp_path, **KW)
    monkeypatch.setattr(fresh, "_generate", boom)
    assert fresh.fetch("spot", "BTCUSDT", D2025) == got
    assert not list(got.path.parent.glob("*.tmp"))


def test_damaged_cache_is_regenerated(tmp_path):
    arch = SyntheticArchive(tmp_path, **KW)
    got = arch.fetch("cm", "BTCUSD_PERP", D2024)
    got.path.write_bytes(b"garbage")
    assert arch.fetch("cm", "BTCUSD_PERP", D2024) == got
    assert got.path.read_bytes() == arch.zip_bytes("cm", "BTCUSD_PERP", D2024)


def test_cache_of_another_configuration_is_refused(tmp_path):
    SyntheticArchive(tmp_path, **KW).fetch("um", "BTCUSDT", D2024)
    with pytest.raises(ArchiveError, match=r"delete .* or use another directory"):
        SyntheticArchive(tmp_path, **{**KW, "seed": 9}).fetch("um", "BTCUSDT", D2024)


def test_write_mirror(tmp_path):
    kw = dict(seed=3, n_pairs=12, trades_per_day=4_000, start=START, end=START + timedelta(days=9))
    arch = SyntheticArchive(tmp_path / "cache", **kw)
    mirror = arch.write_mirror(tmp_path / "mirror", workers=2)
    assert isinstance(mirror, LocalMirror)
    for market in ("spot", "um", "cm"):
        assert mirror.list_pairs(market) == arch.list_pairs(market)
        for pair in arch.list_pairs(market):
            assert mirror.list_days(market, pair) == arch.list_days(market, pair)
    assert any(arch.list_days("spot", p)[0] > START for p in arch.list_pairs("spot"))
    got = mirror.fetch("cm", "ETHUSD_PERP", START + timedelta(days=2))
    assert got.path.read_bytes() == arch.zip_bytes("cm", "ETHUSD_PERP", START + timedelta(days=2))
    assert_frame_equal(read_trades_file(got.path, "cm"), arch.normalised_trades("cm", "ETHUSD_PERP", got.day))
    # a sub-range mirror holds just those days
    day1, day2 = START + timedelta(days=1), START + timedelta(days=2)
    part = arch.write_mirror(tmp_path / "part", markets=("um",), start=day1, end=day2)
    assert part.list_pairs("spot") == []
    assert part.list_days("um", "BTCUSDT") == [day1, day2]
    assert Path(tmp_path / "part").is_dir()


# ---------------------------------------------------------------- validity everywhere (no overflow)


def check_file(arch: SyntheticArchive, market: str, pair: str, day: date) -> int:
    """Every row of the day's CSV, read with Decimal: positive price, qty and quote, the quote
    exactly price × qty (COIN-M: base_qty = contracts × size / price to 8 decimals), times in the
    day and monotonic, ids contiguous; the fast path equals parsing. Returns the row count."""
    info = arch.pair_info(market, pair)
    raw = arch.csv_bytes(market, pair, day).decode()
    lines = raw.split("\n")[:-1]
    if market != "spot":
        lines = lines[1:]
    lo = (day - date(1970, 1, 1)).days * 86_400_000_000
    unit = 1 if market == "spot" and day >= date(2025, 1, 1) else 1000
    prev_t, prev_id = -1, None
    for line in lines:
        f = line.split(",")
        price, qty, third = Decimal(f[1]), Decimal(f[2]), Decimal(f[3])
        assert price > 0 and qty > 0 and third > 0, line
        if market == "cm":
            want = (qty * Decimal(int(info.contract_size)) / price).quantize(Decimal("1e-8"), rounding=ROUND_HALF_UP)
            assert third == want, line
        else:
            assert third == price * qty, line
        t = int(f[4]) * unit
        assert lo <= t < lo + 86_400_000_000 and t >= prev_t, line
        assert prev_id is None or int(f[0]) == prev_id + 1, line
        prev_t, prev_id = t, int(f[0])
    parsed = parse_trades_csv(raw.encode(), pair, market, "x")
    assert_frame_equal(parsed, arch.normalised_trades(market, pair, day), check_exact=True)
    return len(lines)


def test_tiny_price_day_that_overflowed_is_valid(tmp_path):
    """Seed 7, 50 pairs, 200k trades a day from 2024-12-01 (the embedded default) wrote negative
    PEPE quantities on 2025-03-29: 3.6e11 whole PEPE became 3.6e19 units of 1e-8 in an int64."""
    arch = SyntheticArchive(tmp_path, seed=7, n_pairs=50, trades_per_day=200_000, start=date(2024, 12, 1), end=date(2025, 3, 29))
    assert arch.pair_info("spot", "PEPEUSDT").qty_exp == 0
    day = date(2025, 3, 29)
    assert check_file(arch, "spot", "PEPEUSDT", day) > 1000
    df = arch.normalised_trades("spot", "PEPEUSDT", day)
    assert df["qty"].min() > 0 and df["qty"].max() > 1e11  # whole PEPE, printed as such
    assert (df["quote_qty"] <= 2e6).all()


class ExtremeArchive(SyntheticArchive):
    """A universe whose bases sit at the edges of what the model can price: 1e-8 .. 1e6."""

    PRICES: ClassVar = {"BTC": 1e6, "ETH": 3e3, "SHIB": 1e-8, "TINY": 3e-8, "PEPE": 1e-6, "BIG": 5e5}

    def _make_bases(self):
        from mnemo_assets.binance.synthetic import _Base

        return [_Base(name, price, 0.09, rank, 1.0 / rank) for rank, (name, price) in enumerate(self.PRICES.items(), 1)]


def test_extreme_prices_and_sizes_are_valid(tmp_path):
    arch = ExtremeArchive(
        tmp_path, seed=3, n_pairs=6, trades_per_day=20_000, pegs=("USDT",), start=date(2024, 12, 20), end=date(2025, 2, 1), n_um_pairs=6
    )
    for day in (date(2024, 12, 31), date(2025, 1, 1), date(2025, 1, 31)):
        for market in ("spot", "um"):
            for pair in _pairs_on(arch, market, day):
                check_file(arch, market, pair, day)
    shib = arch.normalised_trades("spot", "SHIBUSDT", date(2025, 1, 1))
    assert shib["price"].min() >= 1e-8 and shib["qty"].max() > 1e11  # one tick, huge sizes
    btc = arch.normalised_trades("spot", "BTCUSDT", date(2025, 1, 1))
    assert btc["price"].max() > 5e5


def test_prices_stay_within_a_hundredfold_of_their_reference(tmp_path):
    arch = SyntheticArchive(tmp_path, seed=7, n_pairs=50, start=date(2024, 12, 1), end=date(2026, 11, 30))
    for base in arch._bases[:12]:
        for day in (date(2024, 12, 1), date(2025, 12, 1), date(2026, 11, 30), date(2030, 1, 1)):
            ratio = np.exp(arch._open_log_price(base, arch._ordinal(day))) / base.price
            assert 1 / 100 - 1e-12 <= ratio <= 100 + 1e-9, (base.name, day)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), offset=st.integers(0, 720), n_pairs=st.integers(3, 30))
def test_every_generated_file_is_valid(tmp_path_factory, seed, offset, n_pairs):
    start = date(2024, 12, 1)
    day = start + timedelta(days=offset)
    arch = SyntheticArchive(
        tmp_path_factory.mktemp("prop"), seed=seed, n_pairs=n_pairs, trades_per_day=4_000, start=start, end=day + timedelta(days=1)
    )
    for market in ("spot", "um", "cm"):
        for pair in _pairs_on(arch, market, day)[:8]:
            check_file(arch, market, pair, day)
            ids_before = (
                arch.normalised_trades(market, pair, day - timedelta(days=1))["trade_id"]
                if day - timedelta(days=1) in arch.list_days(market, pair)
                else None
            )
            if ids_before is not None:  # ids continue across days
                assert arch.normalised_trades(market, pair, day)["trade_id"][0] == ids_before[-1] + 1


def test_default_configuration_is_valid_on_sampled_days(tmp_path):
    """The embedded default (seed 7, 50 pairs, 200k spot trades a day from 2024-12-01), days
    spread over two years, every pair of every market."""
    arch = SyntheticArchive(tmp_path, end=date(2026, 11, 30))
    assert (arch.seed, arch.n_pairs, arch.trades_per_day, arch.start) == (7, 50, 200_000, date(2024, 12, 1))
    for day in (date(2025, 3, 29), date(2025, 9, 14), date(2026, 6, 2)):
        for market in ("spot", "um", "cm"):
            for pair in _pairs_on(arch, market, day):
                df = arch.normalised_trades(market, pair, day)  # raises if a value leaves the exact range
                assert df["price"].min() > 0 and df["qty"].min() > 0 and df["quote_qty"].min() > 0, (market, pair, day)
                assert (df["trade_id"].diff().drop_nulls() == 1).all() and df["time"].is_sorted()


def test_a_large_day_is_valid_and_passes_the_grid_checks(tmp_path):
    """About 5M spot trades in one day (the 40M/day configuration failed the grid checks)."""
    from mnemo_assets.grids import grid_violations, last_trade_grid

    day = date(2025, 3, 29)
    arch = SyntheticArchive(tmp_path, seed=7, n_pairs=12, trades_per_day=5_000_000, start=date(2024, 12, 1), end=day)
    frames = [arch.normalised_trades("spot", p, day) for p in _pairs_on(arch, "spot", day)]
    trades = pl.concat(frames)
    assert trades.height > 3_000_000
    bad = trades.select(
        (pl.col("price") <= 0).sum().alias("price"),
        (pl.col("qty") <= 0).sum().alias("qty"),
        (pl.col("quote_qty") <= 0).sum().alias("quote"),
        ((pl.col("quote_qty") / (pl.col("price") * pl.col("qty")) - 1).abs() > 1e-12).sum().alias("product"),
    ).row(0)
    assert bad == (0, 0, 0, 0)
    for frame in frames:
        assert (frame["trade_id"].diff().drop_nulls() == 1).all() and frame["time"].is_sorted()
    for peg in ("USDT", "USDC"):
        grid = last_trade_grid(trades.filter(pl.col("peg_symbol") == peg).lazy(), "5s").collect()
        assert set(grid_violations(grid, "5s").values()) == {0}
    # the tiniest-priced pair through the bytes too
    tiny = min(_pairs_on(arch, "spot", day), key=lambda p: arch.pair_info("spot", p).price_exp * -1)
    assert check_file(arch, "spot", tiny, day) > 0
