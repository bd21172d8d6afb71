"""Last-trade grids: one daily-partitioned asset per (market, peg, interval), checks included."""

import os
from collections.abc import Iterator
from datetime import date, timedelta

import polars as pl
from dagster import AssetExecutionContext, AssetIn, DailyPartitionsDefinition, asset
from upath import UPath

from mnemo_assets.binance.parse import TRADES_SCHEMA
from mnemo_assets.defs.automation import when_inputs_ready
from mnemo_assets.defs.checks import DayAudit, check_specs, grouped
from mnemo_assets.defs.keys import OWNERS, grid_key, group, trades_key
from mnemo_assets.defs.lineage import grid_lineage
from mnemo_assets.defs.resources import StoreResource
from mnemo_assets.defs.partitions import backfill_policy
from mnemo_assets.clustered import grid_from_parquet
from mnemo_assets.grids import GRID_CHECKS, GRID_DESCRIPTIONS, GRID_INVARIANTS, GRID_SCHEMA, grid_checks, last_trade_grid
from mnemo_assets.intervals import day_start
from mnemo_assets.storage.io_manager import DATASET_KEY, table_schema
from mnemo_assets.storage.layout import grid_dataset, partition_file, trades_dataset
from mnemo_assets.storage.parquet import Batches, symbol_batches

GRID_CODE_VERSION = "1"
CHECK_GROUPS = {"invariants": list(GRID_INVARIANTS), "nothing_lost": ["nothing_lost"]}
#: trades rows per batch of whole symbols (one symbol with more trades is one batch)
GRID_BATCH_ROWS = 2_000_000


def local_file(root: str, relative: str) -> str | None:
    """The plain path of ``root / relative`` when the root is a local folder and the file
    exists, else ``None`` (object stores take the general path)."""
    protocol = getattr(UPath(root), "protocol", "")
    if protocol not in ("", "file", "local"):
        return None
    path = os.path.join(str(UPath(root).path), relative)
    return path if os.path.isfile(path) else None


def day_grid(trades: pl.LazyFrame, root: str, market: str, peg: str, interval: str, day: date) -> tuple[pl.DataFrame, pl.LazyFrame]:
    """``(grid of the peg's trades on day, those trades)``. The stored (already verified) trades
    file of the day is read directly by :func:`grid_from_parquet` when it is on a local disk
    (symbol-clustered files stream pair by pair); otherwise the general path over the input."""
    start = day_start(day)
    end = start + timedelta(days=1)
    day_trades = trades.filter((pl.col("peg_symbol") == peg) & (pl.col("time") >= start) & (pl.col("time") < end))
    path = local_file(root, partition_file(trades_dataset(market), day))
    if path is None:
        return last_trade_grid(day_trades, interval).collect(), day_trades
    sym = trades.collect_schema()["symbol"]
    enum = sym if isinstance(sym, pl.Enum) else None
    return grid_from_parquet(path, interval, peg=peg, start=start, end=end, enum=enum), day_trades


def _grids(root: str, trades: str, day: date, in_day: pl.Expr, interval: str, counts: dict[str, int]) -> Iterator[pl.DataFrame]:
    """The grid of one day's trades, a batch of whole symbols at a time, in symbol order (what
    one computation over the day gives: no symbol spans two batches); adds each batch's
    :func:`grid_checks` to ``counts`` (``nothing_lost``: 1 if any batch lost something)."""
    seen = False
    for batch in symbol_batches(root, trades, day, GRID_BATCH_ROWS):
        day_trades = batch.filter(in_day)
        del batch
        if day_trades.height == 0:
            continue
        seen = True
        grid = last_trade_grid(day_trades, interval)
        _merge(counts, grid_checks(grid, day_trades, interval))
        del day_trades
        yield grid
    if not seen:  # no trade of this peg: the checks of an empty grid
        empty = pl.DataFrame(schema=TRADES_SCHEMA)
        _merge(counts, grid_checks(last_trade_grid(empty, interval), empty, interval))


def _merge(counts: dict[str, int], batch: dict[str, int]) -> None:
    for name, n in batch.items():
        counts[name] = max(counts.get(name, 0), n) if name == "nothing_lost" else counts.get(name, 0) + n


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
            day = date.fromisoformat(partition)
            if local_file(store.base_dir, partition_file(trades_dataset(market), day)) is not None:
                # the stored, symbol-clustered day streamed pair by pair (memory: a slice)
                grid, day_trades = day_grid(trades, store.base_dir, market, peg, interval, day)
                audit.stage(partition, grid)
                audit.record(partition, *grouped(grid_checks(grid, day_trades, interval), CHECK_GROUPS))
                continue
            # an object store: the day's file read a batch of whole symbols at a time (every day
            # was verified by the IO manager; memory is bounded by a batch, not by the day)
            start = day_start(day)
            in_day = (pl.col("peg_symbol") == peg) & (pl.col("time") >= start) & (pl.col("time") < start + timedelta(days=1))
            counts: dict[str, int] = {}
            audit.stage(partition, Batches(GRID_SCHEMA, _grids(store.base_dir, trades_dataset(market), day, in_day, interval, counts)))
            audit.record(partition, *grouped(counts, CHECK_GROUPS))
        yield from audit.outcome()

    return _grid
