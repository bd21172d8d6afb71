"""Trades and their data-quality ledger: one daily-partitioned pair of assets per market.

For each day, every configured pair is classified (present, missing, not listed yet, delisted;
pairs stored for the day before count as expected), each present pair's file is fetched
(checksum verified), read and judged alone (bounded memory) by
:func:`~mnemo_assets.binance.quality.read_pair_day`. Clean trades are staged in
``(symbol, peg_symbol, time, trade_id)`` order, one row group per pair (symbol-clustered), and
every pair-day gets a ledger row (``binance/{market}/quality``). If any pair-day is not
publishable (missing, empty, rejected: ERROR), nothing of the day is published and the run
fails naming the files; degraded pair-days (WARN) are published with their reasons.

With ``reconciliation.enabled`` (the default) each present pair's 1m klines file is fetched
with its trades file and every publishable pair-day is reconciled with it
(:class:`~mnemo_assets.binance.quality.KlinesReconciler`, in a worker thread, a chunk of pairs
at a time): the ledger's ``klines_*`` columns, a ``degraded`` status with the reason when it does
not reconcile, and the check ``reconciles_with_klines`` per day, an ERROR that publishes nothing
of the day with ``reconciliation.blocking``, else a WARN.
"""

from collections.abc import Iterator
from dataclasses import replace
from datetime import date

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetOut,
    DailyPartitionsDefinition,
    DataVersion,
    Output,
    multi_asset,
)
from upath import UPath

from mnemo_assets.binance.archive import ArchiveError, ArchiveFile
from mnemo_assets.binance.formats import KLINES, TRADES
from mnemo_assets.binance.klines import PROBLEMS
from mnemo_assets.binance.parse import TRADES_SCHEMA
from mnemo_assets.binance.quality import (
    QUALITY_SCHEMA,
    KlinesReconciler,
    error_row,
    ledger_frame,
    plan_ledger_rows,
    read_pair_day,
)
from mnemo_assets.binance.trades import archive_version, plan_day
from mnemo_assets.config import MarketSettings, ReconciliationSettings
from mnemo_assets.defs.automation import newest_day_from_archive
from mnemo_assets.defs.checks import Check, DayAudit, check_specs
from mnemo_assets.defs.keys import OWNERS, group, quality_key, trades_key
from mnemo_assets.defs.partitions import backfill_policy
from mnemo_assets.defs.resources import ArchiveResource, StoreResource
from mnemo_assets.storage.io_manager import DATASET_KEY, table_schema
from mnemo_assets.storage.layout import quality_dataset, trades_dataset
from mnemo_assets.storage.parquet import Batches, MissingPartitionError, discard, scan_days

TRADES_CODE_VERSION = "3"
#: 4: the klines_* columns
QUALITY_CODE_VERSION = "4"

TRADES_DESCRIPTIONS = {
    "symbol": "base asset (BTC; delivery contracts keep their expiry: BTC_250328)",
    "peg_symbol": "quote asset (USDT)",
    "trade_id": "the exchange's trade id",
    "price": "trade price",
    "qty": "size in base units (COIN-M: the file's base_qty)",
    "quote_qty": "size in quote units (COIN-M: contracts × contract size, USD)",
    "time": "trade time, UTC, microseconds",
    "is_buyer_maker": "true when the taker sold",
}

QUALITY_DESCRIPTIONS = {
    "status": "ok | degraded (published, see reasons) | missing | empty | rejected (not published)",
    "reasons": "every quality fact that applies, with file lines and id ranges",
    "source": "URL or path of the archive file",
    "previous_sha256": "the file's sha256 before the archive re-published it (null otherwise)",
    "missing_id_ranges": "trade-id gaps inside the file (first 100)",
    "out_of_day_rows": "trades outside the file's UTC day",
    "klines_status": "reconciliation with the exchange's 1m klines: ok | mismatch | missing (no klines file) | "
    "unreadable; null: not reconciled (reconciliation off, or the pair-day is not publishable)",
    "klines_source": "URL or path of the 1m klines file",
    "klines_minutes_compared": "minutes holding a kline or one of our trades",
    "klines_minutes_differing": "minutes where anything differs",
    "klines_differences": "minutes differing per field (OHLC, count, the four volumes), minutes with trades only in the "
    "klines / only in ours, kline minutes outside the day",
    "klines_trades_difference": "Σ kline trade counts − our trades (> 0: trades missing from the file)",
    "klines_first_difference": "the first differing minute",
    "klines_problems": "what the differences look like: " + ", ".join(PROBLEMS),
}

RECONCILIATION_CHECK = "reconciles_with_klines"

