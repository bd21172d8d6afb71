"""Reconciling trades with the exchange's 1m klines: the pure functions.

Clean synthetic days reconcile to the last minute in every market (ms and µs files, listing and
delisting days); the comparison is exact (volumes as exact decimals); each problem is named.
The injected archive failures, rewritten in real zips, are in
``mnemo_assets_tests/defs/test_reconciliation.py``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemo_assets.binance.archive import ArchiveMissingError
from mnemo_assets.binance.klines import (
    DIFFERENCE_FIELDS,
    KLINES_SCHEMA,
    _exact_bars,
    _units,
    minute_bars,
    parse_klines_batch,
    parse_klines_csv,
    read_klines_file,
    reconcile,
    trade_minutes,
)
from mnemo_assets.binance.quality import QUALITY_SCHEMA, KlinesReconciler, ledger_frame, read_pair_day
from mnemo_assets.binance.synthetic import SyntheticArchive
from mnemo_assets_tests.binance.test_klines import KLINES, T, interesting_days, trades
from mnemo_assets_tests.conftest import REALDATA

START, END = date(2024, 12, 20), date(2025, 1, 5)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A synthetic mirror with trades and klines files, and its archive."""
    arch = SyntheticArchive(tmp_path_factory.mktemp("rec-cache"), seed=7, n_pairs=20, trades_per_day=20_000, start=START, end=END)
    root = tmp_path_factory.mktemp("rec-mirror")
    return arch, arch.write_mirror(root, datasets=("trades", "klines"), workers=2)


def file_facts(mirror, market: str, pair: str, day: date) -> dict:
    """Reconcile a pair-day from its real files: read_pair_day (trades) and read_klines_file."""
    _, src = mirror
    pair_day = read_pair_day(src.fetch(market, pair, day))
    assert pair_day.status == "ok", pair_day.row["reasons"]
    klines = read_klines_file(src.fetch(market, pair, day, "klines").path, market)
    return reconcile(pair_day.trades, klines, market=market, day=day)


# ---------------------------------------------------------------- clean synthetic days


@pytest.mark.parametrize("market", ["spot", "um", "cm"])
def test_clean_synthetic_days_reconcile_every_minute(mirror, market):
    arch, _ = mirror
    cases = interesting_days(arch, market)  # listing and delisting days, 2024-12-31 (ms), 2025-01-01 (spot: µs)
    if market != "cm":  # spot and USD-M always list and delist a pair in the archive's first ten days
        assert any(arch.pair_info(market, p).new_listing and d == arch.pair_info(market, p).listed for p, d in cases)
        assert any(arch.pair_info(market, p).delisted == d for p, d in cases)
    for pair, day in cases:
        facts = file_facts(mirror, market, pair, day)
        klines = arch.normalised_klines(market, pair, day)
        assert facts["klines_status"] == "ok", (pair, day, facts["reason"])
        assert facts["klines_minutes_compared"] == klines.height  # every kline minute (the day's trade minutes are in it)
        assert facts["klines_minutes_differing"] == 0 and facts["klines_trades_difference"] == 0
        assert facts["klines_differences"] == dict.fromkeys(DIFFERENCE_FIELDS, 0)
        assert facts["klines_first_difference"] is None and facts["klines_problems"] == [] and facts["reason"] is None


