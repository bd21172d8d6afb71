"""The IO manager in real Dagster runs: exact paths, 1 vs N partition loads, range outputs, metadata."""

from datetime import date

import polars as pl
import pytest
from dagster import (
    AssetIn,
    AssetKey,
    BackfillPolicy,
    DagsterInstance,
    DailyPartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
    materialize,
)

from mnemo_assets.storage.io_manager import DATASET_KEY, HiveParquetIOManager
from mnemo_assets.storage.parquet import existing_days

PARTS = DailyPartitionsDefinition(start_date="2024-12-30", end_date="2025-01-10")
UP = "test/up"
DOWN = "test/down"


def frame_for(day: str) -> pl.DataFrame:
    d = date.fromisoformat(day)
    symbols = ["BTC", "ETH"] if d.day % 2 else ["ADA", "BTC", "ZZZ"]
    return pl.DataFrame({"symbol": symbols, "date": [d] * len(symbols), "v": [float(d.day)] * len(symbols)})


@asset(partitions_def=PARTS, metadata={DATASET_KEY: UP}, io_manager_key="io", backfill_policy=BackfillPolicy.multi_run(5))
def up(context):
    if len(context.partition_keys) == 1:
        return frame_for(context.partition_key)
    return pl.concat([frame_for(k) for k in context.partition_keys])  # split per day by the `date` column


seen: dict[str, object] = {}


@asset(
    partitions_def=PARTS,
    metadata={DATASET_KEY: DOWN},
    io_manager_key="io",
    ins={"up": AssetIn(AssetKey("up"), partition_mapping=TimeWindowPartitionMapping(start_offset=-2, end_offset=0))},
)
def down(context, up: pl.LazyFrame):
    seen["type"] = type(up)
    seen["days"] = sorted(up.select("date").unique().collect().to_series().to_list())
    seen["enum"] = up.collect_schema()["symbol"]
    return up.group_by("symbol").agg(pl.col("v").sum()).with_columns(pl.lit(date.fromisoformat(context.partition_key)).alias("date"))


@pytest.fixture
def resources(data_root):
    return {"io": HiveParquetIOManager(base_dir=str(data_root))}


def test_exact_paths_and_metadata(data_root, resources):
    instance = DagsterInstance.ephemeral()
    result = materialize([up], partition_key="2025-01-01", resources=resources, instance=instance)
    assert result.success
    assert (data_root / UP / "date=2025-01-01" / "part-0.parquet").exists()
    mats = result.asset_materializations_for_node("up")
    meta = mats[0].metadata
    assert meta["dagster/row_count"].value == 2
    assert [c.name for c in meta["dagster/column_schema"].schema.columns] == ["symbol", "date", "v"]


def test_range_output_is_split_per_day(data_root, resources):
    tags = {"dagster/asset_partition_range_start": "2024-12-30", "dagster/asset_partition_range_end": "2025-01-03"}
    result = materialize([up], tags=tags, resources=resources, instance=DagsterInstance.ephemeral())
    assert result.success
    assert existing_days(data_root, UP) == [date(2024, 12, 30), date(2024, 12, 31), date(2025, 1, 1), date(2025, 1, 2), date(2025, 1, 3)]
    for day in existing_days(data_root, UP):
        stored = pl.read_parquet(data_root / UP / f"date={day}" / "part-0.parquet")
        assert stored.equals(frame_for(day.isoformat()))


@pytest.mark.parametrize("key,ndays", [("2024-12-30", 1), ("2024-12-31", 2), ("2025-01-05", 3)])
def test_one_or_many_upstream_partitions_load_as_one_lazyframe(data_root, resources, key, ndays):
    instance = DagsterInstance.ephemeral()
    tags = {"dagster/asset_partition_range_start": "2024-12-30", "dagster/asset_partition_range_end": "2025-01-05"}
    assert materialize([up], tags=tags, resources=resources, instance=instance).success
    seen.clear()
    assert materialize([up, down], selection=[down], partition_key=key, resources=resources, instance=instance).success
    assert seen["type"] is pl.LazyFrame
    assert len(seen["days"]) == ndays
    assert isinstance(seen["enum"], pl.Enum)


def test_missing_upstream_partition_fails_with_a_clear_error(data_root, resources):
    instance = DagsterInstance.ephemeral()
    assert materialize([up], partition_key="2025-01-05", resources=resources, instance=instance).success
    result = materialize([up, down], selection=[down], partition_key="2025-01-05", resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    assert not (data_root / DOWN / "date=2025-01-05").exists()
