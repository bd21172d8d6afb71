"""Metadata specs: the owned vocabulary, the spec version, the schema of every partition, the checks."""

import copy
import doctest
import pickle
import subprocess
import sys
from datetime import date, datetime, timedelta

import polars as pl
import pytest

import mnemo_assets.metadata as metadata_module
import mnemo_assets.metadata_expr as vocabulary
from mnemo_assets.grids import GRID_SCHEMA
from mnemo_assets.metadata import (
    MetadataSpec,
    MetricExpr,
    col,
    compile_plan,
    compute_metadata,
    default_metadata,
    lit,
    metadata_from_partials,
    metadata_schema,
    metadata_violations,
    n_rows,
    partials,
    when,
)
from mnemo_assets.metadata_expr import describe, from_polars
from mnemo_assets.returns import RETURNS_SCHEMA
from mnemo_assets.storage.parquet import scan_days, write_partition
from mnemo_assets_tests import user_spec
from mnemo_assets_tests.oracles import assert_rows_close, metadata_oracle

DEFAULT_DESCRIPTION = """\
mnemo-metadata-spec/1
interval 1h
returns_interval 10m
index 1d liquidity_1d = col("volume_quote").sum()
index 1d sqrtliq_1d = col("volume_quote").sum().sqrt()
index 1d excess_buy_ratio_1d = ((col("taker_buy_volume_base") - col("taker_sell_volume_base")).sum() / col("volume_base").sum())
index 1d trade_count_1d = col("trade_count").sum()
index 7d liquidity_7d = col("volume_quote").sum()
index 7d sqrtliq_7d = col("volume_quote").sum().sqrt()
index 7d excess_buy_ratio_7d = ((col("taker_buy_volume_base") - col("taker_sell_volume_base")).sum() / col("volume_base").sum())
index 7d trade_count_7d = col("trade_count").sum()
returns 7d daily_returns_drift_7d_lookback = (col("return").mean() * 144.0)
returns 7d daily_vol_7d_lookback = (col("return").std(ddof=1) * 12.0)
returns 7d vol_ssize_7d_lookback = col("return").count()
returns 30d daily_returns_drift_30d_lookback = (col("return").mean() * 144.0)
returns 30d daily_vol_30d_lookback = (col("return").std(ddof=1) * 12.0)
returns 30d vol_ssize_30d_lookback = col("return").count()
quantiles liquidity_1d, liquidity_7d, daily_vol_7d_lookback, daily_vol_30d_lookback"""
#: the default spec's code version: changing it marks every metadata partition stale, so a change
#: must be deliberate (a new SPEC_FORMAT or a new default spec), never a side effect
DEFAULT_VERSION = "e5ffcda364d91936"

T0 = datetime(2025, 1, 1)


# --------------------------------------------------------------------------------- specs
def non_decomposable_spec(returns_interval="10m", interval="2h") -> MetadataSpec:
    return MetadataSpec(
        index={
            timedelta(hours=6): [
                pl.col("high").max().alias("high_6h"),
                (col("close") - col("open")).abs().sum().alias("abs_moves_6h"),
                n_rows().alias("active_buckets_6h"),
            ],
            timedelta(days=2): [pl.col("volume_quote").median().alias("median_vol_2d")],
        },
        returns={timedelta(hours=12): [pl.col("return").abs().max().alias("max_abs_return_12h"), col("return").var().alias("var_12h")]},
        quantiles=["high_6h", "active_buckets_6h"],
        interval=interval,
        returns_interval=returns_interval,
    )


def index_only_spec(returns_interval="10m", interval="1h") -> MetadataSpec:
    return MetadataSpec(
        index={"1d": [col("trade_count").sum().alias("tc_1d"), col("volume_quote").mean().alias("mean_vq_1d")]},
        returns={},
        quantiles=pl.col("tc_1d"),
        interval=interval,
        returns_interval=returns_interval,
    )