def test_every_pair_day_of_the_mirror_reconciles_through_the_reconciler(mirror):
    """The pipeline's path (KlinesReconciler: worker thread, chunks, one read_csv per chunk) over
    every pair of every market on a µs spot day and a ms day: 100 % of minutes."""
    _, src = mirror
    for day in (date(2024, 12, 31), date(2025, 1, 1)):
        for market in ("spot", "um", "cm"):
            rows = []
            rec = KlinesReconciler(market, day, chunk=4)
            for pair in src.list_pairs(market):
                if day not in src.list_days(market, pair):
                    continue
                pair_day = read_pair_day(src.fetch(market, pair, day))
                rows.append(pair_day.row)
                rec.add(pair_day.row, pair_day.trades, src.fetch(market, pair, day, "klines"))
            rec.finish()
            ledger = ledger_frame(rows)
            assert ledger.height >= 3 and ledger.schema == QUALITY_SCHEMA
            assert (ledger["klines_status"] == "ok").all() and (ledger["status"] == "ok").all()
            assert (ledger["klines_minutes_differing"] == 0).all()
            assert ledger["klines_minutes_compared"].sum() >= 1440 * (ledger.height - 2)
            assert ledger["klines_source"].str.ends_with(f"-1m-{day}.zip").all()


def test_results_do_not_depend_on_chunks_or_the_worker_thread(mirror):
    _, src = mirror
    day, market = date(2025, 1, 2), "spot"
    pairs = [p for p in src.list_pairs(market) if day in src.list_days(market, p)]
    out = []
    for chunk, background in ((1, False), (3, True), (64, True)):
        rows = []
        rec = KlinesReconciler(market, day, chunk=chunk, background=background)
        for i, pair in enumerate(pairs):
            pair_day = read_pair_day(src.fetch(market, pair, day))
            trades = pair_day.trades.head(pair_day.trades.height - 1) if i % 3 == 0 else pair_day.trades
            rows.append(pair_day.row)
            rec.add(pair_day.row, trades, src.fetch(market, pair, day, "klines"))
        rec.finish()
        out.append(ledger_frame(rows))
    assert out[0].equals(out[1]) and out[0].equals(out[2])
    assert set(out[0]["klines_status"]) == {"ok", "mismatch"}


# ---------------------------------------------------------------- exactness


@given(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 8)), min_size=1, max_size=50))
@settings(max_examples=300, deadline=None)
def test_units_are_the_exact_decimals(values):
    """Whole part + fraction in 1e-12 equal the printed decimal, for every archive-like value
    (up to 8 decimals, 15 significant digits) and for values with more decimals (the slow path)."""
    decimals = [Decimal(units).scaleb(-exp) for units, exp in values]
    x = np.array([float(d) for d in decimals])
    w, f = _units(x)
    assert [Decimal(int(a)) + Decimal(int(b)).scaleb(-12) for a, b in zip(w, f, strict=True)] == decimals
    fine = [d + Decimal("1e-10") for d in decimals if d < 10**5]  # 10 decimals: not the numpy path
    if fine:
        w, f = _units(np.array([float(d) for d in fine]))
        assert [Decimal(int(a)) + Decimal(int(b)).scaleb(-12) for a, b in zip(w, f, strict=True)] == fine


@given(st.lists(st.tuples(st.integers(1, 10**9), st.sampled_from([0, 2, 5, 8, 9, 10]), st.booleans(), st.integers(0, 3)), min_size=1, max_size=60))
@settings(max_examples=300, deadline=None)
def test_minute_sums_are_exact_decimal_sums(rows):
    """Per-minute sums (the int64 fast path and the whole/fraction route) equal Decimal sums of
    the printed values, all trades and taker buys, whatever the decimals and magnitudes."""
    from mnemo_assets.binance.klines import _minute_sums

    decimals = [Decimal(units).scaleb(-exp) for units, exp, _, _ in rows]
    maker = np.array([m for _, _, m, _ in rows])
    minutes = np.cumsum([step for *_, step in rows])
    starts = np.flatnonzero(np.r_[True, minutes[1:] != minutes[:-1]])
    got = _minute_sums(np.array([float(d) for d in decimals]), maker, starts, checked=False)
    ends = np.r_[starts[1:], len(rows)]
    for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
        want = sum(decimals[a:b], Decimal(0))
        taker = sum((d for d, m in zip(decimals[a:b], maker[a:b], strict=True) if not m), Decimal(0))
        assert Decimal(int(got[0][i])) + Decimal(int(got[1][i])).scaleb(-12) == want
        assert Decimal(int(got[2][i])) + Decimal(int(got[3][i])).scaleb(-12) == taker


