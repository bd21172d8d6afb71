"""Asset checks, and write → audit → publish for the days of one run.

An asset stages each day of its run (:func:`~mnemo_assets.storage.parquet.stage_partition`),
evaluates its checks on what it staged, and only if no blocking check fails hands the staged
partitions to the IO manager, which publishes them all at once. A blocking failure discards
everything the run staged, records the failed evaluations, and fails the step: the stored
partitions stay as they were and nothing downstream runs.

Dagster records an ``AssetCheckResult`` against a run's partition only when the run has one
partition key; a range run (a batched backfill) would leave every day's evaluation "planned".
So range runs also log one evaluation per day, linked to that day's materialization.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl
from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    DailyPartitionsDefinition,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.data_version import CODE_VERSION_TAG, DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG
from upath import UPath

from mnemo_assets.storage.parquet import Batches, Staged, cleanup_staging, discard, stage_partition


@dataclass(frozen=True)
class Check:
    """One named check of an asset: blocking checks are ERRORs that stop publication and
    everything downstream; the others are WARNings recorded on the partition."""

    name: str
    description: str
    blocking: bool = True

    @property
    def severity(self) -> AssetCheckSeverity:
        return AssetCheckSeverity.ERROR if self.blocking else AssetCheckSeverity.WARN


def checks_of(spec: Mapping[str, str] | Sequence[Check]) -> list[Check]:
    """``{name: description}`` (all blocking) or a list of :class:`Check`."""
    if isinstance(spec, Mapping):
        return [Check(n, d) for n, d in spec.items()]
    return list(spec)


def check_specs(key: AssetKey, checks: Mapping[str, str] | Sequence[Check], partitions_def: DailyPartitionsDefinition) -> list[AssetCheckSpec]:
    """Daily-partitioned check specs on ``key``."""
    return [
        AssetCheckSpec(c.name, asset=key, description=c.description, blocking=c.blocking, partitions_def=partitions_def) for c in checks_of(checks)
    ]


def latest_materialization(instance, key: AssetKey, partition: str) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The materialization a check evaluation of ``partition`` judges (its latest)."""
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    if not records:
        return None
    rec = records[0]
    return AssetCheckEvaluationTargetMaterializationData(storage_id=rec.storage_id, run_id=rec.run_id, timestamp=rec.timestamp)


