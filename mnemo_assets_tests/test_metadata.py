"""Rolling metadata: loop oracle over 40 synthetic days, point in time, incremental = full, user specs."""

from datetime import date, datetime, timedelta

import polars as pl
import pytest

from mnemo_assets.binance.synthetic import SyntheticArchive
from mnemo_assets.grids import last_trade_grid
from mnemo_assets.metadata import (
    MetadataSpec,
    compile_plan,
    compute_metadata,
    default_metadata,
    metadata_from_partials,
    partials,
)
from mnemo_assets.returns import gridded_returns
from mnemo_assets_tests.oracles import assert_rows_close, metadata_oracle

START = date(2024, 12, 1)
NDAYS = 40


def synthetic_trades(tmp, days=NDAYS, n_pairs=8, tpd=2500, seed=5):
    archive = SyntheticArchive(tmp / "gen", seed=seed, n_pairs=n_pairs, trades_per_day=tpd, start=START, end=START + timedelta(days=days))
    frames = []
    for k in range(days):
        day = START + timedelta(days=k)
        for pair in archive.list_pairs("spot"):
            if day in archive.list_days("spot", pair):
                frames.append(archive.normalised_trades("spot", pair, day))
    return pl.concat(frames).filter(pl.col("peg_symbol") == "USDT")


@pytest.fixture(scope="module")
def forty_days(tmp_path_factory):
    trades = synthetic_trades(tmp_path_factory.mktemp("meta"))
    grid = last_trade_grid(trades, "10m")
    returns = gridded_returns(grid, START, START + timedelta(days=NDAYS), "10m")
    return trades, grid, returns


def as_rows(frame: pl.DataFrame) -> list[dict]:
    return frame.with_columns(pl.col("symbol").cast(pl.String)).to_dicts()


def test_forty_days_match_the_oracle_with_listings_and_delistings(forty_days):
    _, grid, returns = forty_days
    spec = default_metadata("10m")
    got = compute_metadata(grid, returns, spec, START, START + timedelta(days=NDAYS))
    assert got.columns[:3] == ["symbol", "grid_time", "last_trade_time"]
    assert got.columns[3:] == spec.index_columns + spec.returns_columns + [
        "liquidity_1d_q",
        "liquidity_7d_q",
        "daily_vol_7d_lookback_q",
        "daily_vol_30d_lookback_q",
    ]
    want = metadata_oracle(grid, returns, spec, START, START + timedelta(days=NDAYS))
    assert_rows_close(as_rows(got), want, rel=1e-9)
    # listings and delistings: symbols appear and disappear inside the range
    spans = got.group_by("symbol").agg(pl.col("grid_time").min().alias("a"), pl.col("grid_time").max().alias("b"))
    assert spans["a"].max() > datetime(2024, 12, 1, 12) and spans["b"].min() < datetime(2025, 1, 9)
    # delisted symbols stay in the row set for 7 days (W_max) after their last grid row
    assert got["excess_buy_ratio_1d"].null_count() > 0  # empty 1d window inside the 7d row set


def test_point_in_time(forty_days, tmp_path):
    trades, _, _ = forty_days
    spec = default_metadata("10m")
    g_time = datetime(2024, 12, 20, 13)
    day = g_time.date()

    def metadata_at(tr):
        grid = last_trade_grid(tr, "5s")
        rets = gridded_returns(grid, START, day + timedelta(days=1), "10m")
        m = compute_metadata(grid, rets, spec, day, day + timedelta(days=1))
        return m.filter(pl.col("grid_time") == g_time).drop(pl.selectors.ends_with("_q"))

    base = metadata_at(trades)

    def perturb(after):
        late = pl.col("time") >= after
        return trades.with_columns(
            pl.when(late).then(pl.col("price") * 1.5).otherwise(pl.col("price")).alias("price"),
            pl.when(late).then(pl.col("qty") * 3).otherwise(pl.col("qty")).alias("qty"),
            pl.when(late).then(pl.col("quote_qty") * 4.5).otherwise(pl.col("quote_qty")).alias("quote_qty"),
        ).filter(~(late & (pl.col("trade_id") % 7 == 0)))  # and remove some

    # trades at or after G + Δgrid change nothing at G
    assert_rows_close(as_rows(metadata_at(perturb(g_time + timedelta(seconds=5)))), as_rows(base), rel=0)
    # trades after G leave every index metric at G unchanged
    index_cols = ["symbol", "grid_time", "last_trade_time", *spec.index_columns]
    moved = metadata_at(perturb(g_time + timedelta(microseconds=1)))
    assert_rows_close(as_rows(moved.select(index_cols)), as_rows(base.select(index_cols)), rel=0)