def test_units_of_big_and_whole_values():
    x = np.array([1e11, 123456789012.0, 4.5e14, 99999999.5, 0.0, 1e-8])
    w, f = _units(x)
    assert w.tolist() == [10**11, 123456789012, 450000000000000, 99999999, 0, 0]
    assert f.tolist() == [0, 0, 0, 500000000000, 0, 10_000]
    with pytest.raises(ValueError, match="finite"):
        _units(np.array([1.0, float("nan")]))


def test_trade_minutes_agree_with_minute_bars_on_traded_minutes(mirror):
    arch, _ = mirror
    for market, pair, day in (
        ("spot", "SHIBUSDT", date(2025, 1, 1)),
        ("um", "BTCUSDT", date(2024, 12, 28)),
        ("cm", "ETHUSD_PERP", date(2024, 12, 30)),
    ):
        t = arch.normalised_trades(market, pair, day)
        got = trade_minutes(t)
        exact, _ = _exact_bars(t, None, None, None, None)
        exact = exact.filter(pl.col("count") > 0)
        assert got.height == exact.height
        assert got.select("open_time", "open", "high", "low", "close", "count").equals(
            exact.select("open_time", "open", "high", "low", "close", "count")
        )
        for c in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"):
            ours = [Decimal(int(a)) + Decimal(int(b)).scaleb(-12) for a, b in zip(got[f"{c}_w"], got[f"{c}_f"], strict=True)]
            assert ours == exact[c].to_list(), c


def test_volumes_exact_to_the_eighth_decimal():
    """0.1 + 0.2 is 0.3 here (not 0.30000000000000004), and one unit of the 8th decimal differs."""
    t = trades([("2025-01-02T00:00:10", 1.0, 0.1, False), ("2025-01-02T00:00:20", 1.0, 0.2, True)])
    k = minute_bars(t, end=datetime(2025, 1, 2, 0, 1))
    assert k["volume"][0] == 0.3
    assert reconcile(t, k, market="spot")["klines_status"] == "ok"
    off = reconcile(t, k.with_columns(pl.col("volume") + 1e-8), market="spot")
    assert off["klines_problems"] == ["volumes"] and off["klines_differences"]["volume"] == 1
    assert off["klines_differences"]["quote_volume"] == 0


def test_the_volume_the_trades_file_rounds_gets_half_a_unit_per_trade():
    """Spot/USD-M quote_qty (price × qty) and COIN-M base_qty are printed rounded per trade: the
    kline's sum may differ by half a unit of the 8th decimal per trade of the minute, no more."""
    t = trades([("2025-01-02T00:00:10", 1.0, 0.1, False), ("2025-01-02T00:00:20", 1.0, 0.2, False)])
    k = minute_bars(t, end=datetime(2025, 1, 2, 0, 1))
    for delta, ok in ((1.4e-8, True), (1.6e-8, False)):  # 2 trades: 0.5 + 2 × 0.5 units
        got = reconcile(t, k.with_columns(pl.col("quote_volume") + delta, pl.col("taker_buy_quote_volume") + delta), market="spot")
        assert (got["klines_status"] == "ok") is ok, delta
    # COIN-M: the base volume is the rounded one, the quote (contracts × size) is exact
    assert reconcile(t, k.with_columns(pl.col("volume") + 1.4e-8, pl.col("taker_buy_volume") + 1.4e-8), market="cm")["klines_status"] == "ok"
    assert reconcile(t, k.with_columns(pl.col("quote_volume") + 1e-8), market="cm")["klines_problems"] == ["volumes"]


# ---------------------------------------------------------------- minutes and problems