TRADES_CHECKS = [
    Check(
        "archive_files_usable",
        "every pair expected for the day has a readable archive file with trades, finite and positive values, "
        "no conflicting duplicate ids and no trade outside the day (else nothing of the day is published)",
        blocking=True,
    ),
    Check(
        "archive_quality",
        "no pair-day is degraded (trade-id gaps, dropped identical duplicates, one-sided taker flow, re-published files, "
        "klines that do not reconcile); degraded pair-days are published and listed in the quality ledger",
        blocking=False,
    ),
    Check(
        RECONCILIATION_CHECK,
        "every published pair-day's trades reconcile with the exchange's 1m klines, minute by minute: open, high, low, "
        "close and trade count exactly, base/quote and taker-buy volumes to 8 decimals; a klines file that is missing "
        "or unreadable also fails (see the quality ledger's klines_* columns)",
        blocking=False,
    ),
]


def trades_checks(reconciliation: ReconciliationSettings) -> list[Check]:
    """The trades asset's checks: the reconciliation check blocking as configured, or left out
    when reconciliation is off."""
    checks = [c for c in TRADES_CHECKS if c.name != RECONCILIATION_CHECK]
    if reconciliation.enabled:
        rec = next(c for c in TRADES_CHECKS if c.name == RECONCILIATION_CHECK)
        checks.append(Check(rec.name, rec.description, blocking=reconciliation.blocking))
    return checks


def _stored_pairs(root: str, market: str, day: date) -> list[tuple[str, str]]:
    """``(symbol, peg)`` stored for the day before (what a re-run must not silently drop)."""
    try:
        frame = scan_days(UPath(root), trades_dataset(market), [day]).select(pl.col("symbol").cast(pl.String), "peg_symbol").unique().collect()
    except MissingPartitionError:
        return []
    return [tuple(r) for r in frame.iter_rows()]


def _recorded_checksums(root: str, market: str, day: date) -> dict[str, str]:
    """``{pair: sha256}`` the quality ledger recorded for the day's stored trades."""
    try:
        ledger = scan_days(UPath(root), quality_dataset(market), [day]).filter(pl.col("sha256").is_not_null())
        return dict(ledger.select("pair", "sha256").collect().iter_rows())
    except MissingPartitionError:
        return {}