@dataclass
class DayAudit:
    """Stage, audit and publish the days of one run of one asset (see the module docstring)."""

    context: AssetExecutionContext
    key: AssetKey
    dataset: str
    root: str
    checks: Sequence[Check]
    schema: pl.Schema | None = None
    #: the local folder staged partitions are written to (default: see ``local_staging_dir``)
    staging_dir: str | None = None
    staged: dict[str, Staged] = field(default_factory=dict)
    failures: dict[str, dict[str, int]] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.checks = checks_of(self.checks)
        self.failures = {c.name: {} for c in self.checks}
        cleanup_staging(self.root, staging_dir=self.staging_dir)  # what killed writers left behind

    def stage(self, day: date | str, data: pl.DataFrame | pl.LazyFrame | Batches) -> Staged:
        """Write one day to staging (not visible to readers)."""
        key = day if isinstance(day, str) else day.isoformat()
        staged = stage_partition(data, UPath(self.root), self.dataset, key, self.schema, self.staging_dir)
        self.staged[key] = staged
        return staged

    def record(
        self,
        day: date | str,
        violations: Mapping[str, int],
        details: Mapping[str, Any] | None = None,
        messages: Sequence[str] = (),
    ) -> None:
        """The checks' failing-row counts for one staged day (0 = passed); ``details`` (for
        instance the count of each invariant a check covers) go to the evaluation's metadata,
        ``messages`` (what exactly failed) to the error when a blocking check fails."""
        key = day if isinstance(day, str) else day.isoformat()
        if messages:
            self.messages[key] = list(messages)
        unknown = set(violations) - set(self.failures)
        if unknown:
            raise ValueError(f"{self.key.to_user_string()}: violations for undeclared checks {sorted(unknown)}")
        for name, count in violations.items():
            if count:
                self.failures[name][key] = int(count)
        if details:
            self.details[key] = dict(details)

    @property
    def blocking_failures(self) -> dict[str, dict[str, int]]:
        return {c.name: self.failures[c.name] for c in self.checks if c.blocking and self.failures[c.name]}

    def _evaluations(self, passed_days: Sequence[str], failed_only: bool) -> None:
        """One evaluation per check and day (range runs; a one-day run gets the results)."""
        if self.context.has_partition_key and not failed_only:
            return
        for day in passed_days:
            target = latest_materialization(self.context.instance, self.key, day)
            for check in self.checks:
                bad = self.failures[check.name].get(day, 0)
                if failed_only and not bad:
                    continue
                self.context.log_event(
                    AssetCheckEvaluation(
                        asset_key=self.key,
                        check_name=check.name,
                        passed=not bad,
                        partition=day,
                        description=check.description,
                        severity=check.severity,
                        blocking=check.blocking,
                        metadata={"failing_rows": bad, **_json(self.details.get(day))},
                        target_materialization_data=None if failed_only else target,
                    )
                )

    def _results(self) -> Iterator[AssetCheckResult]:
        for check in self.checks:
            bad = self.failures[check.name]
            meta = {"failing_days": MetadataValue.json(bad)} if bad else {"days_checked": len(self.staged)}
            yield AssetCheckResult(
                check_name=check.name,
                asset_key=self.key,
                passed=not bad,
                severity=check.severity,
                description=check.description,
                metadata=meta,
            )

    def outcome(
        self,
        output_name: str = "result",
        data_version: DataVersion | None = None,
        metadata: Mapping[str, Any] | None = None,
        day_versions: Mapping[str, str] | None = None,
        code_version: str | None = None,
    ) -> Iterator[Any]:
        """Publish (through the IO manager) and report, or discard and fail.

        ``day_versions`` gives each day its own data version in a range run. Dagster 1.13 gives
        every partition of a range run the output's one data version; each day's version is
        then recorded by a second materialization of that day, in the same run and before any
        downstream step reads it, so staleness stays exact per day whatever the batching.
        """
        blocking = self.blocking_failures
        if blocking:
            for staged in self.staged.values():
                discard(staged)
            self._evaluations(sorted({d for days in blocking.values() for d in days}), failed_only=True)
            yield from self._results()
            what = "; ".join(f"{name} on {', '.join(f'{d} ({n})' for d, n in sorted(days.items()))}" for name, days in blocking.items())
            said = [f"{d}: {m}" for d in sorted(self.messages) for m in self.messages[d]]
            detail = ("\n" + "\n".join(said[:20]) + (f"\n... and {len(said) - 20} more" if len(said) > 20 else "")) if said else ""
            raise Failure(
                description=f"{self.key.to_user_string()}: blocking check(s) failed: {what}. Nothing was published: "
                f"the stored partitions are unchanged and nothing downstream runs.{detail}",
                metadata={"failing": MetadataValue.json(blocking)},
            )
        yield Output(dict(self.staged), output_name=output_name, data_version=data_version, metadata=dict(metadata or {}))
        # the run's check results judge the run's materialization: yielded before the days' own
        # versions are recorded (after them Dagster warned of a data version mismatch)
        yield from self._results()
        if day_versions and len(self.staged) > 1:
            for day, version in day_versions.items():
                yield AssetMaterialization(
                    asset_key=self.key,
                    partition=day,
                    description="the day's own data version (this run covered several days)",
                    tags={
                        DATA_VERSION_TAG: version,
                        DATA_VERSION_IS_USER_PROVIDED_TAG: "true",
                        **({CODE_VERSION_TAG: code_version} if code_version else {}),
                    },
                    metadata=_day_metadata(self.staged[day]),
                )
        self._evaluations(sorted(self.staged), failed_only=False)


def _day_metadata(staged: Staged) -> dict[str, MetadataValue]:
    return {
        "dagster/row_count": MetadataValue.int(staged.rows),
        "symbols": MetadataValue.int(len(staged.symbols)),
        "path": MetadataValue.path(str(staged.final)),
        "content_hash": MetadataValue.text(staged.content_hash),
    }


def _json(details: Mapping[str, Any] | None) -> dict[str, MetadataValue]:
    if not details:
        return {}
    return {"details": MetadataValue.json(details)}


def grouped(counts: Mapping[str, int], groups: Mapping[str, Sequence[str]]) -> tuple[dict[str, int], dict[str, int]]:
    """Per-invariant counts summed into checks: ``({check: total}, {invariant: count})``."""
    totals = {check: sum(int(counts.get(name, 0)) for name in names) for check, names in groups.items()}
    return totals, {name: int(v) for name, v in counts.items()}
