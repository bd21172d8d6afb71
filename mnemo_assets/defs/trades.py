"""Trades: one daily-partitioned asset per market holding every configured peg."""


from datetime import date

from dagster import AssetExecutionContext, BackfillPolicy, DailyPartitionsDefinition, DataVersion, Output, asset

from mnemo_assets.binance.parse import TRADES_SCHEMA
from mnemo_assets.binance.trades import archive_version, fetch_day, read_day
from mnemo_assets.config import MarketSettings
from mnemo_assets.defs.automation import newest_day_from_archive
from mnemo_assets.defs.keys import OWNERS, group, trades_key
from mnemo_assets.defs.resources import ArchiveResource
from mnemo_assets.storage.io_manager import DATASET_KEY, table_schema
from mnemo_assets.storage.layout import trades_dataset
from mnemo_assets.storage.parquet import Batches

TRADES_CODE_VERSION = "1"


def build_trades_asset(market: str, settings: MarketSettings, partitions_def: DailyPartitionsDefinition, archive_cron: str = "15 * * * *"):
    pegs = settings.pegs

    @asset(
        key=trades_key(market),
        partitions_def=partitions_def,
        # one day per run: the day's data version is its archive files' checksums, whatever the batching
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
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
        metadata={DATASET_KEY: trades_dataset(market), "dagster/column_schema": table_schema(TRADES_SCHEMA)},
    )
    def _trades(context: AssetExecutionContext, archive: ArchiveResource):
        source = archive.source()
        days = [date.fromisoformat(k) for k in context.partition_keys]
        context.log.info(f"{market} trades for {days[0]}..{days[-1]} from {source.describe()}")
        # fetch (and verify) every file first: their checksums are the data version
        files = {d: fetch_day(source, market, pegs, d, settings.contracts) for d in days}
        yield Output(
            ((d.isoformat(), Batches(TRADES_SCHEMA, read_day(files[d], pegs))) for d in days),
            metadata={"source": source.describe(), "pegs": ", ".join(pegs), "archive_files": sum(len(f) for f in files.values())},
            data_version=DataVersion(archive_version(f for fs in files.values() for f in fs)),
        )

    return _trades