SPECS = {
    "default": lambda: default_metadata("10m"),
    "user_spec": lambda: user_spec.spec("10m", "1h"),
    "non_decomposable": non_decomposable_spec,
    "no_returns_windows": index_only_spec,
}


def grid_frame(rows: list[tuple[str, datetime, float]]) -> pl.DataFrame:
    """Grid rows (symbol, last_trade_time, volume_quote) with every grid column."""
    n = len(rows)
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "date": [r[1].date() for r in rows],
            "time": [r[1].replace(second=0, microsecond=0) for r in rows],
            "peg_symbol": ["USDT"] * n,
            "open": [10.0] * n,
            "high": [11.0 + r[2] for r in rows],
            "low": [9.0] * n,
            "close": [10.5] * n,
            "volume_base": [1.0] * n,
            "volume_quote": [r[2] for r in rows],
            "trade_count": pl.Series([2] * n, dtype=pl.UInt32),
            "last_trade_time": [r[1] for r in rows],
            "taker_buy_volume_quote": [0.5] * n,
            "taker_sell_volume_quote": [0.5] * n,
            "vwap_taker_buy": [10.0] * n,
            "vwap_taker_sell": [10.0] * n,
            "vwap_total_by_base": [10.0] * n,
            "taker_buy_volume_base": [0.25] * n,
            "taker_sell_volume_base": [0.75] * n,
        },
        schema=GRID_SCHEMA,
    )


