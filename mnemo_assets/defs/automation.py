"""Daily materialization by declarative automation (evaluated by the ``mnemo_daily`` sensor).

The archive publishes day D during D+1, so the newest partition is D = yesterday:

* trades: the newest day, on an hourly tick while it is missing (a day not yet published
  fails and is tried again at the next tick);
* grids and other same-day assets: as soon as their input day exists and passed its checks;
* returns: day D once D+1's grid exists, i.e. the day before the newest (Dagster would clamp
  the newest day's D+1 away and call its inputs complete);
* metadata and partials: as soon as every day of their windows exists.

Nothing is requested before its inputs exist, and a failed partition is not retried in a
loop (re-materialize it by hand or in a backfill).
"""

from datetime import timedelta

from dagster import AssetSelection, AutomationCondition, AutomationConditionSensorDefinition, DefaultSensorStatus

AC = AutomationCondition


def newest_day_from_archive(cron: str = "15 * * * *") -> AutomationCondition:
    """The newest partition, at every ``cron`` tick while it is missing."""
    return (
        AC.in_latest_time_window() & AC.cron_tick_passed(cron, "UTC") & AC.missing() & ~AC.in_progress()
    ).with_label(f"newest day, at '{cron}' while missing")


def when_inputs_ready(days: int = 1, skip_newest: bool = False) -> AutomationCondition:
    """A missing partition among the ``days`` newest (excluding the newest when
    ``skip_newest``) once every input partition exists, is not in progress and passed its
    blocking checks."""
    window = AC.in_latest_time_window(timedelta(days=days)) if days > 1 else AC.in_latest_time_window()
    if skip_newest:
        window = window & ~AC.in_latest_time_window()
    label = f"{'day before the newest' if skip_newest else f'{days} newest day(s)'} once inputs exist"
    return (
        window
        & AC.missing()
        & ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & deps_checks_passed()
        & ~AC.in_progress()
        & ~AC.execution_failed()
    ).with_label(label)


def deps_checks_passed() -> AutomationCondition:
    """Every dependency's blocking checks passed, or the dependency runs in this tick (its
    checks then run in the same run and stop this asset there if they fail)."""
    return AC.all_deps_match(
        AC.all_checks_match(AC.check_passed(), blocking_only=True) | AC.will_be_requested()
    ).with_label("all_deps_blocking_checks_passed")


def automation_sensor(enabled: bool) -> AutomationConditionSensorDefinition:
    return AutomationConditionSensorDefinition(
        "mnemo_daily",
        target=AssetSelection.all(),
        default_status=DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=60,
        description="Keeps every asset current each day (see mnemo_assets/defs/automation.py).",
    )
