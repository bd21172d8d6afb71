"""Reading and writing hive-partitioned parquet datasets (local paths or any fsspec URL).

Each day is one file, ``{dataset}/date=YYYY-MM-DD/part-0.parquet``. Files store ``symbol`` as
plain (dictionary-encoded) strings and carry their sorted symbol set in the parquet footer
(key ``mnemo.symbols``), so the universe of a dataset and its ``pl.Enum`` come from footers
alone, and two days with different symbols never fail a read.

Writes are atomic: a partition is written to a staging file below the root and moved into
place with one rename (one PUT on object stores); a failed or killed run leaves the previous
partition as it was and never a half-written file.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

import polars as pl
import pyarrow.parquet as pq
from upath import UPath

from mnemo_assets.storage.layout import PART_FILE, STAGING_DIR, partition_file

SYMBOLS_KEY = b"mnemo.symbols"


@dataclass(frozen=True)
class Batches:
    """A partition given as a stream of frames sharing ``schema`` (bounded memory writes)."""

    schema: pl.Schema
    frames: Iterable[pl.DataFrame]


@dataclass(frozen=True)
class WriteResult:
    path: str
    rows: int
    symbols: tuple[str, ...]
    schema: pl.Schema


def _is_local(path: UPath) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")


def _storage_options(path: UPath) -> dict:
    return dict(getattr(path, "storage_options", {}) or {})


def _prepare(frame: pl.DataFrame) -> pl.DataFrame:
    """Symbols are stored as plain strings (no per-file Enum categories)."""
    if "symbol" in frame.columns and frame.schema["symbol"] != pl.String:
        frame = frame.with_columns(pl.col("symbol").cast(pl.String))
    return frame


def _frames(obj: pl.DataFrame | pl.LazyFrame | Batches) -> tuple[pl.Schema, Iterator[pl.DataFrame]]:
    if isinstance(obj, pl.DataFrame):
        return obj.schema, iter([obj])
    if isinstance(obj, pl.LazyFrame):
        return obj.collect_schema(), iter(obj.collect_batches())
    if isinstance(obj, Batches):
        return obj.schema, iter(obj.frames)
    raise TypeError(f"cannot write {type(obj).__name__}: expected a polars DataFrame, LazyFrame or Batches")


def write_partition(obj: pl.DataFrame | pl.LazyFrame | Batches, root: UPath | str, dataset: str, day: date | str) -> WriteResult:
    """Write one day of ``dataset`` below ``root`` atomically; return rows, symbols and schema.

    A ``LazyFrame`` or :class:`Batches` is written batch by batch (memory bounded by a batch).
    """
    root = UPath(root)
    final = root / partition_file(dataset, day)
    schema, frames = _frames(obj)
    target_schema = _prepare(pl.DataFrame(schema=schema)).schema
    arrow_schema = pl.DataFrame(schema=target_schema).to_arrow().schema
    symbols: set[str] = set()
    rows = 0
    local = _is_local(root)
    if local:
        staging_dir = root / STAGING_DIR
        staging_dir.mkdir(parents=True, exist_ok=True)
        tmp = staging_dir / f"{uuid.uuid4().hex}.parquet.tmp"
        sink = str(tmp.path if hasattr(tmp, "path") else tmp)
    else:
        tmp = None
        sink = None
    writer = None
    handle = None
    try:
        if local:
            handle = open(sink, "wb")  # noqa: SIM115
        else:
            handle = final.open("wb")
        writer = pq.ParquetWriter(handle, arrow_schema, compression="zstd")
        for frame in frames:
            if frame.height == 0:
                continue
            frame = _prepare(frame)
            if frame.schema != target_schema:
                raise TypeError(f"{dataset} {day}: batch schema {frame.schema} differs from {target_schema}")
            if "symbol" in frame.columns:
                symbols.update(frame.get_column("symbol").unique().drop_nulls().to_list())
            rows += frame.height
            writer.write_table(frame.to_arrow().cast(arrow_schema))
        writer.add_key_value_metadata({SYMBOLS_KEY: json.dumps(sorted(symbols)).encode()})
        writer.close()
        writer = None
        handle.close()
        handle = None
        if local:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(sink, str(final.path if hasattr(final, "path") else final))
            tmp = None
    finally:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the original error matters
                pass
        if handle is not None:
            handle.close()
        if tmp is not None and local:
            try:
                os.unlink(sink)
            except FileNotFoundError:
                pass
    return WriteResult(str(final), rows, tuple(sorted(symbols)), target_schema)


def existing_days(root: UPath | str, dataset: str) -> list[date]:
    """Days with a partition file, sorted (a listing of the dataset folder, no reads)."""
    local = _local_path(UPath(root))
    if local is not None:
        folder = os.path.join(local, dataset)
        if not os.path.isdir(folder):
            return []
        days = []
        for name in os.listdir(folder):
            if name.startswith("date=") and os.path.exists(os.path.join(folder, name, PART_FILE)):
                try:
                    days.append(date.fromisoformat(name[5:]))
                except ValueError:
                    continue
        return sorted(days)
    base = UPath(root) / dataset
    if not base.exists():
        return []
    days = []
    for child in base.iterdir():
        name = child.name
        if name.startswith("date=") and (child / PART_FILE).exists():
            try:
                days.append(date.fromisoformat(name[5:]))
            except ValueError:
                continue
    return sorted(days)


def _local_path(path: UPath) -> str | None:
    """A plain filesystem path for a local UPath (fast path), else ``None``."""
    return str(path.path) if _is_local(path) else None


def file_symbols(path: UPath | str) -> tuple[str, ...]:
    """The symbol set recorded in a partition file's footer (reads the footer only)."""
    path = UPath(path)
    local = _local_path(path)
    if local is not None:
        meta = pq.read_metadata(local).metadata or {}
    else:
        with path.open("rb") as fh:
            meta = pq.ParquetFile(fh).metadata.metadata or {}
    if SYMBOLS_KEY in meta:
        return tuple(json.loads(meta[SYMBOLS_KEY]))
    # files written by other tools: read the column
    return tuple(sorted(pl.read_parquet(path.open("rb"), columns=["symbol"]).get_column("symbol").unique().drop_nulls().to_list()))


