"""Window aggregates are sums of their own hours in a fixed order: exact inputs give exact
outputs, identical symbols identical values, errors that do not grow with the history, and
non-finite values that reach only their own windows."""

import math
import random
from datetime import date, datetime, timedelta
from fractions import Fraction

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemo_assets.grids import GRID_SCHEMA
from mnemo_assets.metadata import (
    MetadataSpec,
    block_length,
    col,
    compile_plan,
    compute_metadata,
    default_metadata,
    metadata_from_partials,
    partials,
)
from mnemo_assets.returns import RETURNS_SCHEMA
from mnemo_assets_tests.oracles import assert_rows_close, metadata_oracle
from mnemo_assets_tests.test_metadata_spec import grid_frame, returns_frame

T0 = datetime(2024, 1, 1)
HYPOTHESIS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def strings(frame: pl.DataFrame) -> list[dict]:
    return frame.with_columns(pl.col("symbol").cast(pl.String)).to_dicts()


def hourly_grid(days: int, symbols: dict[str, callable]) -> pl.DataFrame:
    """One grid row per symbol and hour (at minute 17), volume_quote from ``symbols[s](k)``."""
    rows = []
    for k in range(days * 24):
        t = T0 + timedelta(hours=k, minutes=17)
        for s, value in symbols.items():
            v = value(k)
            if v is not None:
                rows.append((s, t, v))
    return grid_frame(rows)


def ten_minute_returns(days: int, symbols: dict[str, callable]) -> pl.DataFrame:
    rows = []
    for k in range(days * 144):
        t = T0 + timedelta(minutes=10 * k)
        for s, value in symbols.items():
            rows.append((s, t, value(k)))
    return returns_frame(rows)


# ------------------------------------------------------------------------ exact zeros
def test_zero_returns_give_exactly_zero_vol_and_drift_after_any_history():
    days = 75
    rng = random.Random(3)
    noise = [rng.gauss(0, 1e-3) for _ in range(days * 144)]
    halt = 30 * 144  # HALT trades noisily for 30 days, then its returns are exactly 0
    rets = ten_minute_returns(days, {"ZERO": lambda k: 0.0, "HALT": lambda k: noise[k] if k < halt else 0.0, "NOISY": lambda k: noise[-k - 1]})
    grid = hourly_grid(days, {"ZERO": lambda k: 1.0, "HALT": lambda k: 100.0 + k % 7 / 3, "NOISY": lambda k: 1e7 / (k + 1)})
    spec = default_metadata("10m")
    start, end = date(2024, 1, 2), date(2024, 3, 15)
    out = compute_metadata(grid, rets, spec, start, end)  # one pass over 73 days of cumulative history
    zero = out.filter(pl.col("symbol") == "ZERO", pl.col("vol_ssize_7d_lookback") >= 2)
    assert zero.height > 0
    for c in ("daily_vol_7d_lookback", "daily_vol_30d_lookback", "daily_returns_drift_7d_lookback", "daily_returns_drift_30d_lookback"):
        assert zero[c].to_list() == [0.0] * zero.height, c
    halted = T0 + timedelta(days=30)
    for w in (7, 30):
        rows = out.filter(pl.col("symbol") == "HALT", pl.col("grid_time") >= halted + timedelta(days=w))
        assert rows.height > 0
        assert rows[f"daily_vol_{w}d_lookback"].to_list() == [0.0] * rows.height
        assert rows[f"daily_returns_drift_{w}d_lookback"].to_list() == [0.0] * rows.height
        assert rows[f"vol_ssize_{w}d_lookback"].to_list() == [w * 144] * rows.height
        live = out.filter(pl.col("symbol") == "HALT", pl.col("grid_time") < halted)
        assert (live[f"daily_vol_{w}d_lookback"].drop_nulls() > 0).all()
    # the quantiles of a vol of exactly zero: ZERO and HALT tie for the lowest rank
    late = out.filter(pl.col("grid_time") == datetime(2024, 3, 14, 12)).sort("symbol")
    assert late["daily_vol_30d_lookback_q"].to_list() == [0.5, 1.0, 0.5]


