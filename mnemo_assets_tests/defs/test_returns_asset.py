"""The gridded-returns asset: D−1..D+1 windows, checks, and partitions equal one computation over all days."""

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from mnemo_assets.config import MarketSettings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.defs.planning import batches, plan, requested_days, store_listing
from mnemo_assets.returns import gridded_returns
from mnemo_assets.storage.layout import grid_dataset, returns_dataset
from mnemo_assets.storage.parquet import existing_days, scan_days
from mnemo_assets_tests.defs.conftest import run_days, small_settings
from mnemo_assets_tests.oracles import assert_rows_close

RET = AssetKey(["binance", "spot", "usdt", "spot_usdt_ret_10m"])
GRID = AssetKey(["binance", "spot", "usdt", "spot_usdt_grid_5s"])
TRADES = AssetKey(["binance", "spot", "spot_trades"])


def spot_only(root):
    s = small_settings(root)
    return s.model_copy(update={"markets": {"spot": MarketSettings(pegs=("USDT",))}})


def mat(settings, selection, start, end, instance):
    d = build_definitions(settings)
    tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
    return materialize(list(d.assets), selection=selection, tags=tags, resources=d.resources, instance=instance, raise_on_error=False)


def test_partitions_equal_one_computation_over_all_days_and_checks_pass(data_root):
    settings = spot_only(data_root)
    instance = DagsterInstance.ephemeral()
    assert mat(settings, [TRADES, GRID], "2024-12-30", "2025-01-03", instance).success
    # one day alone, then a batch of two: same rows as one pass over all days
    r1 = mat(settings, [RET], "2024-12-31", "2024-12-31", instance)
    r2 = mat(settings, [RET], "2025-01-01", "2025-01-02", instance)
    assert r1.success and r2.success
    checks = r1.get_asset_check_evaluations() + r2.get_asset_check_evaluations()
    assert all(c.passed for c in checks)
    assert {(c.check_name, c.partition) for c in checks if c.partition} == {("invariants", d) for d in ("2024-12-31", "2025-01-01", "2025-01-02")}
    assert all(
        set(c.metadata["details"].value) == {"row_count", "lags_non_negative", "null_iff_mark_missing_or_stale"} for c in checks if c.partition
    )
    days = [date(2024, 12, 30) + timedelta(days=k) for k in range(5)]
    grid = scan_days(data_root, grid_dataset("spot", "5s", "USDT"), days).collect()
    full = gridded_returns(grid, date(2024, 12, 31), date(2025, 1, 3), "10m")
    stored = scan_days(data_root, returns_dataset("spot", "10m", "USDT"), days[1:4]).collect()
    assert stored.height == full.height > 0
    as_str = pl.col("symbol").cast(pl.String)
    assert_rows_close(stored.with_columns(as_str).sort("symbol", "returns_grid_time").to_dicts(), full.with_columns(as_str).to_dicts())
    # rows = |universe(D)| × 144 per day
    per_day = stored.group_by("date").agg(pl.len(), pl.col("symbol").n_unique()).sort("date")
    assert (per_day["len"] == per_day["symbol"] * 144).all()


def test_missing_next_day_grid_is_a_clear_error(data_root):
    settings = spot_only(data_root)
    instance = DagsterInstance.ephemeral()
    assert mat(settings, [TRADES, GRID], "2024-12-31", "2025-01-01", instance).success
    result = mat(settings, [RET], "2025-01-01", "2025-01-01", instance)
    assert not result.success
    assert "2025-01-02" in str(result.failure_data_for_node("binance__spot__usdt__spot_usdt_ret_10m").error)
    assert existing_days(data_root, returns_dataset("spot", "10m", "USDT")) == []


def test_newest_partition_is_not_computed_without_its_next_day(data_root):
    """Dagster clamps D+1 away at the last partition; the asset notices instead of computing without it."""
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    settings = spot_only(data_root).model_copy(update={"start_date": yesterday - timedelta(days=3)})
    instance = DagsterInstance.ephemeral()
    lo, hi = (yesterday - timedelta(days=1)).isoformat(), yesterday.isoformat()
    assert mat(settings, [TRADES, GRID], lo, hi, instance).success
    result = mat(settings, [RET], hi, hi, instance)
    assert not result.success
    err = str(result.failure_data_for_node("binance__spot__usdt__spot_usdt_ret_10m").error)
    assert "not a partition yet" in err and (yesterday + timedelta(days=1)).isoformat() in err


def test_planner_waits_for_windows_and_runs_the_rest(data_root, instance):
    settings = spot_only(data_root)
    graph = build_definitions(settings).resolve_asset_graph()
    days = [date(2024, 12, 1) + timedelta(days=k) for k in range(4)]
    summary = run_days(settings, [TRADES, GRID, RET], days, instance)
    assert summary.ok
    # 12-01 is the first partition: its D−1 is before the data and may be absent; 12-04 waits for 12-05
    assert existing_days(data_root, returns_dataset("spot", "10m", "USDT")) == days[:3]
    ret = summary.assets[RET.to_user_string()]
    assert (ret.planned, ret.materialized) == (3, 3)
    assert "binance/spot/usdt/spot_usdt_grid_5s of 2024-12-05" in ret.waiting[date(2024, 12, 4)]
    # missing-only: nothing to do the second time
    again = plan(
        graph, requested_days([TRADES, GRID, RET], days), store_listing(graph, str(data_root)), settings.start_date, missing_only=[TRADES, GRID, RET]
    )
    assert again.total == 0 and again.waiting[RET] == {date(2024, 12, 4): ret.waiting[date(2024, 12, 4)]}


@pytest.mark.parametrize("size,expected", [(1, 3), (2, 2), (30, 1)])
def test_batches(size, expected):
    days = [date(2025, 1, d) for d in (1, 2, 3)]
    assert len(batches(days, size)) == expected
