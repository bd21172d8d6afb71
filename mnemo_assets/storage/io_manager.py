"""The hive-parquet IO manager: partitions of an asset ↔ ``{root}/{dataset}/date=D/part-0.parquet``.

An asset names its dataset folder in its definition metadata (``mnemo/dataset``; see
:mod:`mnemo_assets.storage.layout`). Outputs may be one frame (one partition), a frame with a
``date`` column or a ``{partition_key: frame}`` mapping / iterable of pairs (a partition range:
split per day, every day of the range written, an empty day as an empty file). Inputs are
always one ``pl.LazyFrame`` over all mapped days, ``symbol`` as one ``pl.Enum``.
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

from mnemo_assets.storage.parquet import Batches, WriteResult, scan_days, write_partition

DATASET_KEY = "mnemo/dataset"


def table_schema(schema: pl.Schema) -> TableSchema:
    """A Dagster ``TableSchema`` for a polars schema."""
    return TableSchema(columns=[TableColumn(name=name, type=str(dtype)) for name, dtype in schema.items()])


def _dataset(metadata: Mapping[str, Any] | None, what: str) -> str:
    value = (metadata or {}).get(DATASET_KEY)
    if value is None:
        raise ValueError(f"{what} has no '{DATASET_KEY}' definition metadata: the IO manager cannot place it")
    return value.value if hasattr(value, "value") else str(value)


def _split(obj: Any, keys: list[str], asset: str) -> Iterator[tuple[str, Any]]:
    """(partition key, frame) for every key of the output."""
    if isinstance(obj, Mapping):
        extra = set(obj) - set(keys)
        if extra:
            raise ValueError(f"{asset}: output has partitions {sorted(extra)} outside the run's {keys[0]}..{keys[-1]}")
        for key in keys:
            if key not in obj:
                raise ValueError(f"{asset}: range output lacks partition {key}")
            yield key, obj[key]
        return
    if isinstance(obj, (pl.DataFrame, pl.LazyFrame, Batches)):
        if len(keys) == 1:
            yield keys[0], obj
            return
        if isinstance(obj, Batches) or "date" not in obj.collect_schema():
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


class HiveParquetIOManager(ConfigurableIOManager):
    """Stores daily partitions as hive parquet below ``base_dir`` (a local path or fsspec URL)."""

    base_dir: str

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
        results: list[WriteResult] = []
        for key, frame in _split(obj, keys, asset):
            results.append(write_partition(frame, self.root, dataset, key))
            context.log.debug(f"{asset}: wrote {results[-1].rows} rows to {results[-1].path}")
        metadata: dict[str, Any] = {
            "dagster/column_schema": table_schema(results[0].schema),
            "path": MetadataValue.path(str(self.root / dataset)),
        }
        # a range run's metadata lands on every partition of the range: counts per day there
        if len(results) == 1:
            metadata["dagster/row_count"] = MetadataValue.int(results[0].rows)
            metadata["symbols"] = MetadataValue.int(len(results[0].symbols))
        else:
            metadata["rows_by_day"] = MetadataValue.json({k: r.rows for k, r in zip(keys, results, strict=True)})
            metadata["symbols_by_day"] = MetadataValue.json({k: len(r.symbols) for k, r in zip(keys, results, strict=True)})
            metadata["rows_in_run"] = MetadataValue.int(sum(r.rows for r in results))
        context.add_output_metadata(metadata)

    def load_input(self, context: InputContext) -> pl.LazyFrame:
        upstream = context.upstream_output
        asset = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            raise ValueError(f"{asset}: HiveParquetIOManager loads daily-partitioned assets only")
        dataset = _dataset(upstream.definition_metadata if upstream else None, asset)
        days = [date.fromisoformat(k) for k in context.asset_partition_keys]
        if (context.definition_metadata or {}).get("allow_missing_partitions"):
            days = [d for d in days if (self.root / dataset / f"date={d.isoformat()}" / "part-0.parquet").exists()]
        try:
            return scan_days(self.root, dataset, days)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{asset}: cannot load its input: {exc}") from exc