# ---------------------------------------------------------------------- identical symbols
VALUES = [0.0, 0.0, 1e-3, 0.1, 0.3, 3.3, 288000.0 / 7, 1e6 + 0.1, 1e9 / 3]
RETURNS = [0.0, 0.0, 1e-3, -1e-3, 0.1, -0.07, 1 / 3, None]


@HYPOTHESIS
@given(
    a=st.lists(st.sampled_from(VALUES), min_size=24, max_size=24),
    old=st.lists(st.sampled_from(VALUES), min_size=24, max_size=24),
    ra=st.lists(st.sampled_from(RETURNS), min_size=36, max_size=36),
    rold=st.lists(st.sampled_from(RETURNS), min_size=36, max_size=36),
    hour_gaps=st.lists(st.booleans(), min_size=24, max_size=24),
)
def test_identical_activity_gives_identical_values_and_quantiles(a, old, ra, rold, hour_gaps):
    """TWIN copies A's activity from day 10 on; before that its history differs. Wherever the
    windows see only the identical part, every value and every quantile is equal, bit for bit,
    in a long one-pass computation and in a per-day one."""
    days, same_from = 44, 10 * 24

    def a_vol(k):
        return None if hour_gaps[k % 24] and k % 5 == 0 else a[(k * 7) % 24] * (1 + (k // 24) % 3)

    def twin_vol(k):
        return a_vol(k) if k >= same_from else old[k % 24] * 13.7

    grid = hourly_grid(days, {"A": a_vol, "TWIN": twin_vol, "OTHER": lambda k: VALUES[k % len(VALUES)] + 1})
    rets = ten_minute_returns(
        days,
        {
            "A": lambda k: ra[(k * 5) % 36],
            "TWIN": lambda k: ra[(k * 5) % 36] if k >= same_from * 6 else rold[k % 36],
            "OTHER": lambda k: RETURNS[k % len(RETURNS)],
        },
    )
    spec = default_metadata("10m")
    lo, hi = date(2024, 1, 3), date(2024, 2, 14)
    full = compute_metadata(grid, rets, spec, lo, hi)
    check_from = T0 + timedelta(hours=same_from) + timedelta(days=30)
    late = full.filter(pl.col("grid_time") >= check_from)
    a_rows = late.filter(pl.col("symbol") == "A").drop("symbol")
    twin_rows = late.filter(pl.col("symbol") == "TWIN").drop("symbol")
    assert a_rows.height > 0 and a_rows.equals(twin_rows)
    # the per-day computation from per-day partials (what the asset does) gives the same bits
    iplan, rplan = compile_plan(spec.index), compile_plan(spec.returns)
    d = date(2024, 2, 13)
    g = grid.filter(pl.col("last_trade_time") >= datetime(2024, 2, 6), pl.col("last_trade_time") < datetime(2024, 2, 14))
    r = rets.filter(pl.col("returns_grid_time") >= datetime(2024, 1, 14), pl.col("returns_grid_time") < datetime(2024, 2, 14))
    ip = pl.concat(
        [partials(g.filter(pl.col("date") == x), iplan, "last_trade_time", spec.interval, True).collect() for x in g["date"].unique().sort()]
    )
    rp = pl.concat([partials(r.filter(pl.col("date") == x), rplan, "returns_grid_time", spec.interval).collect() for x in r["date"].unique().sort()])
    one = metadata_from_partials(ip, rp, spec, d, d + timedelta(days=1), grid_schema=GRID_SCHEMA, returns_schema=RETURNS_SCHEMA)
    expected = full.filter(pl.col("grid_time").dt.date() == d)
    assert one.with_columns(pl.col("symbol").cast(pl.String)).equals(expected.with_columns(pl.col("symbol").cast(pl.String)))


# ------------------------------------------------------------ error against exact sums
def exact_std(values: list[float]) -> float:
    """The sample standard deviation of floats, exactly (integers over a common power of two)."""
    fractions = [Fraction(v) for v in values]
    den = max(f.denominator for f in fractions)
    ints = [f.numerator * (den // f.denominator) for f in fractions]
    n, s, ss = len(ints), sum(ints), sum(i * i for i in ints)
    return math.sqrt(Fraction(n * ss - s * s, n * (n - 1) * den * den))


def test_thirty_day_windows_over_two_years_match_exact_sums():
    """Relative error <= 1e-12 against math.fsum / fractions at sampled grid times of a two-year
    one-pass computation, in the second year, after a regime change: FADED traded and moved a
    lot in its first year and little since (differences of running totals lose the digits of
    the whole history: about 1e-9 relative here)."""
    days = 2 * 365
    year = 365 * 24
    rng = random.Random(11)

    def volume(mu_then, mu_now, k):
        return rng.lognormvariate(mu_then if k < year else mu_now, 2.5) if rng.random() > 0.05 else 0.0

    def ret(sd_then, sd_now, k):
        return rng.gauss(2e-5, sd_then if k < year * 6 else sd_now) if rng.random() > 0.02 else 0.0

    vols = {s: [volume(a, b, k) for k in range(days * 24)] for s, a, b in (("FADED", 18, 4), ("STEADY", 2, 2))}
    rets = {s: [ret(a, b, k) for k in range(days * 144)] for s, a, b in (("FADED", 5e-2, 1e-4), ("STEADY", 1e-3, 1e-3))}
    grid = hourly_grid(days, {s: (lambda k, s=s: vols[s][k]) for s in vols})
    returns = ten_minute_returns(days, {s: (lambda k, s=s: rets[s][k]) for s in rets})
    spec = MetadataSpec(
        index={"30d": [col("volume_quote").sum().alias("liq_30d"), col("trade_count").sum().alias("tc_30d")]},
        returns={"30d": [col("return").mean().alias("drift_30d"), col("return").std().alias("vol_30d"), col("return").count().alias("n_30d")]},
        quantiles=["liq_30d"],
    )
    lo, hi = date(2024, 1, 2), T0.date() + timedelta(days=days)
    out = compute_metadata(grid, returns, spec, lo, hi)
    assert out.height > 30_000
    sample = out.filter(pl.col("grid_time") >= T0 + timedelta(days=365 + 31)).sample(120, seed=1)
    worst = {"liq": 0.0, "vol": 0.0, "drift": 0.0}
    for row in sample.iter_rows(named=True):
        g = row["grid_time"]
        k_hi = (g - T0) // timedelta(hours=1)  # hours [k_hi - 720, k_hi) hold rows at minute 17 < G
        window = vols[row["symbol"]][k_hi - 720 : k_hi]
        want = math.fsum(window)
        worst["liq"] = max(worst["liq"], abs(row["liq_30d"] - want) / want)
        r_hi = (g - T0) // timedelta(minutes=10)  # returns_grid_time in [G - 30d, G - 10m]
        rw = rets[row["symbol"]][r_hi - 30 * 144 : r_hi]
        assert row["n_30d"] == len(rw)
        mean = math.fsum(rw) / len(rw)
        worst["drift"] = max(worst["drift"], abs(row["drift_30d"] - mean) / (math.fsum(abs(x) for x in rw) / len(rw)))
        want_sd = exact_std(rw)
        worst["vol"] = max(worst["vol"], abs(row["vol_30d"] - want_sd) / want_sd)
    assert worst["liq"] <= 1e-12 and worst["vol"] <= 1e-12 and worst["drift"] <= 1e-12, worst


# ------------------------------------------------- arbitrary windows, ties, zeros, NaN, inf
SPECIAL = [0.0, 0.0, 1.0, 2.5, 1e6, 1e-9, float("nan"), float("inf"), float("-inf")]


@HYPOTHESIS
@given(
    data=st.data(),
    interval=st.sampled_from(["1h", "2h"]),
    windows=st.lists(st.sampled_from([2, 6, 10, 14, 24, 30, 48, 72]), min_size=1, max_size=3, unique=True),
    rwindows=st.lists(st.sampled_from([2, 6, 10, 24, 50]), min_size=0, max_size=2, unique=True),
)
def test_random_windows_ties_zeros_and_non_finite_values_match_the_oracle(data, interval, windows, rwindows):
    step = 1 if interval == "1h" else 2
    windows = [w for w in windows if w % step == 0] or [24]
    rwindows = [w for w in rwindows if w % step == 0]
    events = data.draw(
        st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(0, 4 * 24 * 60 - 1), st.sampled_from(SPECIAL)), min_size=1, max_size=60)
    )
    rets = data.draw(
        st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(0, 4 * 144 - 1), st.sampled_from(SPECIAL + [None])), max_size=80)
    )
    rows = [(s, T0 + timedelta(minutes=m, seconds=3), v) for s, m, v in events]
    rows = sorted({(s, t): (s, t, v) for s, t, v in rows}.values())
    grid = grid_frame(rows)
    returns = returns_frame(sorted({(s, k): (s, T0 + timedelta(minutes=10 * k), v) for s, k, v in rets}.values()))
    spec = MetadataSpec(
        index={
            timedelta(hours=w): [
                col("volume_quote").sum().alias(f"liq_{w}"),
                col("volume_quote").std().alias(f"sd_{w}"),
                (col("volume_quote") > 1).mean().alias(f"share_{w}"),
                col("trade_count").sum().alias(f"tc_{w}"),
            ]
            for w in windows
        },
        returns={
            timedelta(hours=w): [
                col("return").mean().alias(f"m_{w}"),
                col("return").var(ddof=0).alias(f"v_{w}"),
                col("return").count().alias(f"n_{w}"),
            ]
            for w in rwindows
        },
        quantiles=pl.col("^liq_.*$"),
        interval=interval,
    )
    lo, hi = date(2024, 1, 2), date(2024, 1, 5)
    got = compute_metadata(grid, returns, spec, lo, hi)
    want = metadata_oracle(grid, returns, spec, lo, hi)
    assert_rows_close(strings(got), want, rel=1e-9)


