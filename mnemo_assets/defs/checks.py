"""Blocking asset checks computed inside an asset, reported per partition.

Dagster records an ``AssetCheckResult`` against the run's partition only when the run has a
partition key; a range run (a batched backfill) would leave every day's check "planned". So a
range run also logs one evaluation per day (linked to that day's materialization), and the yielded results summarize the range (a
failing day fails the step, which blocks everything downstream).
"""

from collections.abc import Iterator, Mapping

from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from dagster import (
    AssetCheckEvaluation,
    AssetRecordsFilter,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    DailyPartitionsDefinition,
    MetadataValue,
)


def check_specs(key: AssetKey, checks: Mapping[str, str], partitions_def: DailyPartitionsDefinition) -> list[AssetCheckSpec]:
    """Blocking, daily-partitioned check specs ``{name: description}`` on ``key``."""
    return [AssetCheckSpec(n, asset=key, description=d, blocking=True, partitions_def=partitions_def) for n, d in checks.items()]


class CheckLedger:
    """Collects ``{check: {day: rows failing}}`` while partitions are computed."""

    def __init__(self, key: AssetKey, checks: Mapping[str, str]):
        self.key = key
        self.checks = dict(checks)
        self.failures: dict[str, dict[str, int]] = {name: {} for name in checks}
        self.days: list[str] = []

    def record(self, day: str, violations: Mapping[str, int]) -> None:
        self.days.append(day)
        for name, count in violations.items():
            if count:
                self.failures[name][day] = int(count)

    def results(self, context: AssetExecutionContext) -> Iterator[AssetCheckResult]:
        """Per-day evaluations (range runs, even of one day), then one result per check."""
        if not context.has_partition_key:
            for day in self.days:
                target = latest_materialization(context.instance, self.key, day)
                for name, desc in self.checks.items():
                    bad = self.failures[name].get(day, 0)
                    context.log_event(
                        AssetCheckEvaluation(
                            asset_key=self.key, check_name=name, passed=not bad, partition=day, description=desc,
                            severity=AssetCheckSeverity.ERROR, blocking=True, metadata={"failing_rows": bad},
                            target_materialization_data=target,
                        )
                    )
        for name, desc in self.checks.items():
            bad = self.failures[name]
            yield AssetCheckResult(
                check_name=name, asset_key=self.key, passed=not bad, severity=AssetCheckSeverity.ERROR, description=desc,
                metadata={"failing_days": MetadataValue.json(bad)} if bad else {"days_checked": len(self.days)},
            )


def latest_materialization(instance, key: AssetKey, partition: str) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The materialization a check evaluation of ``partition`` judges (its latest)."""
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    if not records:
        return None
    rec = records[0]
    return AssetCheckEvaluationTargetMaterializationData(storage_id=rec.storage_id, run_id=rec.run_id, timestamp=rec.timestamp)
