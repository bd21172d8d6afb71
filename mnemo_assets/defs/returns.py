"""Gridded returns: one daily-partitioned asset per (market, peg, returns interval).

Partition D reads the grid of D−1 to D+1 (marks near midnight reach both sides) and is not
computed before D+1's grid exists.
"""

from datetime import date, timedelta

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    DailyPartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
)

from mnemo_assets.binance.datasets import ParquetDataset, last_rows_before_day
from mnemo_assets.defs.automation import when_inputs_ready
from mnemo_assets.defs.checks import DayAudit, check_specs, grouped
from mnemo_assets.defs.keys import OWNERS, grid_key, group, returns_key
from mnemo_assets.defs.lineage import returns_lineage
from mnemo_assets.defs.partitions import backfill_policy
from mnemo_assets.defs.resources import StoreResource
from mnemo_assets.defs.windows import require_window
from mnemo_assets.intervals import to_micros
from mnemo_assets.returns import (
    RETURNS_CHECKS,
    RETURNS_DESCRIPTIONS,
    RETURNS_INVARIANTS,
    RETURNS_SCHEMA,
    gridded_returns,
    returns_violations,
)
from mnemo_assets.storage.io_manager import DATASET_KEY, table_schema
from mnemo_assets.storage.layout import grid_dataset, returns_dataset

RETURNS_CODE_VERSION = "1"


def build_returns_asset(market: str, peg: str, interval: str, grid_interval: str, partitions_def: DailyPartitionsDefinition, days_per_batch: int):
    key = returns_key(market, peg, interval)
    dataset = returns_dataset(market, interval, peg)
    first = partitions_def.start.date()

    @asset(
        key=key,
        ins={
            "grid": AssetIn(
                grid_key(market, peg, grid_interval),
                partition_mapping=TimeWindowPartitionMapping(start_offset=-1, end_offset=1),
            )
        },
        partitions_def=partitions_def,
        backfill_policy=backfill_policy(days_per_batch),
        io_manager_key="parquet_io_manager",
        group_name=group(market),
        kinds={"polars", "parquet"},
        code_version=RETURNS_CODE_VERSION,
        automation_condition=when_inputs_ready(days=2, skip_newest=True),
        description=(
            f"{interval} forward returns of {market} {peg} symbols on a {interval} grid of query times, "
            f"marks from the {grid_interval} grid (vwap_total_by_base at last_trade_time, tolerance {interval})."
        ),
        owners=OWNERS,
        metadata={
            DATASET_KEY: dataset,
            "dagster/column_schema": table_schema(RETURNS_SCHEMA, RETURNS_DESCRIPTIONS),
            "dagster/column_lineage": returns_lineage(grid_key(market, peg, grid_interval)),
        },
        check_specs=check_specs(key, RETURNS_CHECKS, partitions_def),
    )
    def _returns(context: AssetExecutionContext, grid: pl.LazyFrame, store: StoreResource):
        days = [date.fromisoformat(k) for k in context.partition_keys]
        received = sorted(date.fromisoformat(k) for k in context.asset_partition_keys_for_input("grid"))
        require_window(received, days, before=1, after=1, first=first, what=key.to_user_string())
        # symbol sets per day from the grid files' footers (no data read)
        grids = ParquetDataset(grid_dataset(market, grid_interval, peg), store.base_dir)
        symbols = grids.symbols_by_day(received)
        # stale marks from before the window: last rows of symbols absent on the window's first day
        present = set().union(*symbols.values())
        carry = last_rows_before_day(grids, received[0], present - set(symbols[received[0]]))
        per_day_rows = 86_400_000_000 // to_micros(interval)
        # one computation for the whole run (one sort of the window), split per day
        out = gridded_returns(grid, days[0], days[-1] + timedelta(days=1), interval, carry_in=carry)
        audit = DayAudit(context, key, dataset, store.base_dir, RETURNS_CHECKS, RETURNS_SCHEMA, staging_dir=store.staging_dir)
        for day in days:
            part = out.filter(pl.col("date") == day)
            audit.stage(day, part)
            violations = returns_violations(part, grid, interval)
            violations["row_count"] = int(part.height != len(symbols[day]) * per_day_rows)
            audit.record(day, *grouped(violations, {"invariants": list(RETURNS_INVARIANTS)}))
        # the carry-in's reads, as lineage Dagster cannot express (a stale mark may come from
        # any earlier day; an input over all history would make every day depend on all of it)
        carried_from = [] if carry is None else sorted({t.date().isoformat() for t in carry["last_trade_time"]})
        yield from audit.outcome(
            metadata={"carried_in_symbols": 0 if carry is None else carry.height, "carried_in_from_grid_days": ", ".join(carried_from) or "none"}
        )

    return _returns