def returns_frame(rows: list[tuple[str, datetime, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "date": [r[1].date() for r in rows],
            "returns_grid_time": [r[1] for r in rows],
            "max_tick_to_query_lag": [timedelta(seconds=5)] * len(rows),
            "return": [r[2] for r in rows],
        },
        schema=RETURNS_SCHEMA,
    )


def late_only_grid() -> pl.DataFrame:
    """A symbol whose only trades on day 1 fall after the day's last grid time (23:00), and
    that trades again on day 3: metadata of day 1 are empty, day 2 has rows."""
    return grid_frame(
        [
            ("AAA", T0 + timedelta(hours=23, minutes=30), 5.0),
            ("BBB", T0 + timedelta(hours=23, minutes=40), 7.0),
            ("AAA", T0 + timedelta(days=2, hours=3), 1.0),
        ]
    )


def late_only_returns() -> pl.DataFrame:
    return returns_frame([("AAA", T0 + timedelta(hours=23, minutes=10 * k), 0.01 * k) for k in range(6)])


# ------------------------------------------------------------------------------- schema
@pytest.mark.parametrize("name", list(SPECS))
def test_every_metadata_frame_has_the_spec_schema_empty_or_not(name):
    spec = SPECS[name]()
    schema = metadata_schema(spec)
    assert list(schema)[:3] == ["symbol", "grid_time", "last_trade_time"]
    assert list(schema)[3:] == spec.index_columns + spec.returns_columns + [f"{c}_q" for c in spec.quantile_columns]
    grid, rets = late_only_grid(), late_only_returns()
    day1 = compute_metadata(grid, rets, spec, T0.date(), T0.date() + timedelta(days=1))
    day2 = compute_metadata(grid, rets, spec, T0.date() + timedelta(days=1), T0.date() + timedelta(days=2))
    assert day1.height == 0 and day2.height > 0
    for frame in (day1, day2):
        assert isinstance(frame.schema["symbol"], pl.Enum)
        assert frame.schema == metadata_schema(spec, frame.schema["symbol"])
        assert frame.columns == list(schema)
    # the pure function over partials (as the asset calls it), for an empty day
    iplan, rplan = compile_plan(spec.index), compile_plan(spec.returns)
    g = grid.lazy().filter(pl.col("last_trade_time") < T0 + timedelta(days=1))
    ip = partials(g, iplan, "last_trade_time", spec.interval, last_time=True)
    rp = partials(rets.lazy(), rplan, "returns_grid_time", spec.interval)
    empty = metadata_from_partials(
        ip,
        rp,
        spec,
        T0.date(),
        T0.date() + timedelta(days=1),
        grid_schema=GRID_SCHEMA,
        returns_schema=RETURNS_SCHEMA,
        raw_grid=g if iplan.generic else None,
        raw_returns=rets.lazy() if rplan.generic else None,
    )
    assert empty.height == 0 and empty.schema == metadata_schema(spec, empty.schema["symbol"])
    # no partials at all (a day before any data)
    none = metadata_from_partials(
        ip.clear(),
        rp.clear(),
        spec,
        T0.date(),
        T0.date() + timedelta(days=1),
        grid_schema=GRID_SCHEMA,
        returns_schema=RETURNS_SCHEMA,
        raw_grid=g.clear(),
        raw_returns=rets.lazy().clear(),
    )
    assert none.height == 0 and none.schema == metadata_schema(spec, none.schema["symbol"])


@pytest.mark.parametrize("name", list(SPECS))
def test_a_store_built_one_day_at_a_time_reads_back_as_one_dataset(name, tmp_path):
    spec = SPECS[name]()
    grid, rets = late_only_grid(), late_only_returns()
    days = [T0.date() + timedelta(days=k) for k in range(4)]
    frames = {d: compute_metadata(grid, rets, spec, d, d + timedelta(days=1)) for d in days}
    assert frames[days[0]].height == 0 and frames[days[1]].height > 0  # an empty day first, then rows
    # plain polars: one parquet file per day in a hive layout, read back with one glob
    for d, frame in frames.items():
        folder = tmp_path / "plain" / f"date={d.isoformat()}"
        folder.mkdir(parents=True)
        frame.with_columns(pl.col("symbol").cast(pl.String)).write_parquet(folder / "part-0.parquet")
    back = pl.scan_parquet(str(tmp_path / "plain" / "*" / "*.parquet"), hive_partitioning=True).collect()
    assert back.height == sum(f.height for f in frames.values())
    assert back.drop("date").schema == metadata_schema(spec)  # symbol stored as strings
    # the store's own writer and reader (what the IO manager does)
    for d, frame in frames.items():
        write_partition(frame, tmp_path / "store", "metadata", d)
    stored = scan_days(tmp_path / "store", "metadata", days).collect()
    assert stored.height == back.height
    assert stored.schema == metadata_schema(spec, stored.schema["symbol"])


def test_the_schema_follows_polars_dtypes_of_each_metric():
    spec = MetadataSpec(
        index={
            "1d": [
                col("trade_count").sum().alias("tc"),
                n_rows().alias("n"),
                (col("volume_quote") > 1).sum().alias("big"),
                (col("volume_quote") > 1).mean().alias("share_big"),
                pl.col("trade_count").max().alias("tc_max"),
            ]
        },
        returns={"1d": [col("return").count().alias("cnt")]},
        quantiles=["tc", "n"],
    )
    schema = metadata_schema(spec)
    assert [schema[c] for c in ("tc", "n", "big", "share_big", "tc_max", "cnt", "tc_q", "n_q")] == [
        pl.UInt32,
        pl.UInt32,
        pl.UInt32,
        pl.Float64,
        pl.UInt32,
        pl.UInt32,
        pl.Float64,
        pl.Float64,
    ]
    got = compute_metadata(late_only_grid(), late_only_returns(), spec, T0.date() + timedelta(days=1), T0.date() + timedelta(days=2))
    assert got.height > 0 and got.schema == metadata_schema(spec, got.schema["symbol"])


# ----------------------------------------------------------------------- the vocabulary
def test_default_spec_is_written_in_the_vocabulary_and_stays_on_the_fast_path():
    spec = default_metadata("10m")
    for side in (spec.index, spec.returns):
        assert all(isinstance(e, MetricExpr) for exprs in side.values() for e in exprs)
        plan = compile_plan(side)
        assert plan.fast and not plan.generic
        assert all(o.rebuilt is not None and o.node is not None for o in plan.outputs)
    # no raw rows needed: the partials alone give the metadata
    grid, rets = late_only_grid(), late_only_returns()
    ip = partials(grid, compile_plan(spec.index), "last_trade_time", spec.interval, last_time=True)
    rp = partials(rets, compile_plan(spec.returns), "returns_grid_time", spec.interval)
    out = metadata_from_partials(
        ip, rp, spec, T0.date() + timedelta(days=1), T0.date() + timedelta(days=2), grid_schema=GRID_SCHEMA, returns_schema=RETURNS_SCHEMA
    )
    assert out.height > 0


def test_default_spec_version_is_pinned():
    spec = default_metadata("10m", "1h")
    assert spec.description == DEFAULT_DESCRIPTION
    assert spec.version == DEFAULT_VERSION
    assert default_metadata("10m").version == default_metadata(timedelta(minutes=10), timedelta(hours=1)).version
    assert default_metadata("5m").version != spec.version and default_metadata("10m", "2h").version != spec.version


def test_versions_never_use_polars_serialization(monkeypatch):
    """A polars upgrade that changes (or breaks) expression serialization changes nothing."""
    want = {name: make().version for name, make in SPECS.items()}

    def broken(*args, **kwargs):
        raise AssertionError("polars' serialized expression format must not be used")

    monkeypatch.setattr(pl.Expr, "deserialize", broken)
    monkeypatch.setattr(type(pl.col("x").meta), "serialize", broken)
    monkeypatch.setattr(pl.Expr, "__getstate__", broken)
    for name, make in SPECS.items():
        spec = make()
        assert spec.version == want[name]
        compile_plan(spec.index), compile_plan(spec.returns)
        copy.deepcopy(default_metadata("10m").index)  # copies rebuild from the owned tree
    grid, rets = late_only_grid(), late_only_returns()
    assert compute_metadata(grid, rets, default_metadata("10m"), T0.date() + timedelta(days=1), T0.date() + timedelta(days=2)).height > 0


def test_changing_any_part_of_a_spec_changes_its_version():
    base = default_metadata("10m")
    variants = [
        MetadataSpec(
            index=base.index, returns=base.returns, quantiles=pl.col("^liquidity.*$"), interval=base.interval, returns_interval=base.returns_interval
        ),
        MetadataSpec(
            index=base.index,
            returns={**base.returns, timedelta(days=7): [col("return").std(ddof=0).alias("daily_vol_7d_lookback")]},
            quantiles=base.quantiles,
        ),
        MetadataSpec(index={timedelta(days=2): base.index[timedelta(days=1)]}, returns=base.returns, quantiles=base.quantiles),
        MetadataSpec(index={timedelta(days=1): [(col("volume_quote") * 1.0).sum().alias("liquidity_1d")]}, returns={}, quantiles=None),
        MetadataSpec(index={timedelta(days=1): [col("volume_quote").sum().alias("liquidity_1d")]}, returns={}, quantiles=None),
        MetadataSpec(index={timedelta(days=1): [col("volume_quote").sum().alias("liq_1d")]}, returns={}, quantiles=None),
    ]
    versions = [base.version, *[v.version for v in variants]]
    assert len(set(versions)) == len(versions)


def test_plain_polars_forms_of_the_vocabulary_are_recognised_without_serialization():
    owned = [
        col("volume_quote").sum().alias("a"),
        ((col("taker_buy_volume_base") - col("taker_sell_volume_base")).sum() / col("volume_base").sum()).alias("b"),
        (col("return").std() * 12.0).alias("c"),
        (col("close") - col("open")).abs().sum().alias("d"),
        n_rows().alias("e"),
        col("volume_quote").log().std().alias("f"),
        when(col("return") > 0).then(col("return")).otherwise(0.0).sum().alias("g"),
    ]
    plain = [
        pl.col("volume_quote").sum().alias("a"),
        ((pl.col("taker_buy_volume_base") - pl.col("taker_sell_volume_base")).sum() / pl.col("volume_base").sum()).alias("b"),
        (pl.col("return").std() * 12.0).alias("c"),
        (pl.col("close") - pl.col("open")).abs().sum().alias("d"),
        pl.len().alias("e"),
        pl.col("volume_quote").log().std().alias("f"),
        pl.when(pl.col("return") > 0).then(pl.col("return")).otherwise(0.0).sum().alias("g"),
    ]
    for o, p in zip(owned, plain, strict=True):
        assert p.meta.eq(o)  # the vocabulary builds exactly the polars expression
        recognised = from_polars(p)
        assert recognised is not None and describe(recognised) == describe(o)
    for p in (
        pl.col("high").max(),
        pl.col("return").abs().max(),
        pl.col("x").filter(pl.col("x") > 0).sum(),
        pl.col("x").sum().round(2),
        pl.col("x").cast(pl.Float64, strict=False).sum(),
        pl.col("x").quantile(0.9),
    ):
        assert from_polars(p) is None  # not in the vocabulary: raw rows
    spec_owned = MetadataSpec(index={"1d": owned[:2] + owned[3:5]}, returns={"7d": [owned[2], owned[6]]}, quantiles=["a"])
    spec_plain = MetadataSpec(index={"1d": plain[:2] + plain[3:5]}, returns={"7d": [plain[2], plain[6]]}, quantiles=pl.col("a"))
    assert spec_owned.version == spec_plain.version
    assert compile_plan(spec_plain.index).fast and compile_plan(spec_plain.returns).fast


def test_vocabulary_expressions_are_polars_expressions_with_the_same_values():
    frame = pl.DataFrame(
        {"x": [1.0, -2.0, None, 4.0, float("nan")], "y": [0.5, 0.0, 1.0, None, 2.0], "k": pl.Series([1, 2, 3, 4, 5], dtype=pl.UInt32)}
    )
    pairs = [
        ((col("x") * col("y") + 1).sum(), (pl.col("x") * pl.col("y") + 1).sum()),
        ((col("x") / col("y")).abs().fill_nan(0.0).mean(), (pl.col("x") / pl.col("y")).abs().fill_nan(0.0).mean()),
        (col("x").fill_null(0.0).clip(-1.0, 1.0).std(ddof=0), pl.col("x").fill_null(0.0).clip(-1.0, 1.0).std(ddof=0)),
        (((col("x") > 0) & col("y").is_not_null()).sum(), ((pl.col("x") > 0) & pl.col("y").is_not_null()).sum()),
        ((col("k") % 2 == 0).mean(), (pl.col("k") % 2 == 0).mean()),
        (col("k").cast(pl.Float64).pow(2).sum().sqrt(), pl.col("k").cast(pl.Float64).pow(2).sum().sqrt()),
        ((-col("x")).exp().log1p().var(), (-pl.col("x")).exp().log1p().var()),
        (2 ** col("k").sum() / lit(3), 2 ** pl.col("k").sum() / pl.lit(3)),
        (col("x").is_nan().sum() + col("x").is_finite().sum(), pl.col("x").is_nan().sum() + pl.col("x").is_finite().sum()),
    ]
    for owned, plain in pairs:
        assert isinstance(owned, MetricExpr)
        assert owned.meta.eq(plain)
        assert frame.select(owned.alias("v")).equals(frame.select(plain.alias("v")))


def test_vocabulary_rejects_what_it_cannot_mean():
    with pytest.raises(ValueError, match="mixes row values"):
        col("a") + col("b").sum()
    with pytest.raises(ValueError, match="row-wise"):
        col("a").sum().sum()
    with pytest.raises(ValueError, match="not an aggregation"):
        MetadataSpec(index={"1d": [col("a").alias("a")]}, returns={})
    with pytest.raises(ValueError, match="quantiles must select columns"):
        MetadataSpec(index={"1d": [col("a").sum().alias("a")]}, returns={}, quantiles=pl.col("a") * 2)
    with pytest.raises(ValueError, match="do not select"):
        MetadataSpec(index={"1d": [col("a").sum().alias("a")]}, returns={}, quantiles=["b"])
    with pytest.raises(TypeError):
        lit("a")
    # leaving the vocabulary gives a plain polars expression (computed on raw rows), never a wrong one
    assert not isinstance(col("a").max(), MetricExpr) and not isinstance(col("a").sum() + pl.col("b").max(), MetricExpr)


def test_specs_copy_and_pickle_with_their_vocabulary():
    spec = default_metadata("10m")
    for clone in (copy.deepcopy(spec), pickle.loads(pickle.dumps(spec))):
        assert clone.version == spec.version
        assert compile_plan(clone.returns).fast


def test_seed_accessors_give_polars_expressions():
    spec = default_metadata("10m")
    frame = pl.DataFrame(schema=GRID_SCHEMA)
    for exprs in spec["by_symbol_index"].values():
        assert frame.select(exprs).columns == [e.meta.output_name() for e in exprs]
    assert spec["accum_returns"] is spec.returns


def test_docstring_examples_run():
    for module in (metadata_module, vocabulary):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 3


def test_pure_module_imports_no_dagster():
    code = "import sys, mnemo_assets.metadata; bad = [m for m in sys.modules if m.split('.')[0] == 'dagster']; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------- user specs and checks
def readme_spec(returns_interval, interval) -> MetadataSpec:
    return MetadataSpec(
        index={timedelta(hours=12): [pl.col("volume_quote").sum().alias("liq_12h"), pl.col("high").max().alias("high_12h")]},
        returns={timedelta(days=2): [pl.col("return").abs().max().alias("max_abs_ret_2d")]},
        quantiles=pl.col("liq_12h"),
        interval=interval,
        returns_interval=returns_interval,
    )


@pytest.mark.parametrize("make", [readme_spec, user_spec.spec, non_decomposable_spec, index_only_spec])
def test_user_specs_in_plain_polars_match_the_oracle(make):
    spec = make("10m", "2h")
    rows, rets = [], []
    for k in range(4 * 24 * 6):
        t = T0 + timedelta(minutes=10 * k, seconds=7)
        for s, f in (("AAA", 1.0), ("BBB", 2.5), ("CCC", 0.5)):
            if (k + len(s) * f) % 5 < 3:
                rows.append((s, t, f * ((k * 37) % 11 + 1)))
            rets.append((s, t.replace(second=0), None if k % 17 == 0 else f * (((k * 53) % 13) - 6) / 1000))
    grid, returns = grid_frame(rows), returns_frame(rets)
    lo, hi = date(2025, 1, 2), date(2025, 1, 4)
    got = compute_metadata(grid, returns, spec, lo, hi)
    want = metadata_oracle(grid, returns, spec, lo, hi)
    assert_rows_close(got.with_columns(pl.col("symbol").cast(pl.String)).to_dicts(), want, rel=1e-9)


def test_metadata_violations_live_with_the_pure_functions():
    from mnemo_assets.defs import metadata as defs_metadata

    assert defs_metadata.metadata_violations is metadata_violations
    spec = default_metadata("10m")
    good = compute_metadata(late_only_grid(), late_only_returns(), spec, T0.date() + timedelta(days=1), T0.date() + timedelta(days=3))
    assert metadata_violations(good, spec) == {"quantiles_in_unit_interval": 0, "sample_sizes_bounded": 0, "unique_symbol_grid_time": 0}
    bad = pl.concat([good, good.head(1)]).with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(1.5).otherwise(pl.col("liquidity_1d_q")).alias("liquidity_1d_q"),
        pl.when(pl.int_range(pl.len()) == 2)
        .then(7 * 144 + 1)
        .otherwise(pl.col("vol_ssize_7d_lookback"))
        .cast(pl.UInt32)
        .alias("vol_ssize_7d_lookback"),
    )
    assert metadata_violations(bad, spec) == {"quantiles_in_unit_interval": 1, "sample_sizes_bounded": 1, "unique_symbol_grid_time": 1}
