"""Running a date range of the asset graph in process, recorded in a Dagster instance.

Phase by phase (see :mod:`mnemo_assets.defs.planning`): each asset runs for the requested days
whose input windows exist (and, for ``missing_only`` assets, that are not stored yet); assets
sharing a day set share runs of at most ``days_per_batch`` days.
"""

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date

from dagster import AssetKey, DagsterInstance, Definitions, materialize
from upath import UPath

from mnemo_assets.defs.planning import Phase, batches, inputs_of, phases, runnable_days
from mnemo_assets.storage.io_manager import DATASET_KEY
from mnemo_assets.storage.parquet import existing_days


@dataclass
class RunSummary:
    runs: list[tuple[list[str], date, date, str, bool]] = field(default_factory=list)  # keys, lo, hi, run id, success
    skipped: dict[tuple[str, date], str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [run_id for *_, run_id, ok in self.runs if not ok]


def batch_limit(defs: Definitions, key: AssetKey, days_per_batch: int) -> int:
    """Days per run for ``key``: ``days_per_batch``, capped by the asset's backfill policy."""
    policy = defs.resolve_asset_graph().assets_def_for_key(key).backfill_policy
    cap = getattr(policy, "max_partitions_per_run", None) if policy else None
    return min(days_per_batch, cap) if cap else days_per_batch


def _groups(
    defs: Definitions, phase: Phase, days_by_key: dict[AssetKey, tuple[date, ...]], days_per_batch: int
) -> list[tuple[list[AssetKey], tuple[date, ...], int]]:
    """Keys grouped by day set and batch size, ordered so that no key runs before its same-phase parents."""
    graph = defs.resolve_asset_graph()
    in_phase = set(days_by_key)
    depth: dict[AssetKey, int] = {}

    def d(key: AssetKey) -> int:
        if key not in depth:
            depth[key] = 1 + max((d(p) for p in graph.get(key).parent_keys if p in in_phase), default=-1)
        return depth[key]

    groups: list[tuple[list[AssetKey], tuple[date, ...], int]] = []
    where: dict[AssetKey, int] = {}
    for key in sorted(in_phase, key=lambda k: (d(k), k.to_user_string())):
        days = days_by_key[key]
        if not days:
            continue
        size = batch_limit(defs, key, days_per_batch)
        floor = max((where[p] + (1 if groups[where[p]][2] != size else 0) for p in graph.get(key).parent_keys if p in where), default=0)
        for i in range(floor, len(groups)):
            if groups[i][1] == days and groups[i][2] == size:
                groups[i][0].append(key)
                where[key] = i
                break
        else:
            groups.append(([key], days, size))
            where[key] = len(groups) - 1
    return groups


_WORKER: dict = {}
#: in-process runs log at INFO (Dagster's console default, DEBUG, prints every event)
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _init_worker(settings_json: str) -> None:
    from mnemo_assets.config import Settings
    from mnemo_assets.definitions import build_definitions

    _WORKER["defs"] = build_definitions(Settings.model_validate_json(settings_json))
    _WORKER["instance"] = DagsterInstance.get()


def _run_in_worker(keys: list[list[str]], tags: dict[str, str]) -> tuple[str, bool]:
    defs = _WORKER["defs"]
    result = materialize(
        list(defs.assets), selection=[AssetKey(k) for k in keys], instance=_WORKER["instance"], tags=tags,
        resources=defs.resources, raise_on_error=False, run_config=RUN_CONFIG,
    )
    return result.run_id, result.success


def stored_days_in(defs: Definitions, root: str) -> Callable[[AssetKey], set[date]]:
    """``key → days stored`` for the assets of ``defs`` below ``root``."""
    graph = defs.resolve_asset_graph()

    def stored(key: AssetKey) -> set[date]:
        dataset = graph.assets_def_for_key(key).metadata_by_key[key][DATASET_KEY]
        return set(existing_days(UPath(root), dataset))

    return stored


def run_range(
    defs: Definitions,
    keys: Iterable[AssetKey],
    days: list[date],
    root: str,
    first: date,
    instance: DagsterInstance,
    days_per_batch: int,
    missing_only: Iterable[AssetKey] = (),
    tags: dict[str, str] | None = None,
    progress: Callable[[int], object] | None = None,
    log: Callable[[str], object] = print,
    workers: int = 1,
    settings=None,
) -> RunSummary:
    """Materialize ``keys`` for ``days``; assets in ``missing_only`` skip days already stored.

    With ``workers > 1`` (and ``settings``, to rebuild the definitions), the batches of a group
    run in that many processes at once, recorded in the persistent instance (``$DAGSTER_HOME``).
    """
    graph = defs.resolve_asset_graph()
    missing_only = set(missing_only)
    assets = list(defs.assets or [])
    summary = RunSummary()
    stored_cache: dict[AssetKey, set[date]] = {}
    listing = stored_days_in(defs, root)

    def stored(key: AssetKey) -> set[date]:
        if key not in stored_cache:
            stored_cache[key] = listing(key)
        return stored_cache[key]

    pool = None
    if workers > 1:
        if settings is None:
            raise ValueError("workers > 1 needs the settings to rebuild the definitions in each worker")
        os.environ.setdefault("DAGSTER_HOME", instance.root_directory)
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(settings.model_dump_json(),))
    for number, phase in enumerate(phases(defs, keys), 1):
        stored_cache.clear()  # earlier phases wrote
        present: dict[AssetKey, set[date]] = {}
        days_by_key: dict[AssetKey, tuple[date, ...]] = {}
        for key in phase.keys:  # parents first
            for parent, _, _ in inputs_of(graph, key):
                if parent not in present:
                    present[parent] = set(stored(parent))
            ok, waiting = runnable_days(graph, key, days, present, first)
            for day, reason in waiting.items():
                summary.skipped[(key.to_user_string(), day)] = reason
            if key in missing_only:
                ok = [day for day in ok if day not in stored(key)]
            days_by_key[key] = tuple(ok)
            present[key] = stored(key) | set(ok)
        for group, group_days, size in _groups(defs, phase, days_by_key, days_per_batch):
            names = [k.to_user_string() for k in group]
            spans = batches(list(group_days), size)

            def tags_for(lo: date, hi: date) -> dict[str, str]:
                return {
                    "dagster/asset_partition_range_start": lo.isoformat(),
                    "dagster/asset_partition_range_end": hi.isoformat(),
                    **(tags or {}),
                }

            if pool is not None:
                futures = [(lo, hi, pool.submit(_run_in_worker, [list(k.path) for k in group], tags_for(lo, hi))) for lo, hi in spans]
                outcomes = [(lo, hi, *f.result()) for lo, hi, f in futures]
            else:
                outcomes = []
                for lo, hi in spans:
                    result = materialize(
                        assets, selection=group, instance=instance, tags=tags_for(lo, hi), resources=defs.resources,
                        raise_on_error=False, run_config=RUN_CONFIG,
                    )
                    outcomes.append((lo, hi, result.run_id, result.success))
                    if not result.success:
                        break
            for lo, hi, run_id, success in outcomes:
                summary.runs.append((names, lo, hi, run_id, success))
                if progress:
                    progress(len(names) * (hi.toordinal() - lo.toordinal() + 1))
                if not success:
                    log(f"run {run_id} ({len(names)} assets, {lo}..{hi}) failed in phase {number}")
            if summary.failed:
                break
        if summary.failed:
            break
    if pool is not None:
        pool.shutdown()
    return summary


def upstream_closure(defs: Definitions, keys: Iterable[AssetKey]) -> set[AssetKey]:
    """``keys`` and everything they depend on."""
    graph = defs.resolve_asset_graph()
    out: set[AssetKey] = set()
    todo = list(keys)
    while todo:
        key = todo.pop()
        if key not in out:
            out.add(key)
            todo += list(graph.get(key).parent_keys)
    return out
