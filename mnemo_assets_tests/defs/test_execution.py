"""Housekeeping of in-process commands that were killed: their runs, backfills and pool slots."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

from mnemo_assets.defs.execution import RUN_PID_START_TAG, RUN_PID_TAG, _process_start, clean_up_after_killed_commands, free_slots_of_ended_runs
from mnemo_assets_tests.defs.conftest import persistent_instance


@pytest.fixture
def instance(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    with persistent_instance(tmp_path / "home") as inst:
        yield inst


@pytest.fixture
def dead_tags():
    """Process tags of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = _process_start(proc.pid)
    proc.wait()
    return {RUN_PID_TAG: str(proc.pid), RUN_PID_START_TAG: started or "1"}


@pytest.fixture
def live_tags():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield {RUN_PID_TAG: str(proc.pid), RUN_PID_START_TAG: _process_start(proc.pid)}
    proc.kill()
    proc.wait()


def add_run(instance, run_id: str, status: DagsterRunStatus, tags: dict) -> DagsterRun:
    return instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=run_id, status=status, tags=tags))


def hold_archive_slots(instance, run_id: str, n: int = 2) -> None:
    instance.event_log_storage.set_concurrency_slots("archive", 2)
    for i in range(n):
        claim = instance.event_log_storage.claim_concurrency_slot("archive", run_id, f"step_{i}")
        assert claim.is_claimed


def holders(instance) -> set[str]:
    return instance.event_log_storage.get_concurrency_run_ids()


def test_a_killed_commands_runs_fail_its_backfill_is_canceled_and_its_pool_slots_are_freed(instance, dead_tags):
    add_run(instance, "killed-started", DagsterRunStatus.STARTED, dead_tags)
    add_run(instance, "killed-before-launch", DagsterRunStatus.NOT_STARTED, dead_tags)
    hold_archive_slots(instance, "killed-started")
    backfill = PartitionBackfill(
        backfill_id="killedbf", status=BulkActionStatus.REQUESTED, from_failure=False, tags=dead_tags,
        backfill_timestamp=0.0, serialized_asset_backfill_data=None, asset_backfill_data=None,
    )  # fmt: skip
    instance.add_backfill(backfill)
    assert instance.event_log_storage.get_concurrency_info("archive").active_slot_count == 2

    assert sorted(clean_up_after_killed_commands(instance)) == ["killed-before-launch", "killed-started"]

    for run_id in ("killed-started", "killed-before-launch"):
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
    assert instance.get_backfill("killedbf").status == BulkActionStatus.CANCELED
    assert holders(instance) == set()
    assert instance.event_log_storage.get_concurrency_info("archive").active_slot_count == 0


def test_runs_of_live_processes_and_of_other_launchers_keep_their_runs_and_slots(instance, live_tags):
    add_run(instance, "live", DagsterRunStatus.STARTED, live_tags)
    add_run(instance, "daemon-run", DagsterRunStatus.STARTED, {})  # no process tags: another launcher's
    hold_archive_slots(instance, "live", 1)
    instance.event_log_storage.claim_concurrency_slot("archive", "daemon-run", "step_0")

    assert clean_up_after_killed_commands(instance) == []

    assert instance.get_run_by_id("live").status == DagsterRunStatus.STARTED
    assert instance.get_run_by_id("daemon-run").status == DagsterRunStatus.STARTED
    assert holders(instance) == {"live", "daemon-run"}


def test_slots_of_ended_and_deleted_runs_are_freed_whoever_launched_them(instance):
    add_run(instance, "ended", DagsterRunStatus.FAILURE, {})
    hold_archive_slots(instance, "ended", 1)
    instance.event_log_storage.claim_concurrency_slot("archive", "deleted-run", "step_0")
    add_run(instance, "running", DagsterRunStatus.STARTED, {})
    instance.event_log_storage.claim_concurrency_slot("archive", "running", "step_0")  # waits: the pool is full

    assert free_slots_of_ended_runs(instance) == ["deleted-run", "ended"]
    assert holders(instance) == {"running"}


def test_the_daemons_run_monitoring_frees_slots_of_ended_runs_30_s_after_their_end(instance, monkeypatch):
    """Under `dagster dev` or a cluster, Dagster's own run monitoring (enabled, with
    ``free_slots_after_run_end_seconds: 30``, by the repository's dagster.yaml) gives the slots
    back: its iteration run here, at 5 s and at 31 s after the run failed."""
    from dagster._daemon.monitoring import concurrency as monitoring

    run = add_run(instance, "ended", DagsterRunStatus.STARTED, {})
    hold_archive_slots(instance, "ended", 1)
    instance.report_run_failed(run, "test: the run worker died")
    now = monitoring.get_current_datetime()

    def iterate_at(seconds: float) -> None:
        monkeypatch.setattr(monitoring, "get_current_datetime", lambda: now + timedelta(seconds=seconds))
        list(monitoring.execute_concurrency_slots_iteration(SimpleNamespace(instance=instance), logging.getLogger("test")))

    iterate_at(5)
    assert holders(instance) == {"ended"}
    iterate_at(31)
    assert holders(instance) == set()
