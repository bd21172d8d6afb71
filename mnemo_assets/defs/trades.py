"""Trades: one daily-partitioned asset per market holding every configured peg.

Pairs are fetched (checksums verified), parsed one file at a time and staged in
``(symbol, peg_symbol, time, trade_id)`` order, one row group per pair (symbol-clustered, so
readers prune by symbol and a grid streams per symbol). The staged day is audited before it
replaces the stored one.
"""

from datetime import date

import polars as pl
from dagster import AssetExecutionContext, DailyPartitionsDefinition, DataVersion, asset

from mnemo_assets.binance.parse import TRADES_SCHEMA
from mnemo_assets.binance.trades import archive_version, fetch_day, read_day
from mnemo_assets.config import MarketSettings
from mnemo_assets.defs.automation import newest_day_from_archive
from mnemo_assets.defs.checks import DayAudit, check_specs
from mnemo_assets.defs.keys import OWNERS, group, trades_key
from mnemo_assets.defs.partitions import backfill_policy
from mnemo_assets.defs.resources import ArchiveResource, StoreResource
from mnemo_assets.storage.io_manager import DATASET_KEY, table_schema
from mnemo_assets.storage.layout import trades_dataset
from mnemo_assets.storage.parquet import Batches

TRADES_CODE_VERSION = "2"

TRADES_DESCRIPTIONS = {
    "symbol": "base asset (BTC; delivery contracts keep their expiry: BTC_250328)",
    "peg_symbol": "quote asset (USDT)",
    "trade_id": "the exchange's trade id (contiguous per pair)",
    "price": "trade price",
    "qty": "size in base units (COIN-M: the file's base_qty)",
    "quote_qty": "size in quote units (COIN-M: contracts × contract size, USD)",
    "time": "trade time, UTC, microseconds",
    "is_buyer_maker": "true when the taker sold",
}

TRADES_CHECKS = {
    "positive_prices_and_sizes": "price > 0, qty > 0 and quote_qty > 0",
    "finite_values": "price, qty and quote_qty are finite (no NaN or inf)",
    "unique_trade_ids": "one row per (pair, trade_id)",
    "times_in_day": "every trade time lies in the partition's day",
}


def trades_violations(frame: pl.DataFrame, day: date) -> dict[str, int]:
    """Rows of one pair's normalised trades breaking :data:`TRADES_CHECKS` (0 = passed)."""
    values = [pl.col(c) for c in ("price", "qty", "quote_qty")]
    row = frame.select(
        pl.any_horizontal(v <= 0 for v in values).sum().alias("positive_prices_and_sizes"),
        pl.any_horizontal(v.is_nan() | v.is_infinite() for v in values).sum().alias("finite_values"),
        (pl.len() - pl.struct("symbol", "peg_symbol", "trade_id").n_unique()).alias("unique_trade_ids"),
        (pl.col("time").dt.date() != day).sum().alias("times_in_day"),
    ).row(0, named=True)
    return {k: int(v or 0) for k, v in row.items()}


def build_trades_asset(
    market: str, settings: MarketSettings, partitions_def: DailyPartitionsDefinition, days_per_batch: int,
    archive_cron: str = "15 * * * *",
):
    pegs = settings.pegs
    key = trades_key(market)
    dataset = trades_dataset(market)

    @asset(
        key=key,
        partitions_def=partitions_def,
        backfill_policy=backfill_policy(days_per_batch),
        io_manager_key="parquet_io_manager",
        group_name=group(market),
        kinds={"polars", "parquet"},
        code_version=TRADES_CODE_VERSION,
        pool="archive",
        automation_condition=newest_day_from_archive(archive_cron),
        owners=OWNERS,
        description=(
            f"Normalised Binance {market} trades of pegs {', '.join(pegs)} for one UTC day, "
            "parsed from the archive's daily zips (checksums verified)."
        ),
        metadata={DATASET_KEY: dataset, "dagster/column_schema": table_schema(TRADES_SCHEMA, TRADES_DESCRIPTIONS)},
        check_specs=check_specs(key, TRADES_CHECKS, partitions_def),
    )
    def _trades(context: AssetExecutionContext, archive: ArchiveResource, store: StoreResource):
        source = archive.source()
        days = [date.fromisoformat(k) for k in context.partition_keys]
        context.log.info(f"{market} trades for {days[0]}..{days[-1]} from {source.describe()}")
        audit = DayAudit(context, key, dataset, store.base_dir, TRADES_CHECKS, TRADES_SCHEMA)
        all_files = []
        day_versions: dict[str, str] = {}
        for day in days:
            files = sorted(fetch_day(source, market, pegs, day, settings.contracts), key=lambda f: f.pair)
            all_files += files
            day_versions[day.isoformat()] = archive_version(files)
            totals = dict.fromkeys(TRADES_CHECKS, 0)

            def batches(files=files, day=day, totals=totals):
                frames = {f.pair: f for f in files}
                for frame in read_day(frames.values(), pegs):
                    frame = frame.sort("time", "trade_id")
                    for name, count in trades_violations(frame, day).items():
                        totals[name] += count
                    yield frame

            # symbol-clustered: pairs in (symbol, peg) order
            files.sort(key=lambda f: _symbol_order(f.pair, market, pegs))
            audit.stage(day, Batches(TRADES_SCHEMA, batches()))
            audit.record(day, totals, {"archive_files": len(files)})
        # the archive files' checksums are the data version: unchanged input, unchanged version
        yield from audit.outcome(
            data_version=DataVersion(archive_version(all_files)),
            day_versions=day_versions,
            code_version=TRADES_CODE_VERSION,
            metadata={"source": source.describe(), "pegs": ", ".join(pegs), "archive_files": len(all_files)},
        )

    return _trades


def _symbol_order(pair: str, market: str, pegs) -> tuple[str, str]:
    from mnemo_assets.binance.parse import split_pair

    split = split_pair(pair, market, pegs)
    return (split[0], split[1]) if split else (pair, "")
