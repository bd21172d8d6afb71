"""The hive-parquet IO manager: partitions of an asset ↔ ``{root}/{dataset}/date=D/part-0.parquet``.

An asset names its dataset folder in its definition metadata (``mnemo/dataset``; see
:mod:`mnemo_assets.storage.layout`).

**Outputs.** An output is one partition per day of the run: a frame (one-day runs), a
``{partition_key: frame}`` mapping, an iterable of ``(partition_key, frame)`` pairs, or the
same holding :class:`~mnemo_assets.storage.parquet.Staged` partitions that the asset already
wrote and audited. Every day of the run is staged first, then all are published together
(write → audit → publish): if any day fails, nothing is published and the stored partitions
stay as they were. Each partition's own row count, symbol count, file and content hash are
recorded on that partition's materialization, also in batched (range) runs.

**Inputs** are always one ``pl.LazyFrame`` over all mapped days, ``symbol`` as one ``pl.Enum``;
every file is verified first (a damaged or missing partition is an error naming the input,
the dataset and the day).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from typing import Any

import polars as pl
from dagster import (
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)
from upath import UPath

from mnemo_assets.storage.parquet import (
    MissingPartitionError,
    PartitionError,
    Staged,
    WriteResult,
    discard,
    list_partitions,
    publish,
    scan_days,
    stage_partition,
)

DATASET_KEY = "mnemo/dataset"


def table_schema(schema: pl.Schema, descriptions: Mapping[str, str] | None = None) -> TableSchema:
    """A Dagster ``TableSchema`` for a polars schema, with column descriptions where given."""
    descriptions = descriptions or {}
    return TableSchema(columns=[TableColumn(name=name, type=str(dtype), description=descriptions.get(name)) for name, dtype in schema.items()])


def _dataset(metadata: Mapping[str, Any] | None, what: str) -> str:
    value = (metadata or {}).get(DATASET_KEY)
    if value is None:
        raise ValueError(f"{what} has no '{DATASET_KEY}' definition metadata: the IO manager cannot place it")
    return value.value if hasattr(value, "value") else str(value)


def _split(obj: Any, keys: list[str], asset: str) -> Iterator[tuple[str, Any]]:
    """(partition key, frame or Staged) for every key of the output."""
    single = (pl.DataFrame, pl.LazyFrame, Staged)
    if isinstance(obj, Mapping):
        extra = set(obj) - set(keys)
        if extra:
            raise ValueError(f"{asset}: output has partitions {sorted(extra)} outside the run's {keys[0]}..{keys[-1]}")
        for key in keys:
            if key not in obj:
                raise ValueError(f"{asset}: range output lacks partition {key}")
            yield key, obj[key]
        return
    if isinstance(obj, single):
        if len(keys) == 1:
            yield keys[0], obj
            return
        if isinstance(obj, Staged) or "date" not in obj.collect_schema():
            raise ValueError(f"{asset}: a frame covering {len(keys)} partitions needs a 'date' column to be split")
        for key in keys:
            yield key, obj.filter(pl.col("date") == date.fromisoformat(key))
        return
    if isinstance(obj, Iterable):
        seen = []
        for key, frame in obj:
            if key not in keys:
                raise ValueError(f"{asset}: output partition {key} is outside the run's partitions")
            seen.append(key)
            yield key, frame
        missing = sorted(set(keys) - set(seen))
        if missing:
            raise ValueError(f"{asset}: range output lacks partitions {missing}")
        return
    raise TypeError(f"{asset}: cannot store {type(obj).__name__}; return a polars frame or a mapping of frames")


def record_partition_metadata(context: OutputContext, results: Mapping[str, WriteResult]) -> None:
    """Each day's own row count, symbols, file and hash on that day's materialization."""
    step = context.step_context
    for key, result in results.items():
        step.add_asset_metadata(
            {
                "dagster/row_count": MetadataValue.int(result.rows),
                "symbols": MetadataValue.int(len(result.symbols)),
                "path": MetadataValue.path(result.path),
                "size_bytes": MetadataValue.int(result.size),
                "content_hash": MetadataValue.text(result.content_hash),
            },
            asset_key=context.asset_key,
            partition_key=key,
        )


class HiveParquetIOManager(ConfigurableIOManager):
    """Stores daily partitions as hive parquet below ``base_dir`` (a local path or fsspec URL).

    ``staging_dir`` is the local folder partitions are staged in before they are published
    (default: below ``base_dir`` on local disks, the local cache for object stores; see
    :func:`~mnemo_assets.storage.parquet.local_staging_dir`)."""

    base_dir: str
    staging_dir: str | None = None

    @property
    def root(self) -> UPath:
        return UPath(self.base_dir)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            return
        asset = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            raise ValueError(f"{asset}: HiveParquetIOManager stores daily-partitioned assets only")
        dataset = _dataset(context.definition_metadata, asset)
        keys = list(context.asset_partition_keys)
        staged: dict[str, Staged] = {}
        try:
            for key, value in _split(obj, keys, asset):
                staged[key] = value if isinstance(value, Staged) else stage_partition(value, self.root, dataset, key, staging_dir=self.staging_dir)
            results = {key: publish(s) for key, s in staged.items()}
        except BaseException:
            for s in staged.values():
                discard(s)
            raise
        first = next(iter(results.values()))
        context.add_output_metadata({"dagster/column_schema": table_schema(first.schema)})
        record_partition_metadata(context, results)
        context.log.debug(f"{asset}: published {len(results)} partition(s) of {self.root / dataset}")

    def load_input(self, context: InputContext) -> pl.LazyFrame:
        upstream = context.upstream_output
        asset = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            raise ValueError(f"{asset}: HiveParquetIOManager loads daily-partitioned assets only")
        dataset = _dataset(upstream.definition_metadata if upstream else None, asset)
        days = [date.fromisoformat(k) for k in context.asset_partition_keys]
        listing = list_partitions(self.root, dataset)  # fresh: what any process has written
        if (context.definition_metadata or {}).get("allow_missing_partitions"):
            days = [d for d in days if d in listing]
        try:
            return scan_days(self.root, dataset, days, listing=listing)
        except MissingPartitionError as exc:
            raise MissingPartitionError(f"input {asset}: {exc}") from exc
        except PartitionError as exc:
            raise type(exc)(f"input {asset}: {exc}") from exc