def footer_symbols(root: UPath | str, dataset: str, days: Sequence[date]) -> dict[date, tuple[str, ...]]:
    """``{day: symbols}`` for the given days, read from footers (in parallel on object stores)."""
    root = UPath(root)
    if _is_local(root):
        return {d: file_symbols(root / partition_file(dataset, d)) for d in days}
    with ThreadPoolExecutor(max_workers=8) as pool:
        result = pool.map(lambda d: file_symbols(root / partition_file(dataset, d)), days)
        return dict(zip(days, result, strict=True))


def symbol_enum(symbol_sets: Iterable[Iterable[str]]) -> pl.Enum:
    """``pl.Enum`` over the sorted union of symbol sets."""
    union: set[str] = set()
    for symbols in symbol_sets:
        union.update(symbols)
    return pl.Enum(sorted(union))


def _scan_source(root: UPath, dataset: str, days: Sequence[date]) -> tuple[list[str], dict]:
    paths = [root / partition_file(dataset, d) for d in days]
    if _is_local(root):
        return [str(p.path if hasattr(p, "path") else p) for p in paths], {}
    return [str(p) for p in paths], _storage_options(root)


def scan_days(
    root: UPath | str, dataset: str, days: Sequence[date], *, enum: pl.Enum | None = None, schema: pl.Schema | None = None
) -> pl.LazyFrame:
    """One ``LazyFrame`` over the given days of a dataset, ``symbol`` cast to one ``pl.Enum``.

    The Enum is the union of the days' footer symbol sets unless ``enum`` is given. Every day
    must exist (raises ``FileNotFoundError`` naming the missing days). With no days, an empty
    frame of ``schema`` (which must then be given).
    """
    root = UPath(root)
    days = sorted(set(days))
    local = _local_path(root)
    if local is not None:
        missing = [d for d in days if not os.path.exists(os.path.join(local, partition_file(dataset, d)))]
    else:
        missing = [d for d in days if not (root / partition_file(dataset, d)).exists()]
    if missing:
        shown = ", ".join(d.isoformat() for d in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise FileNotFoundError(f"{root / dataset}: no partition for {len(missing)} day(s): {shown}")
    if not days:
        if schema is None:
            raise ValueError(f"{root / dataset}: no days to scan and no schema given")
        frame = pl.LazyFrame(schema=schema)
        if enum is not None and "symbol" in schema:
            frame = frame.with_columns(pl.col("symbol").cast(enum))
        return frame
    if enum is None:
        enum = symbol_enum(footer_symbols(root, dataset, days).values())
    sources, options = _scan_source(root, dataset, days)
    lf = pl.scan_parquet(sources, hive_partitioning=False, storage_options=options or None)
    if "symbol" in lf.collect_schema():
        lf = lf.with_columns(pl.col("symbol").cast(enum))
    return lf