def test_incremental_equals_full_from_partials(forty_days):
    """Each day from its own window of per-day partials, as the Dagster asset computes it."""
    _, grid, returns = forty_days
    spec = default_metadata("10m")
    iplan, rplan = compile_plan(spec.index), compile_plan(spec.returns)
    days = [START + timedelta(days=k) for k in range(NDAYS)]
    ipart = {
        d: partials(grid.filter(pl.col("last_trade_time").dt.date() == d), iplan, "last_trade_time", spec.interval, last_time=True).collect()
        for d in days
    }
    rpart = {d: partials(returns.filter(pl.col("date") == d), rplan, "returns_grid_time", spec.interval).collect() for d in days}
    full = compute_metadata(grid, returns, spec, START, START + timedelta(days=NDAYS))
    enum = pl.Enum(sorted(grid["symbol"].cast(pl.String).unique().to_list()))
    for d in days[::3]:
        iw = pl.concat([ipart[x] for x in days if d - timedelta(days=7) <= x <= d]).with_columns(pl.col("symbol").cast(pl.String).cast(enum))
        rw = pl.concat([rpart[x] for x in days if d - timedelta(days=30) <= x <= d])
        part = metadata_from_partials(iw, rw, spec, d, d + timedelta(days=1), grid_schema=grid.schema, returns_schema=returns.schema)
        expected = full.filter(pl.col("grid_time").dt.date() == d)
        assert_rows_close(as_rows(part), as_rows(expected), rel=1e-9)


def test_user_spec_with_custom_window_and_non_decomposable_expressions(forty_days):
    _, grid, returns = forty_days
    spec = MetadataSpec(
        index={
            timedelta(hours=6): [
                pl.col("high").max().alias("high_6h"),  # not decomposable: raw rows
                (pl.col("close") - pl.col("open")).abs().sum().alias("abs_moves_6h"),
                pl.len().alias("active_buckets_6h"),
                pl.col("vwap_taker_buy").mean().alias("mean_buy_vwap_6h"),  # nulls skipped
            ],
            timedelta(days=2): [pl.col("volume_quote").log().std().alias("logvol_std_2d")],
        },
        returns={timedelta(hours=12): [pl.col("return").abs().max().alias("max_abs_return_12h"), pl.col("return").var().alias("var_12h")]},
        quantiles=pl.col("high_6h"),
        interval=timedelta(hours=2),
        returns_interval=timedelta(minutes=10),
    )
    plan = compile_plan(spec.index)
    assert [o.rebuilt is None for o in plan.outputs] == [True, False, False, False, False]
    lo, hi = date(2024, 12, 5), date(2024, 12, 9)
    got = compute_metadata(grid, returns, spec, lo, hi)
    want = metadata_oracle(grid, returns, spec, lo, hi)
    assert_rows_close(as_rows(got), want, rel=1e-9)


def test_quantile_ties_and_nulls():
    t = datetime(2025, 1, 1)
    grid = pl.DataFrame(
        {
            "symbol": ["A", "B", "C", "D"],
            "date": [t.date()] * 4,
            "last_trade_time": [t + timedelta(minutes=m) for m in (1, 2, 3, 4)],
            "volume_quote": [5.0, 5.0, 1.0, 7.0],
            "volume_base": [1.0, 1.0, 1.0, 1.0],
            "taker_buy_volume_base": [1.0, 0.0, 0.5, 0.5],
            "taker_sell_volume_base": [0.0, 1.0, 0.5, 0.5],
            "trade_count": pl.Series([1, 1, 1, 1], dtype=pl.UInt32),
        }
    )
    spec = default_metadata("10m")
    got = compute_metadata(grid, None, spec, date(2025, 1, 1), date(2025, 1, 2)).filter(pl.col("grid_time") == datetime(2025, 1, 1, 1))
    assert got["liquidity_1d_q"].to_list() == [0.625, 0.625, 0.25, 1.0]  # A and B tie at ranks 2 and 3
    assert got["daily_vol_7d_lookback"].null_count() == 4 and got["daily_vol_7d_lookback_q"].null_count() == 4
    assert got["vol_ssize_30d_lookback"].to_list() == [0, 0, 0, 0]
    want = metadata_oracle(
        grid,
        pl.DataFrame(
            schema={
                "symbol": pl.String,
                "date": pl.Date,
                "returns_grid_time": pl.Datetime("us"),
                "max_tick_to_query_lag": pl.Duration("us"),
                "return": pl.Float64,
            }
        ),
        spec,
        date(2025, 1, 1),
        date(2025, 1, 2),
    )
    assert_rows_close(as_rows(compute_metadata(grid, None, spec, date(2025, 1, 1), date(2025, 1, 2))), want)


def test_spec_validation_and_version():
    with pytest.raises(ValueError, match="multiple of the metadata interval"):
        MetadataSpec(index={timedelta(minutes=90): [pl.col("x").sum().alias("x")]}, returns={})
    with pytest.raises(ValueError, match="unique names"):
        MetadataSpec(index={timedelta(days=1): [pl.col("x").sum().alias("x"), pl.col("y").sum().alias("x")]}, returns={})
    a, b = default_metadata("10m"), default_metadata("10m")
    assert a.version == b.version
    changed = MetadataSpec(index=a.index, returns={timedelta(days=7): [pl.col("return").sum().alias("r")]}, quantiles=a.quantiles)
    assert changed.version != a.version
    assert a["by_symbol_index"] is a.index and a["accum_returns"] is a.returns
