"""Running planned asset-days: one Dagster asset backfill, run by the daemon or in this process.

Every command runs the graph the same way. :func:`launch_backfill` records an asset backfill of
exactly the planner's asset-days (``partitionsByAssets`` ranges, the same request the UI's
planned backfills end up with). Then either

* a daemon runs it (``mnemo backfill --url``, or any ``dagster-daemon`` on the same instance:
  a cluster's run launcher, e.g. Kubernetes, launches its runs), or
* :func:`run_backfill_in_process` runs it here: Dagster's own backfill iterations (the daemon's
  code, without its 30-second pacing) with a run launcher that executes each run in this
  process. Same batching, same runs and tags, same Backfills page in the UI.

Afterwards :func:`summarize` says per asset what was planned, materialized, left waiting (and
why) and failed, checked against a fresh listing of the store.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date

import yaml
from dagster import AssetKey, DagsterInstance
from dagster._core.definitions.selector import PartitionRangeSelector, PartitionsByAssetSelector, PartitionsSelector
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES, DagsterRunStatus, RunsFilter
from dagster._core.utils import make_new_backfill_id
from dagster._serdes import ConfigurableClass
from dagster._serdes.config_class import ConfigurableClassData

from mnemo_assets.defs.planning import Plan

log = logging.getLogger(__name__)

RUN_PID_TAG = "mnemo/pid"
#: when that process started (``/proc/{pid}/stat``): a pid reused by another process is not it
RUN_PID_START_TAG = "mnemo/pid_start"
BACKFILL_ID_TAG = "dagster/backfill"
DONE = {
    BulkActionStatus.COMPLETED,
    BulkActionStatus.COMPLETED_SUCCESS,
    BulkActionStatus.COMPLETED_FAILED,
    BulkActionStatus.FAILED,
    BulkActionStatus.CANCELED,
}


# ----------------------------------------------------------------------------- launching
#: runs launched by the CLI log warnings and errors only (their events are in the instance)
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def launch_backfill(
    instance: DagsterInstance, graph, planned: Plan, *, title: str, tags: Mapping[str, str], run_config: Mapping | None = None
) -> str:
    """Record an asset backfill of the planned asset-days in ``instance``; its id."""
    selectors = [
        PartitionsByAssetSelector(
            asset_key=key,
            partitions=PartitionsSelector(ranges=[PartitionRangeSelector(a.isoformat(), b.isoformat()) for a, b in spans]),
        )
        for key, spans in sorted(planned.ranges().items(), key=lambda kv: kv[0].to_user_string())
    ]
    backfill_id = make_new_backfill_id()
    backfill = PartitionBackfill.from_partitions_by_assets(
        backfill_id=backfill_id,
        asset_graph=graph,
        backfill_timestamp=time.time(),
        tags={**tags, "mnemo/planned_asset_days": str(planned.total), "mnemo/waiting_asset_days": str(planned.total_waiting)},
        dynamic_partitions_store=instance,
        partitions_by_assets=selectors,
        title=title,
        description="\n".join(["mnemo: planned by the CLI", *planned.reasons(limit=30)]),
        run_config=run_config,
    )
    instance.add_backfill(backfill)
    return backfill_id


# ----------------------------------------------------------------------------- in-process runs
class InProcessRunLauncher(RunLauncher, ConfigurableClass):
    """Executes each launched run to completion in the calling process (the laptop launcher of
    :func:`run_backfill_in_process`; clusters use Dagster's own launchers)."""

    def __init__(self, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data)

    def launch_run(self, context: LaunchRunContext) -> None:
        from dagster._core.execution.api import execute_run
        from dagster._utils.hosted_user_process import recon_job_from_origin

        run = context.dagster_run
        self._instance.add_run_tags(run.run_id, process_tags())
        execute_run(recon_job_from_origin(context.job_code_origin), run, self._instance)

    def terminate(self, run_id: str) -> bool:  # pragma: no cover - runs finish before the call returns
        return False


def in_process_instance(instance: DagsterInstance) -> DagsterInstance:
    """``instance``'s storage (runs, events, backfills) with runs launched synchronously in this
    process: the instance itself when it already does that (ephemeral test instances), else
    the same Dagster home with the run coordinator and launcher overridden."""
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.launcher.sync_in_memory_run_launcher import SyncInMemoryRunLauncher
    from dagster._core.run_coordinator import DefaultRunCoordinator

    if isinstance(instance.run_launcher, (InProcessRunLauncher, SyncInMemoryRunLauncher)) and isinstance(
        instance.run_coordinator, DefaultRunCoordinator
    ):
        return instance
    home = instance.root_directory

    overrides = {
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
        "run_launcher": {"module": __name__, "class": "InProcessRunLauncher"},
    }
    return DagsterInstance.from_ref(InstanceRef.from_dir(home, overrides=overrides))


@contextmanager
def _settings_in_env(settings):
    """Point the code location (``mnemo_assets.definitions``) at exactly these settings."""
    if settings is None:
        yield
        return
    fd, path = tempfile.mkstemp(prefix="mnemo-settings-", suffix=".yaml")
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(settings.model_dump(mode="json"), fh)
    # the file holds every setting: no MNEMO_* override may apply on top of it
    saved = {k: v for k, v in os.environ.items() if k.startswith("MNEMO_")}
    for k in saved:
        os.environ.pop(k)
    os.environ["MNEMO_CONFIG"] = path
    try:
        yield
    finally:
        os.environ.pop("MNEMO_CONFIG", None)
        os.environ.update(saved)
        os.unlink(path)


def run_backfill_in_process(
    instance: DagsterInstance, backfill_id: str, settings=None, on_iteration: Callable[[PartitionBackfill], None] | None = None
) -> PartitionBackfill:
    """Run a recorded asset backfill to its end in this process (see the module docstring);
    ``on_iteration(backfill)`` after each of Dagster's backfill iterations."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.backfill import execute_backfill_jobs

    instance = in_process_instance(instance)
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name="mnemo_assets.definitions", working_directory=os.getcwd()),
        location_name="mnemo_assets",
    )
    quiet = logging.getLogger("mnemo_assets.backfill")
    with _settings_in_env(settings), WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        entry = next(iter(context.create_request_context().get_code_location_entries().values()))
        if entry.load_error is not None:
            raise RuntimeError(f"the code location failed to load: {entry.load_error.to_string()}")
        while True:
            backfill = instance.get_backfill(backfill_id)
            if backfill is None:
                raise ValueError(f"no backfill {backfill_id} in the instance")
            if on_iteration is not None:
                on_iteration(backfill)
            if backfill.status in DONE:
                return backfill
            for error in execute_backfill_jobs(context, quiet, [backfill]):
                if error is not None:
                    raise RuntimeError(f"backfill {backfill_id}: {error.to_string()}")


# ----------------------------------------------------------------------------- housekeeping
def clean_up_after_killed_commands(instance: DagsterInstance) -> list[str]:
    """Housekeeping for in-process commands that were killed (SIGKILL, OOM, a closed terminal).

    Their runs stay STARTED (or NOT_STARTED) forever, their backfill stays requested, and the
    pool slots their steps held (the ``archive`` pool) are never given back, so every later
    step of that pool would wait for a slot forever. Marks the runs whose process is gone as
    failed and their backfills as canceled (only runs and backfills of this host's in-process
    launcher carry the process tags), then frees the pool slots of every run that has ended
    (Dagster frees those only from the daemon's run monitoring). Returns the failed run ids.
    """
    orphaned = []
    statuses = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED]
    for record in instance.get_run_records(filters=RunsFilter(statuses=statuses)):
        run = record.dagster_run
        if not _orphaned(run.tags):
            continue
        instance.report_run_failed(run, f"the process {run.tags[RUN_PID_TAG]} that ran it is gone (killed); marked failed")
        orphaned.append(run.run_id)
    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED):
        if _orphaned(backfill.tags):
            instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELED))
    free_slots_of_ended_runs(instance)
    return orphaned


def free_slots_of_ended_runs(instance: DagsterInstance) -> list[str]:
    """Give back the pool slots still held (or waited for) by runs that have ended or no longer
    exist; the run ids whose slots were freed. Runs in progress keep theirs."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = storage.get_concurrency_run_ids()
    if not holders:
        return []
    live = instance.get_run_records(filters=RunsFilter(run_ids=sorted(holders), statuses=NOT_FINISHED_STATUSES))
    ended = sorted(holders - {r.dagster_run.run_id for r in live})
    for run_id in ended:
        storage.free_concurrency_slots_for_run(run_id)
    return ended


def _orphaned(tags: Mapping[str, str]) -> bool:
    """Whether ``tags`` name an in-process launcher (:func:`process_tags`) that is gone."""
    pid = tags.get(RUN_PID_TAG)
    return bool(pid) and int(pid) != os.getpid() and not _alive(int(pid), tags.get(RUN_PID_START_TAG))


def process_tags() -> dict[str, str]:
    """The tags that tie a run to this process (see :func:`clean_up_after_killed_commands`). Given to the
    backfill too, so its runs carry them from their creation, before the launcher starts."""
    started = _process_start(os.getpid())
    return {RUN_PID_TAG: str(os.getpid()), **({RUN_PID_START_TAG: started} if started else {})}


def _process_start(pid: int) -> str | None:
    """The start time of a process in clock ticks since boot (``"zombie"`` for a process that
    has exited but was not reaped), or ``None`` where /proc has none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20:
        return None
    return "zombie" if fields[0] == b"Z" else fields[19].decode()


def _alive(pid: int, started: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    now = _process_start(pid)
    return now != "zombie" and (started is None or now in (None, started))


# ----------------------------------------------------------------------------- the summary
@dataclass
class AssetSummary:
    planned: int = 0
    materialized: int = 0
    stored_before: int = 0
    waiting: dict[date, str] = field(default_factory=dict)
    failed: list[date] = field(default_factory=list)
    unaccounted: list[date] = field(default_factory=list)
    #: why an unaccounted asset-day is not counted (stored before but not by this command's runs, or not stored)
    notes: dict[date, str] = field(default_factory=dict)


@dataclass
class Summary:
    """Per asset: asset-days planned, materialized, skipped (with the reason) and failed."""

    assets: dict[str, AssetSummary]
    backfill_id: str | None = None
    status: str | None = None

    @property
    def ok(self) -> bool:
        """Everything planned was materialized (waiting asset-days have a stated reason)."""
        return all(not a.failed and not a.unaccounted for a in self.assets.values())

    def lines(self, reasons: int = 10) -> list[str]:
        width = max((len(k) for k in self.assets), default=10)
        out = [f"{'asset':<{width}}  planned  materialized  waiting  failed"]
        for name in sorted(self.assets):
            a = self.assets[name]
            out.append(f"{name:<{width}}  {a.planned:>7}  {a.materialized:>12}  {len(a.waiting):>7}  {len(a.failed) + len(a.unaccounted):>6}")
        shown = 0
        for name in sorted(self.assets):
            for day, reason in sorted(self.assets[name].waiting.items()):
                if shown < reasons:
                    out.append(f"  waiting: {name} {day}: {reason}")
                shown += 1
            for day in self.assets[name].failed:
                out.append(f"  FAILED: {name} {day}")
            for day in self.assets[name].unaccounted:
                note = self.assets[name].notes.get(day, "neither materialized nor failed (not in the store)")
                out.append(f"  NOT DONE: {name} {day}: planned, {note}")
        if shown > reasons:
            out.append(f"  ... and {shown - reasons} more waiting asset-days")
        return out


def backfill_outcome(instance: DagsterInstance, graph, backfill_id: str) -> tuple[str | None, dict, dict]:
    """``(status, materialized, failed)`` of a backfill recorded in ``instance``, per asset."""
    backfill = instance.get_backfill(backfill_id)
    if backfill is None:
        return None, {}, {}
    data = backfill.get_asset_backfill_data(graph)

    def days(subset) -> dict[AssetKey, set[date]]:
        return {
            key: {date.fromisoformat(k) for k in subset.get_partitions_subset(key).get_partition_keys()}
            for key in subset.partitions_subsets_by_asset_key
        }

    return backfill.status.value, days(data.materialized_subset), days(data.failed_and_downstream_subset)


def summarize(
    planned: Plan,
    stored_days: Callable[[AssetKey], set[date]],
    *,
    materialized: Mapping[AssetKey, set[date]] | None = None,
    failed: Mapping[AssetKey, set[date]] | None = None,
    backfill_id: str | None = None,
    status: str | None = None,
) -> Summary:
    """What happened to every planned asset-day, checked against a fresh listing of the store:
    an asset-day counts as materialized only when its run materialized it (when known) and its
    file is stored; a planned asset-day that is neither is reported, never silently passed."""
    assets: dict[str, AssetSummary] = {}
    for key in set(planned.run) | set(planned.waiting):
        days = planned.run.get(key, [])
        on_disk = stored_days(key) if days else set()
        summary = AssetSummary(planned=len(days), waiting=dict(planned.waiting.get(key, {})), stored_before=len(planned.stored.get(key, [])))
        for day in days:
            if failed is not None and day in failed.get(key, set()):
                summary.failed.append(day)
            elif day in on_disk and (materialized is None or day in materialized.get(key, set())):
                summary.materialized += 1
            else:
                summary.unaccounted.append(day)
                if day in on_disk:
                    summary.notes[day] = "not materialized by this command's runs (the stored file is an earlier one)"
                elif materialized is not None and day in materialized.get(key, set()):
                    summary.notes[day] = "materialized by its run, but not in the store (deleted since?)"
        assets[key.to_user_string()] = summary
    return Summary(assets, backfill_id, status)


# ----------------------------------------------------------------------------- one entry point
@dataclass
class Request:
    """What a command asks for: these assets for these days (missing-only or recompute)."""

    keys: list[AssetKey]
    days: list[date]
    #: skip stored asset-days: all assets (True), none (False) or these assets
    missing_only: bool | frozenset[AssetKey] | set[AssetKey]
    title: str
    tags: dict[str, str] = field(default_factory=dict)


def run_request(
    settings,
    request: Request,
    *,
    url: str | None = None,
    wait: bool = True,
    progress: bool = True,
    echo: Callable[[str], object] = print,
    instance: DagsterInstance | None = None,
) -> Summary | None:
    """Plan a request, launch it as one asset backfill and run it (here, or by the daemon at
    ``url``), then summarize. Returns ``None`` when there was nothing to do or ``wait`` is off."""
    from tqdm.auto import tqdm

    from mnemo_assets.definitions import build_definitions
    from mnemo_assets.defs.planning import plan, requested_days, store_listing
    from mnemo_assets.instance import get_instance
    from mnemo_assets.storage.parquet import cleanup_staging

    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    cleanup_staging(settings.data_root, staging_dir=settings.staging_dir)
    listing = store_listing(graph, settings.data_root)
    if isinstance(request.missing_only, bool):
        missing_only = set(request.keys) if request.missing_only else set()
    else:
        missing_only = set(request.missing_only)
    planned = plan(graph, requested_days(request.keys, request.days), listing, settings.start_date, missing_only=missing_only)
    mode = "missing only" if missing_only == set(request.keys) else "recompute" if not missing_only else "recompute some, missing-only the rest"
    echo(
        f"mnemo: {planned.total} asset-day(s) to run over {len(request.keys)} asset(s), "
        f"{request.days[0]}..{request.days[-1]} ({mode}); "
        f"{planned.total_waiting} wait for their inputs, {sum(len(v) for v in planned.stored.values())} already stored"
    )
    for line in planned.reasons(limit=10):
        echo(f"mnemo: waiting: {line}")
    if not url:  # housekeeping of every in-process command, also one with nothing to do
        instance = instance or get_instance()
        clean_up_after_killed_commands(instance)
    if not planned.total:
        echo("mnemo: nothing to do")
        return summarize(planned, listing) if wait else None
    tags = {"mnemo/command": request.title.split(" ")[0], **request.tags}
    if url:
        from mnemo_assets.graphql import DagsterGraphQL

        client = DagsterGraphQL(url)
        backfill_id = client.launch_asset_backfill(
            {k: [(a.isoformat(), b.isoformat()) for a, b in spans] for k, spans in planned.ranges().items()},
            title=request.title,
            tags=tags,
        )
        echo(f"mnemo: launched backfill {backfill_id}; see {url.rstrip('/')}/runs/b/{backfill_id}")
        if not wait:
            return None
        with tqdm(total=planned.total, desc="asset-days", unit="asset-day", disable=not progress) as bar:

            def show(status):
                done = sum(a["materialized"] + a["failed"] for a in status["assets"].values())
                bar.update(max(0, done - bar.n))

            final = client.wait_for_backfill(backfill_id, on_progress=show)
        # the daemon may run elsewhere: judge by what its runs materialized (its instance, over
        # GraphQL) and by the store (a fresh listing): both must hold for every planned asset-day
        from mnemo_assets.graphql import GraphQLError

        try:
            done = client.backfill_materializations(backfill_id, {k: [d.isoformat() for d in days] for k, days in planned.run.items()})
            materialized = {k: {date.fromisoformat(p) for p in parts} for k, parts in done.items()}
        except GraphQLError as exc:
            echo(f"mnemo: could not read the backfill's materializations ({exc}); judging by the store alone")
            materialized = None
        return summarize(planned, listing, materialized=materialized, backfill_id=backfill_id, status=final["status"])
    backfill_id = launch_backfill(instance, graph, planned, title=request.title, tags={**tags, **process_tags()}, run_config=QUIET_RUN_CONFIG)
    with tqdm(total=planned.total, desc="asset-days", unit="asset-day", disable=not progress) as bar:

        def advance(backfill) -> None:
            done = backfill.get_asset_backfill_data(graph)
            n = sum(len(done.materialized_subset.get_partitions_subset(k)) for k in done.materialized_subset.partitions_subsets_by_asset_key)
            n += sum(
                len(done.failed_and_downstream_subset.get_partitions_subset(k))
                for k in done.failed_and_downstream_subset.partitions_subsets_by_asset_key
            )
            bar.update(max(0, n - bar.n))

        run_backfill_in_process(instance, backfill_id, settings=settings, on_iteration=advance)
    status, materialized, failed = backfill_outcome(instance, graph, backfill_id)
    return summarize(planned, listing, materialized=materialized, failed=failed, backfill_id=backfill_id, status=status)