def build_trades_assets(
    market: str,
    settings: MarketSettings,
    partitions_def: DailyPartitionsDefinition,
    days_per_batch: int,
    archive_cron: str = "15 * * * *",
    reconciliation: ReconciliationSettings | None = None,
):
    pegs = settings.pegs
    reconciliation = reconciliation or ReconciliationSettings()
    checks = trades_checks(reconciliation)
    key, ledger_key = trades_key(market), quality_key(market)
    dataset, ledger_dataset = trades_dataset(market), quality_dataset(market)

    @multi_asset(
        name=f"binance__{market}__trades",
        outs={
            "trades": AssetOut(
                key=key,
                is_required=False,
                io_manager_key="parquet_io_manager",
                code_version=TRADES_CODE_VERSION,
                description=(
                    f"Normalised Binance {market} trades of pegs {', '.join(pegs)} for one UTC day, from the archive's "
                    "daily zips (checksums verified), symbol-clustered."
                ),
                metadata={DATASET_KEY: dataset, "dagster/column_schema": table_schema(TRADES_SCHEMA, TRADES_DESCRIPTIONS)},
                automation_condition=newest_day_from_archive(archive_cron),
                owners=OWNERS,
                group_name=group(market),
                kinds={"polars", "parquet"},
            ),
            "quality": AssetOut(
                key=ledger_key,
                is_required=False,
                io_manager_key="parquet_io_manager",
                code_version=QUALITY_CODE_VERSION,
                description=(
                    f"Data-quality ledger of the {market} archive: one row per (pair, day) ingested, with the source "
                    "file, checksums, id gaps, duplicates, time unit, the reconciliation with the exchange's 1m klines and a "
                    "status (ok, degraded, missing, empty, rejected)."
                ),
                metadata={DATASET_KEY: ledger_dataset, "dagster/column_schema": table_schema(QUALITY_SCHEMA, QUALITY_DESCRIPTIONS)},
                automation_condition=newest_day_from_archive(archive_cron),
                owners=OWNERS,
                group_name=group(market),
                kinds={"polars", "parquet"},
            ),
        },
        partitions_def=partitions_def,
        backfill_policy=backfill_policy(days_per_batch),
        pool="archive",
        can_subset=True,
        check_specs=check_specs(key, checks, partitions_def),
    )
    def _trades(context: AssetExecutionContext, archive: ArchiveResource, store: StoreResource):
        source = archive.source()
        days = [date.fromisoformat(k) for k in context.partition_keys]
        context.log.info(f"{market} trades for {days[0]}..{days[-1]} from {source.describe()}")
        audit = DayAudit(context, key, dataset, store.base_dir, checks, TRADES_SCHEMA, staging_dir=store.staging_dir)
        ledger = DayAudit(context, ledger_key, ledger_dataset, store.base_dir, [], QUALITY_SCHEMA, staging_dir=store.staging_dir)
        datasets = (TRADES, KLINES) if reconciliation.enabled else (TRADES,)
        all_files, day_versions = [], {}
        for day in days:
            rows: list[dict] = []
            problems: list[str] = []
            plan = plan_day(source, market, pegs, day, settings.contracts, expected_pairs=_stored_pairs(store.base_dir, market, day))
            rows += plan_ledger_rows(plan)
            problems += [f"{r['pair']}: {r['reasons'][0]}" for r in rows]
            files: list[ArchiveFile] = []
            klines: dict[str, ArchiveFile | ArchiveError] = {}
            recorded = _recorded_checksums(store.base_dir, market, day)
            for item in sorted(plan.present, key=lambda p: (p.symbol, p.peg)):
                got = source.fetch_datasets(market, item.pair, day, datasets)
                trades_file = got[TRADES]
                if isinstance(trades_file, ArchiveError):
                    rows.append(error_row(market, item.pair, day, trades_file, pegs, source.describe()))
                    problems.append(f"{item.pair}: {trades_file}")
                    continue
                before = recorded.get(item.pair)
                if before is not None and before != trades_file.sha256 and not trades_file.previous_sha256:
                    # the archive re-published this file since it was ingested: record both checksums
                    trades_file = replace(trades_file, previous_sha256=before)
                files.append(trades_file)
                if KLINES in got:
                    klines[item.pair] = got[KLINES]
            all_files += files
            day_versions[day.isoformat()] = archive_version(files)
            reconciler = KlinesReconciler(market, day) if reconciliation.enabled else None

            def batches(files=files, rows=rows, problems=problems, klines=klines, reconciler=reconciler) -> Iterator[pl.DataFrame]:
                for archive_file in files:  # symbol-clustered: pairs in (symbol, peg) order
                    pair_day = read_pair_day(archive_file, pegs)
                    rows.append(pair_day.row)
                    if pair_day.publishable:
                        if reconciler is not None:
                            reconciler.add(pair_day.row, pair_day.trades, klines[archive_file.pair])
                        yield pair_day.trades
                    else:
                        problems.append(f"{archive_file.path}: {pair_day.status}: {'; '.join(pair_day.blocking) or pair_day.error}")
                if reconciler is not None:
                    reconciler.done_adding()  # its last chunk runs while the partition is sealed

            try:
                audit.stage(day, Batches(TRADES_SCHEMA, batches()))
                if reconciler is not None:
                    reconciler.finish()
            finally:
                if reconciler is not None:
                    reconciler.close()
            frame = ledger_frame(rows)
            ledger.stage(day, frame)
            degraded = frame.filter(pl.col("status") == "degraded")
            violations = {"archive_files_usable": len(problems), "archive_quality": degraded.height}
            details = {
                "pairs": frame.height,
                "by_status": dict(frame.group_by("status").len().iter_rows()),
                "problems": problems[:20],
                "degraded": [f"{r['pair']}: {'; '.join(r['reasons'])}" for r in degraded.head(20).iter_rows(named=True)],
            }
            messages = list(problems)
            if reconciliation.enabled:
                unreconciled = frame.filter(pl.col("klines_status").is_not_null() & (pl.col("klines_status") != "ok"))
                said = [f"{r['pair']}: " + "; ".join(x for x in r["reasons"] if x.startswith("klines_")) for r in unreconciled.iter_rows(named=True)]
                violations[RECONCILIATION_CHECK] = unreconciled.height
                details["klines"] = {
                    "reconciled": int(frame["klines_status"].is_not_null().sum()),
                    "by_status": dict(frame.filter(pl.col("klines_status").is_not_null()).group_by("klines_status").len().iter_rows()),
                    "minutes_compared": int(frame["klines_minutes_compared"].sum()),
                    "minutes_differing": int(frame["klines_minutes_differing"].sum()),
                    "not_reconciled": said[:20],
                }
                if reconciliation.blocking:
                    messages += said
            audit.record(day, violations, details, messages=messages)
        if audit.blocking_failures:  # the ledger describes what is stored: neither is published
            for staged in ledger.staged.values():
                discard(staged)
        # the archive files' checksums are the data version: unchanged input, unchanged version
        yield from audit.outcome(
            output_name="trades",
            data_version=DataVersion(archive_version(all_files)),
            day_versions=day_versions,
            code_version=TRADES_CODE_VERSION,
            metadata={"source": source.describe(), "pegs": ", ".join(pegs), "archive_files": len(all_files)},
        )
        if ledger_key in context.selected_asset_keys:
            yield Output(dict(ledger.staged), output_name="quality")
        else:
            for staged in ledger.staged.values():
                discard(staged)

    return _trades