def test_quiet_minutes_repeat_the_last_kline_close_and_the_previous_close_is_checked_when_given():
    k = minute_bars(T, previous_close=0.45)  # 00:00 .. 00:02 quiet at 0.45, trades from 00:03
    assert reconcile(T, k, market="spot")["klines_status"] == "ok"
    assert reconcile(T, k, market="spot", previous_close=0.45)["klines_status"] == "ok"
    wrong = reconcile(T, k, market="spot", previous_close=0.5)  # only the day's first minute is checked against it
    assert wrong["klines_problems"] == ["prices"] and wrong["klines_minutes_differing"] == 1
    assert wrong["klines_first_difference"] == datetime(2025, 1, 2)
    # a quiet kline that does not repeat the close before it
    bent = k.with_columns(pl.when(pl.col("open_time") == datetime(2025, 1, 2, 0, 4)).then(9.0).otherwise(pl.col("high")).alias("high"))
    got = reconcile(T, bent, market="spot")
    assert got["klines_problems"] == ["prices"] and got["klines_differences"]["high"] == 1
    assert got["klines_first_difference"] == datetime(2025, 1, 2, 0, 4)


def test_listing_and_delisting_minutes():
    listing = minute_bars(T)  # from the first trade's minute: no minute before it
    assert listing["open_time"][0] == datetime(2025, 1, 2, 0, 3)
    assert reconcile(T, listing, market="spot")["klines_minutes_compared"] == listing.height
    delisting = minute_bars(T, previous_close=0.45, end=datetime(2025, 1, 2, 12))
    facts = reconcile(T, delisting, market="spot")
    assert facts["klines_status"] == "ok" and facts["klines_minutes_compared"] == 720


def test_trades_after_the_klines_end_are_extra_minutes():
    k = minute_bars(T, previous_close=0.45).filter(pl.col("open_time") < datetime(2025, 1, 2, 0, 5))
    got = reconcile(T, k, market="spot")
    assert got["klines_problems"] == ["minutes_extra"] and got["klines_differences"]["only_in_trades"] == 1
    assert got["klines_trades_difference"] == -1 and got["klines_first_difference"] == datetime(2025, 1, 2, 0, 5)


def test_an_empty_klines_file():
    got = reconcile(T, pl.DataFrame(schema=KLINES_SCHEMA), market="spot")
    assert got["klines_problems"] == ["klines_empty"] and got["klines_trades_difference"] == -4
    assert got["klines_differences"]["only_in_trades"] == 2
    assert got["klines_minutes_compared"] == got["klines_minutes_differing"] == 2


def test_trades_not_sorted_or_of_several_pairs():
    k = minute_bars(T)
    assert reconcile(T.reverse(), k, market="spot")["klines_status"] == "ok"  # sorted by (time, trade_id) first
    with pytest.raises(ValueError, match="several"):
        reconcile(pl.concat([T, T.with_columns(pl.lit("BTC").alias("symbol"))]), k, market="spot")


# ---------------------------------------------------------------- reading klines files in batches


def test_batch_parse_equals_one_file_at_a_time(mirror):
    _, src = mirror
    day = date(2025, 1, 1)
    for market in ("spot", "um", "cm"):
        files = [src.fetch(market, p, day, "klines") for p in src.list_pairs(market) if day in src.list_days(market, p)]
        from mnemo_assets.binance.parse import read_zip_member

        datas = [(read_zip_member(f.path), f.pair, str(f.path)) for f in files]
        batch, errors = parse_klines_batch(datas, market)
        assert not errors
        for i, (data, pair, where) in enumerate(datas):
            one = parse_klines_csv(data, market, where, pair)
            assert batch.filter(pl.col("key") == i).drop("key").equals(one), (market, pair)


