"""Last-trade grids: one daily-partitioned asset per (market, peg, interval), checks included."""

from datetime import date, timedelta

import polars as pl
from dagster import AssetExecutionContext, AssetIn, DailyPartitionsDefinition, asset

from mnemo_assets.clustered import grid_from_parquet
from mnemo_assets.defs.automation import when_inputs_ready
from mnemo_assets.defs.checks import DayAudit, check_specs, grouped
from mnemo_assets.defs.keys import OWNERS, grid_key, group, trades_key
from mnemo_assets.defs.lineage import grid_lineage
from mnemo_assets.defs.partitions import backfill_policy
from mnemo_assets.defs.resources import StoreResource
from mnemo_assets.grids import GRID_CHECKS, GRID_DESCRIPTIONS, GRID_INVARIANTS, GRID_SCHEMA, grid_checks, last_trade_grid
from mnemo_assets.intervals import day_start
from mnemo_assets.storage.io_manager import DATASET_KEY, table_schema
from mnemo_assets.storage.layout import grid_dataset, trades_dataset
from mnemo_assets.storage.parquet import local_copy

GRID_CODE_VERSION = "1"
CHECK_GROUPS = {"invariants": list(GRID_INVARIANTS), "nothing_lost": ["nothing_lost"]}


def day_grid(trades: pl.LazyFrame, root: str, market: str, peg: str, interval: str, day: date) -> tuple[pl.DataFrame, pl.LazyFrame]:
    """``(grid of the peg's trades on day, those trades)``. The day's stored trades file (on an
    object store, its verified local snapshot) streams through :func:`grid_from_parquet`: pair
    by pair in bounded slices when it is symbol-clustered, as the trades asset writes it, so
    memory is bounded by a slice, not by the day. A day not in the store (``trades`` from
    elsewhere) takes the general path over ``trades``."""
    start = day_start(day)
    end = start + timedelta(days=1)
    day_trades = trades.filter((pl.col("peg_symbol") == peg) & (pl.col("time") >= start) & (pl.col("time") < end))
    path = local_copy(root, trades_dataset(market), day)
    if path is None:
        return last_trade_grid(day_trades, interval).collect(), day_trades
    sym = trades.collect_schema()["symbol"]
    enum = sym if isinstance(sym, pl.Enum) else None
    return grid_from_parquet(path, interval, peg=peg, start=start, end=end, enum=enum), day_trades


def build_grid_asset(market: str, peg: str, interval: str, partitions_def: DailyPartitionsDefinition, days_per_batch: int):
    key = grid_key(market, peg, interval)
    dataset = grid_dataset(market, interval, peg)

    @asset(
        key=key,
        ins={"trades": AssetIn(trades_key(market))},
        partitions_def=partitions_def,
        backfill_policy=backfill_policy(days_per_batch),
        io_manager_key="parquet_io_manager",
        group_name=group(market),
        kinds={"polars", "parquet"},
        code_version=GRID_CODE_VERSION,
        automation_condition=when_inputs_ready(days=2),
        description=f"Last-trade grid of {market} {peg} pairs at {interval}: one row per symbol and bucket with trades.",
        owners=OWNERS,
        metadata={
            DATASET_KEY: dataset,
            "dagster/column_schema": table_schema(GRID_SCHEMA, GRID_DESCRIPTIONS),
            "dagster/column_lineage": grid_lineage(trades_key(market)),
        },
        check_specs=check_specs(key, GRID_CHECKS, partitions_def),
    )
    def _grid(context: AssetExecutionContext, trades: pl.LazyFrame, store: StoreResource):
        audit = DayAudit(context, key, dataset, store.base_dir, GRID_CHECKS, GRID_SCHEMA, staging_dir=store.staging_dir)
        for partition in context.partition_keys:
            grid, day_trades = day_grid(trades, store.base_dir, market, peg, interval, date.fromisoformat(partition))
            audit.stage(partition, grid)
            audit.record(partition, *grouped(grid_checks(grid, day_trades, interval), CHECK_GROUPS))
        yield from audit.outcome()

    return _grid
