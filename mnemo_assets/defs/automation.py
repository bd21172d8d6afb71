"""Daily materialization by declarative automation (evaluated by the ``mnemo_daily`` sensor).

The archive publishes day D during D+1, so the newest partition is D = yesterday:

* trades: the newest day, on an hourly tick while it is missing (a day not yet published
  fails and is tried again at the next tick);
* grids and other same-day assets: as soon as their input day exists and passed its checks;
* returns: day D once D+1's grid exists, i.e. the day before the newest (Dagster would clamp
  the newest day's D+1 away and call its inputs complete);
* metadata and partials: as soon as every day of their windows exists;
* any partition whose input changed data version (a re-published archive day re-ingested, a
  recomputed grid): recomputed once its inputs are ready, whatever its day. The
  ``mnemo_archive_recheck`` sensor re-checks the archive's checksums of the last
  ``automation.recheck_days`` days and re-ingests a day the archive re-published; its trades get
  a new data version, and the change flows down: grids, returns of D−1..D+1, metadata windows.

Nothing is requested before its inputs exist or while a run or a backfill already targets it,
and a failed partition is not retried in a loop (re-materialize it by hand or in a backfill).
"""

from datetime import date, timedelta

import polars as pl
from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from upath import UPath

from mnemo_assets.defs.keys import quality_key, trades_key
from mnemo_assets.defs.resources import ArchiveResource
from mnemo_assets.storage.layout import quality_dataset
from mnemo_assets.storage.parquet import existing_days, scan_days

AC = AutomationCondition


def newest_day_from_archive(cron: str = "15 * * * *") -> AutomationCondition:
    """The newest partition, at every ``cron`` tick while it is missing."""
    return (AC.in_latest_time_window() & AC.cron_tick_passed(cron, "UTC") & AC.missing() & ~AC.in_progress()).with_label(
        f"newest day, at '{cron}' while missing"
    )


def when_inputs_ready(days: int = 1, skip_newest: bool = False) -> AutomationCondition:
    """A missing partition among the ``days`` newest (excluding the newest when
    ``skip_newest``) once every input partition exists, is not in progress and passed its
    blocking checks."""
    window = AC.in_latest_time_window(timedelta(days=days)) if days > 1 else AC.in_latest_time_window()
    if skip_newest:
        window = window & ~AC.in_latest_time_window()
    label = f"{'day before the newest' if skip_newest else f'{days} newest day(s)'} once inputs exist, or inputs changed"
    changed = AC.any_deps_match(AC.data_version_changed()).since_last_handled().with_label("an input's data version changed")
    return (
        ((window & AC.missing()) | changed)
        & ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & deps_checks_passed()
        & ~AC.in_progress()
        & ~AC.execution_failed()
    ).with_label(label)


def deps_checks_passed() -> AutomationCondition:
    """Every dependency's blocking checks passed, or the dependency runs in this tick (its
    checks then run in the same run and stop this asset there if they fail)."""
    return AC.all_deps_match(AC.all_checks_match(AC.check_passed(), blocking_only=True) | AC.will_be_requested()).with_label(
        "all_deps_blocking_checks_passed"
    )


def automation_sensor(enabled: bool) -> AutomationConditionSensorDefinition:
    return AutomationConditionSensorDefinition(
        "mnemo_daily",
        target=AssetSelection.all(),
        default_status=DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=60,
        description="Keeps every asset current each day (see mnemo_assets/defs/automation.py).",
    )


def republished_days(source, root: str, market: str, recheck_days: int) -> dict[date, list[str]]:
    """``{day: pairs}`` among the last ``recheck_days`` stored days of ``market`` whose archive
    file's sha256 is no longer the one recorded in the quality ledger (the archive re-published
    them)."""
    stored = existing_days(UPath(root), quality_dataset(market))[-recheck_days:] if recheck_days > 0 else []
    changed: dict[date, list[str]] = {}
    for day in stored:
        ledger = scan_days(UPath(root), quality_dataset(market), [day]).filter(pl.col("sha256").is_not_null()).select("pair", "sha256").collect()
        for pair, sha in ledger.iter_rows():
            if source.recheck(market, pair, day).sha256 != sha:
                changed.setdefault(day, []).append(pair)
    return changed


def archive_recheck_sensor(markets, root: str, recheck_days: int, enabled: bool):
    """Re-checks the archive's checksums of the last ``recheck_days`` stored days each hour and
    re-ingests a day the archive re-published (see the module docstring)."""

    @sensor(
        name="mnemo_archive_recheck",
        minimum_interval_seconds=3600,
        default_status=DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED,
        description=(
            f"Re-checks the archive's checksums of the last {recheck_days} stored days every hour; a re-published day is "
            "re-ingested (old and new checksums in the quality ledger) and everything that used it is recomputed."
        ),
    )
    def _recheck(context: SensorEvaluationContext, archive: ArchiveResource):
        source = archive.source()
        requests = []
        for market in markets:
            for day, pairs in sorted(republished_days(source, root, market, recheck_days).items()):
                context.log.info(f"{market} {day}: re-published by the archive: {', '.join(pairs[:10])}")
                requests.append(
                    RunRequest(
                        run_key=f"{market}-{day}-{'-'.join(sorted(pairs))[:80]}",
                        partition_key=day.isoformat(),
                        asset_selection=[trades_key(market), quality_key(market)],
                        tags={"mnemo/reason": "re-published", "mnemo/pairs": ",".join(pairs[:20])},
                    )
                )
        return SensorResult(run_requests=requests) if requests else SkipReason("no re-published day")

    return _recheck
