"""Last-trade grids: one daily-partitioned asset per (market, peg, interval), checks included."""


from datetime import date, timedelta

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    DailyPartitionsDefinition,
    Output,
    asset,
)

from mnemo_assets.defs.automation import when_inputs_ready
from mnemo_assets.defs.checks import CheckLedger, check_specs
from mnemo_assets.defs.keys import OWNERS, grid_key, group, trades_key
from mnemo_assets.defs.lineage import grid_lineage
from mnemo_assets.intervals import day_start
from mnemo_assets.grids import GRID_SCHEMA, grid_violations, last_trade_grid, trade_totals
from mnemo_assets.storage.io_manager import DATASET_KEY, table_schema
from mnemo_assets.storage.layout import grid_dataset

GRID_CODE_VERSION = "1"

GRID_CHECKS: dict[str, str] = {
    "unique_symbol_time": "one row per (symbol, time)",
    "price_bounds": "low <= open, close and every vwap <= high",
    "non_negative_volumes": "every volume >= 0",
    "trade_count_positive": "trade_count >= 1",
    "last_trade_time_in_bucket": "time <= last_trade_time < time + interval",
    "date_matches_time": "date is the date of time",
    "nothing_lost": "Σ trade_count and Σ volume_base equal the trades partition's totals for the peg",
}


def build_grid_asset(market: str, peg: str, interval: str, partitions_def: DailyPartitionsDefinition, days_per_batch: int):
    key = grid_key(market, peg, interval)

    @asset(
        key=key,
        ins={"trades": AssetIn(trades_key(market))},
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=days_per_batch),
        io_manager_key="parquet_io_manager",
        group_name=group(market),
        kinds={"polars", "parquet"},
        code_version=GRID_CODE_VERSION,
        automation_condition=when_inputs_ready(days=2),
        description=f"Last-trade grid of {market} {peg} pairs at {interval}: one row per symbol and bucket with trades.",
        owners=OWNERS,
        metadata={
            DATASET_KEY: grid_dataset(market, interval, peg),
            "dagster/column_schema": table_schema(GRID_SCHEMA),
            "dagster/column_lineage": grid_lineage(trades_key(market)),
        },
        check_specs=check_specs(key, GRID_CHECKS, partitions_def),
    )
    def _grid(context: AssetExecutionContext, trades: pl.LazyFrame):
        days = [date.fromisoformat(k) for k in context.partition_keys]
        ledger = CheckLedger(key, GRID_CHECKS)

        def per_day():
            for day in days:
                start = day_start(day)
                day_trades = trades.filter(
                    (pl.col("peg_symbol") == peg) & (pl.col("time") >= start) & (pl.col("time") < start + timedelta(days=1))
                )
                grid = last_trade_grid(day_trades, interval).collect()
                violations = grid_violations(grid, interval)
                n_trades, volume = trade_totals(day_trades)
                total_count = int(grid.get_column("trade_count").sum() or 0)
                total_volume = float(grid.get_column("volume_base").sum() or 0.0)
                lost = total_count != n_trades or abs(total_volume - volume) > 1e-9 * max(abs(volume), 1.0)
                violations["nothing_lost"] = int(lost)
                ledger.record(day.isoformat(), violations)
                yield day.isoformat(), grid

        yield Output(per_day())
        yield from ledger.results(context)

    return _grid
