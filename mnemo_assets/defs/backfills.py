"""Backfills launched from the Dagster UI run exactly what the planner says.

The UI's Materialize dialog launches ``launchPartitionBackfill(assetSelection, partitionNames)``.
Dagster then widens every downstream asset through its partition mapping: the returns of a
range reach one day past it (they need the next day's grid), the metadata 30 days past it
(their lookback windows). Those asset-days cannot be computed (their inputs are neither stored
nor part of the backfill), and Dagster ≥ 1.13.22 ends a backfill whose targeted partitions
were not materialized as failed (dagster#34219), so such a backfill could never succeed.

The ``mnemo_backfill_planner`` sensor applies the project's one planner
(:mod:`mnemo_assets.defs.planning`) to each requested asset backfill of this code location
before the daemon reaches the waiting asset-days, and removes them from the backfill's target:
the backfill runs every asset-day whose inputs exist or are produced by the same backfill and
ends successfully; the asset-days left out, with the reason, are in the backfill's description
and its ``mnemo/*`` tags. Only asset-days the daemon has not requested yet are ever removed.

Why a sensor and not another mechanism: the widening happens inside Dagster from the partition
mappings (which must stay exact, they carry staleness and lineage); custom partition mappings
do not reach the daemon (only Dagster's built-in mappings are serialized), and a skip inside a
run is reported as a failure of the backfill. Reshaping the backfill's target before anything
waits is the one place where the planner's answer can become Dagster's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from datetime import date

from dagster import AssetKey, DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus, PartitionBackfill

from mnemo_assets.defs.planning import Plan, plan, store_listing

log = logging.getLogger(__name__)

PLANNED_TAG = "mnemo/planned_target"
PLANNED_COUNT_TAG = "mnemo/planned_asset_days"
WAITING_COUNT_TAG = "mnemo/waiting_asset_days"


def _days(subset, key: AssetKey) -> set[date]:
    if key not in subset.partitions_subsets_by_asset_key:
        return set()
    return {date.fromisoformat(k) for k in subset.get_partitions_subset(key).get_partition_keys()}


def _fingerprint(target: AssetGraphSubset) -> str:
    parts = []
    for key in sorted(target.partitions_subsets_by_asset_key, key=lambda k: k.to_user_string()):
        days = sorted(k for k in target.get_partitions_subset(key).get_partition_keys())
        parts.append(f"{key.to_user_string()}:{','.join(days)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def plan_backfill(
    backfill: PartitionBackfill, graph, stored_days: Callable[[AssetKey], Iterable[date]], first: date
) -> tuple[AssetGraphSubset, Plan, int]:
    """The backfill's target with the waiting asset-days removed, the plan, and how many
    asset-days were removed. Asset-days the daemon already requested stay."""
    data = backfill.get_asset_backfill_data(graph)
    target = data.target_subset
    ours = [k for k in target.partitions_subsets_by_asset_key if graph.has(k)]
    requested = {key: sorted(_days(target, key)) for key in ours}
    result = plan(graph, requested, stored_days, first)
    taken = data.requested_subset | data.materialized_subset | data.failed_and_downstream_subset
    subsets = dict(target.partitions_subsets_by_asset_key)
    removed = 0
    for key in ours:
        keep = (set(result.run.get(key, ())) | _days(taken, key)) & set(requested[key])
        removed += len(requested[key]) - len(keep)
        if len(keep) != len(requested[key]):
            pdef = graph.get(key).partitions_def
            subsets[key] = pdef.subset_with_partition_keys(sorted(d.isoformat() for d in keep))
    new = AssetGraphSubset(
        partitions_subsets_by_asset_key={k: v for k, v in subsets.items() if len(v) > 0},
        non_partitioned_asset_keys=target.non_partitioned_asset_keys,
    )
    return new, result, removed


def describe(result: Plan, removed: int) -> str:
    lines = [f"mnemo: {result.total} asset-day(s) planned; {removed} left out because they wait for inputs outside this backfill:"]
    lines += [f"- {line}" for line in result.reasons(limit=30)]
    return "\n".join(lines)


def apply_plan(instance, backfill_id: str, graph, root: str, first: date) -> str | None:
    """Re-plan one requested backfill if its target changed since we last planned it; return
    what was done (``None`` when nothing)."""
    backfill = instance.get_backfill(backfill_id)
    if backfill is None or backfill.status != BulkActionStatus.REQUESTED or not backfill.is_asset_backfill:
        return None
    data = backfill.get_asset_backfill_data(graph)
    if backfill.tags.get(PLANNED_TAG) == _fingerprint(data.target_subset):
        return None
    new, result, removed = plan_backfill(backfill, graph, store_listing(graph, root), first)
    current = instance.get_backfill(backfill_id)
    updated = current.with_asset_backfill_data(
        current.get_asset_backfill_data(graph)._replace(target_subset=new), dynamic_partitions_store=instance, asset_graph=graph
    )
    tags = {
        **current.tags,
        PLANNED_TAG: _fingerprint(new),
        PLANNED_COUNT_TAG: str(sum(len(_days(new, k)) for k in new.partitions_subsets_by_asset_key)),
        WAITING_COUNT_TAG: str(removed),
    }
    description = describe(result, removed) if removed else current.description
    instance.update_backfill(updated._replace(tags=tags, description=description))
    return f"{backfill_id}: {removed} waiting asset-day(s) left out"


def backfill_planner_sensor(root: str, first: date):
    """The sensor that plans UI-launched backfills (see the module docstring)."""

    @sensor(
        name="mnemo_backfill_planner",
        minimum_interval_seconds=5,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Runs the project's planner on every backfill launched from the UI: asset-days that wait "
            "for inputs outside the backfill are left out (with the reason in the backfill's description) "
            "instead of failing it. Keep it running when you backfill from the UI."
        ),
    )
    def _planner(context: SensorEvaluationContext):
        graph = context.repository_def.asset_graph
        done = []
        for backfill in context.instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])):
            if not backfill.is_asset_backfill:
                continue
            try:
                outcome = apply_plan(context.instance, backfill.backfill_id, graph, root, first)
            except Exception as exc:
                context.log.warning(f"backfill {backfill.backfill_id}: could not plan it: {exc}")
                continue
            if outcome:
                done.append(outcome)
        return SkipReason("; ".join(done) if done else "no backfill to plan")

    return _planner