def test_block_lengths():
    h = timedelta(hours=1)
    assert block_length(timedelta(days=30), h) == block_length(timedelta(days=1), h) == 86_400_000_000
    assert block_length(timedelta(hours=10), h) == 8 * 3_600_000_000
    assert block_length(timedelta(hours=10), 2 * h) == 8 * 3_600_000_000
    assert block_length(timedelta(hours=1), h) == 3_600_000_000
    assert block_length(timedelta(minutes=50), timedelta(minutes=10)) == 2_400_000_000  # 40 min divides a day


def test_hourly_partials_are_the_same_bits_every_time_and_for_identical_symbols():
    """Large enough for polars' streaming engine to split an hour across morsels and threads
    (which gives last-bit differences between runs and between identical symbols)."""
    rng = random.Random(5)
    n = 250_000
    times = [T0 + timedelta(seconds=5 * k) for k in range(n)]
    values = [rng.lognormvariate(3, 2) for _ in range(n)]
    one = grid_frame([("BTC", t, v) for t, v in zip(times, values, strict=True)])
    grid = pl.concat([one, one.with_columns(pl.lit("ZZZ").alias("symbol")), one.with_columns(pl.lit("AAA").alias("symbol"))])
    spec = default_metadata("10m")
    plan = compile_plan(spec.index)
    runs = [partials(grid.lazy(), plan, "last_trade_time", spec.interval, last_time=True).collect() for _ in range(3)]
    assert all(r.equals(runs[0]) for r in runs)
    by_symbol = [runs[0].filter(pl.col("symbol") == s).drop("symbol") for s in ("AAA", "BTC", "ZZZ")]
    assert by_symbol[0].height == n * 5 // 3600 + 1
    assert by_symbol[0].equals(by_symbol[1]) and by_symbol[1].equals(by_symbol[2])