def test_batch_parse_names_each_bad_file_and_keeps_the_others():
    real = [(p.read_bytes(), "ADABTC", str(p)) for p in KLINES]
    micros = (
        "\n".join(
            ",".join([str(int(r[0]) * 1000), *r[1:6], str(int(r[6]) * 1000 + 999), *r[7:]])
            for r in (x.split(",") for x in KLINES[0].read_text().splitlines())
        )
        + "\n"
    )
    bad = [(b"1637971200000,1,2,3\n", "ADABTC", "bad.csv"), (micros.encode(), "ADABTC", "us.csv"), (b"", "ADABTC", "empty.csv")]
    batch, errors = parse_klines_batch([real[0], bad[0], real[1], bad[1], bad[2]], "spot")
    assert list(errors) == [1] and "bad.csv: line 1 has 4 fields" in str(errors[1])
    assert sorted(batch["key"].unique()) == [0, 2, 3]
    assert batch.filter(pl.col("key") == 2).drop("key").equals(read_klines_file(KLINES[1], "spot"))
    # a µs file beside ms files: each read in its own unit
    assert batch.filter(pl.col("key") == 3).drop("key", "close_time").equals(read_klines_file(KLINES[0], "spot").drop("close_time"))
    assert parse_klines_batch([], "um")[0].height == 0


def test_real_klines_against_no_trades():
    """The real ADABTC klines (every minute traded) through the whole comparison: with no trades
    every minute is missing from ours, and every kline trade is counted."""
    for path in KLINES:
        k = read_klines_file(path, "spot")
        assert k.height and (k["count"] > 0).all()
        got = reconcile(T.clear(), k, market="spot")
        assert got["klines_problems"] == ["minutes_missing"]
        assert got["klines_trades_difference"] == k["count"].sum() and got["klines_differences"]["only_in_klines"] == k.height


# ---------------------------------------------------------------- klines files that cannot be had


def test_missing_and_unreadable_klines_degrade_with_a_reason(tmp_path, mirror):
    _, src = mirror
    day = date(2025, 1, 1)
    pair_day = read_pair_day(src.fetch("spot", "BTCUSDT", day))
    rows = []
    rec = KlinesReconciler("spot", day)
    bad = tmp_path / "BTCUSDT-1m-2025-01-01.zip"
    bad.write_bytes(b"PK\x03\x04garbage")
    from dataclasses import replace

    corrupt = replace(src.fetch("spot", "BTCUSDT", day, "klines"), path=bad)
    for klines in (ArchiveMissingError("no klines file for BTCUSDT on 2025-01-01"), corrupt):
        row = dict(pair_day.row, reasons=list(pair_day.row["reasons"]))
        rows.append(row)
        rec.add(row, pair_day.trades, klines)
    rec.finish()
    missing, unreadable = rows
    assert (missing["status"], missing["klines_status"]) == ("degraded", "missing")
    assert missing["reasons"] == ["klines_missing: no klines to reconcile (no klines file for BTCUSDT on 2025-01-01)"]
    assert (unreadable["status"], unreadable["klines_status"]) == ("degraded", "unreadable")
    assert unreadable["reasons"][0].startswith("klines_unreadable: ") and "not a valid zip" in unreadable["reasons"][0]
    assert unreadable["klines_minutes_compared"] is None
    assert ledger_frame(rows).height == 2


def test_realdata_trades_fixture_reconciles_with_its_own_minutes():
    """Real BTCUSDT trades (00:00 - 00:05:05) against klines made of them by minute_bars: ok, and
    against those klines with one real trade less: trades_end_early with the exact count."""
    from mnemo_assets.binance.parse import read_trades_file

    t = read_trades_file(REALDATA / "spot/trades/BTCUSDT-trades-2024-08-09.partial.csv", "spot")
    k = minute_bars(t, end=datetime(2024, 8, 9, 0, 6))
    assert reconcile(t, k, market="spot")["klines_status"] == "ok"
    cut = reconcile(t.head(t.height - 100), k, market="spot")
    assert cut["klines_problems"] == ["trades_end_early"] and cut["klines_trades_difference"] == 100
    assert timedelta(0) < datetime(2024, 8, 9, 0, 6) - cut["klines_first_difference"] <= timedelta(minutes=2)
