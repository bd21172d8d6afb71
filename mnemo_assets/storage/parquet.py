"""Reading and writing hive-partitioned parquet datasets (local paths or any fsspec URL).

Each day is one file, ``{dataset}/date=YYYY-MM-DD/part-0.parquet``. Files store ``symbol`` as
plain (dictionary-encoded) strings and carry their sorted symbol set in the parquet footer
(key ``mnemo.symbols``), so the universe of a dataset and its ``pl.Enum`` come from footers
alone, and two days with different symbols never fail a read.

**Write, audit, publish.** A partition is first *staged* (:func:`stage_partition`: written to
``{root}/.staging/`` and fsynced), then audited by the caller (the asset's blocking checks),
and only then *published* (:func:`publish`: one atomic rename, or one PUT on object stores)
or *discarded* (:func:`discard`). A partition that fails its audit is never visible, a failed
or killed run leaves the previous partition as it was, and a reader never sees a half-written
file. :func:`write_partition` stages and publishes in one call.

**Checksums.** Every file carries a content hash of all its bytes in its footer (key
``mnemo.content``: xxh3-128 of the file with the hash field itself blanked). Readers verify
it (:func:`verify_partition`, once per file and process), so a flipped byte, a truncated or a
zero-byte file is a :class:`CorruptPartitionError` naming the dataset, the day and the path,
never different numbers.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from upath import UPath

from mnemo_assets.storage.layout import PART_FILE, STAGING_DIR, partition_file

SYMBOLS_KEY = b"mnemo.symbols"
_HOST = socket.gethostname().replace("-", "_")
CONTENT_KEY = b"mnemo.content"
#: what the content hash field holds while the file is hashed (same length as a real hash)
_BLANK = b"0" * 32
#: stale files in the staging folder older than this are left over from killed runs
STAGING_MAX_AGE_SECONDS = 6 * 3600


class PartitionError(Exception):
    """A stored partition that cannot be read as it is. The message names dataset, day and file."""


class MissingPartitionError(PartitionError, FileNotFoundError):
    """Days of a dataset that are not stored."""


class CorruptPartitionError(PartitionError):
    """A stored partition whose bytes are damaged (checksum mismatch, truncated, zero bytes)."""


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
    content_hash: str = ""
    size: int = 0


@dataclass
class Staged:
    """A partition written to the staging folder, not visible to readers until :func:`publish`."""

    root: UPath
    dataset: str
    day: date
    tmp: str  # local path of the staged file
    rows: int
    symbols: tuple[str, ...]
    schema: pl.Schema
    content_hash: str
    size: int
    published: bool = field(default=False)

    @property
    def final(self) -> UPath:
        return self.root / partition_file(self.dataset, self.day)

    def result(self) -> WriteResult:
        return WriteResult(str(self.final), self.rows, self.symbols, self.schema, self.content_hash, self.size)

    def frame(self) -> pl.DataFrame:
        """The staged data (for audits that read back what will be published)."""
        return pl.read_parquet(self.tmp)


# ----------------------------------------------------------------------------- filesystems
def _is_local(path: UPath) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")


def _local_path(path: UPath) -> str | None:
    """A plain filesystem path for a local UPath (fast path), else ``None``."""
    return str(path.path) if _is_local(path) else None


def _storage_options(path: UPath) -> dict:
    return dict(getattr(path, "storage_options", {}) or {})


def _fs(path: UPath):
    """The path's fsspec filesystem with its listing cache dropped: every listing and
    existence check reflects what any process has written."""
    fs = path.fs
    try:
        fs.invalidate_cache()
    except Exception:  # noqa: BLE001 - filesystems without a cache
        pass
    return fs


def local_staging_dir(root: UPath) -> str:
    """Where partitions are staged: below the root on local disks; a local temp folder for
    object stores (published with one PUT)."""
    local = _local_path(root)
    if local is not None:
        return os.path.join(local, STAGING_DIR)
    from mnemo_assets.storage.layout import local_cache_dir

    return os.path.join(local_cache_dir(), "staging")


# ----------------------------------------------------------------------------- writing
def _prepare(frame: pl.DataFrame) -> pl.DataFrame:
    """Symbols are stored as plain strings (no per-file Enum categories)."""
    if "symbol" in frame.columns and frame.schema["symbol"] != pl.String:
        frame = frame.with_columns(pl.col("symbol").cast(pl.String))
    return frame


def _storage_schema(schema: pl.Schema) -> pl.Schema:
    return _prepare(pl.DataFrame(schema=schema)).schema


def _frames(obj: pl.DataFrame | pl.LazyFrame | Batches) -> tuple[pl.Schema, Iterator[pl.DataFrame]]:
    if isinstance(obj, pl.DataFrame):
        return obj.schema, iter([obj])
    if isinstance(obj, pl.LazyFrame):
        return obj.collect_schema(), iter(obj.collect_batches())
    if isinstance(obj, Batches):
        return obj.schema, iter(obj.frames)
    raise TypeError(f"cannot write {type(obj).__name__}: expected a polars DataFrame, LazyFrame or Batches")


def _footer_span(fh, size: int) -> tuple[int, int]:
    """``(start, length)`` of the thrift footer of a parquet file of ``size`` bytes."""
    if size < 12:
        raise ValueError(f"{size} bytes is too short for a parquet file")
    fh.seek(size - 8)
    tail = fh.read(8)
    if tail[4:] != b"PAR1":
        raise ValueError("no parquet magic at the end of the file")
    (length,) = struct.unpack("<I", tail[:4])
    if length + 12 > size:
        raise ValueError(f"footer length {length} exceeds the file size {size}")
    return size - 8 - length, length


def _content_hash(fh, size: int, stored: bytes) -> str:
    """xxh3-128 of the file's bytes with the (unique) stored hash in the footer blanked."""
    start, length = _footer_span(fh, size)
    fh.seek(start)
    footer = fh.read(length)
    if footer.count(stored) != 1:
        raise ValueError("the content hash field is not found exactly once in the footer")
    digest = xxhash.xxh3_128()
    fh.seek(0)
    remaining = start
    while remaining:
        chunk = fh.read(min(remaining, 1 << 22))
        if not chunk:
            raise ValueError("file shorter than its footer says")
        digest.update(chunk)
        remaining -= len(chunk)
    digest.update(footer.replace(stored, _BLANK))
    digest.update(fh.read(8))
    return digest.hexdigest()


def _seal(path: str) -> tuple[str, int]:
    """Put the content hash into a freshly written file's footer (in place); fsync; return
    ``(hash, size)``."""
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        content = _content_hash(fh, size, _BLANK)
        start, length = _footer_span(fh, size)
        fh.seek(start)
        footer = fh.read(length)
        at = footer.index(_BLANK)
        fh.seek(start + at)
        fh.write(content.encode())
        fh.flush()
        os.fsync(fh.fileno())
    return content, size


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def stage_partition(
    obj: pl.DataFrame | pl.LazyFrame | Batches,
    root: UPath | str,
    dataset: str,
    day: date | str,
    schema: pl.Schema | None = None,
) -> Staged:
    """Write one day of ``dataset`` to the staging folder (fsynced, sealed with its content
    hash); nothing is visible to readers until :func:`publish`.

    ``schema``, when given, is the dataset's schema: the data must have exactly its columns,
    in order, with its dtypes (``symbol`` may be an Enum or Categorical; it is stored as a
    string). A ``LazyFrame`` or :class:`Batches` is written batch by batch (memory bounded by
    a batch). On any error the staged file is removed and the error propagates.
    """
    root = UPath(root)
    day = day if isinstance(day, date) else date.fromisoformat(day)
    data_schema, frames = _frames(obj)
    target = _storage_schema(schema if schema is not None else data_schema)
    if schema is not None and _storage_schema(data_schema) != target:
        raise TypeError(
            f"{dataset} {day}: columns {dict(_storage_schema(data_schema))} differ from the dataset's schema {dict(target)}"
        )
    arrow_schema = pl.DataFrame(schema=target).to_arrow().schema
    staging = local_staging_dir(root)
    os.makedirs(staging, exist_ok=True)
    # the writer's host and pid in the name: a later run removes what a killed writer left
    tmp = os.path.join(staging, f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex}.parquet.tmp")
    symbols: set[str] = set()
    rows = 0
    writer = None
    try:
        writer = pq.ParquetWriter(tmp, arrow_schema, compression="zstd", write_statistics=True)
        for frame in frames:
            if frame.height == 0:
                continue
            frame = _prepare(frame)
            if frame.schema != target:
                raise TypeError(f"{dataset} {day}: batch schema {dict(frame.schema)} differs from {dict(target)}")
            if "symbol" in frame.columns:
                symbols.update(frame.get_column("symbol").unique().drop_nulls().to_list())
            rows += frame.height
            writer.write_table(frame.to_arrow().cast(arrow_schema))
        writer.add_key_value_metadata({SYMBOLS_KEY: json.dumps(sorted(symbols)).encode(), CONTENT_KEY: _BLANK})
        writer.close()
        writer = None
        content, size = _seal(tmp)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the original error matters
                pass
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return Staged(root, dataset, day, tmp, rows, tuple(sorted(symbols)), target, content, size)


def publish(staged: Staged) -> WriteResult:
    """Make a staged partition visible: one atomic rename (local) or one PUT (object stores).
    The previous partition of that day, if any, is replaced as a whole."""
    if staged.published:
        return staged.result()
    final = staged.final
    local = _local_path(final)
    if local is not None:
        os.makedirs(os.path.dirname(local), exist_ok=True)
        os.replace(staged.tmp, local)
        _fsync_dir(os.path.dirname(local))
    else:
        fs = final.fs
        fs.put_file(staged.tmp, final.path)
        os.unlink(staged.tmp)
        try:
            fs.invalidate_cache()
        except Exception:  # noqa: BLE001
            pass
    staged.published = True
    _VERIFIED.pop(str(final), None)
    return staged.result()


def discard(staged: Staged) -> None:
    """Drop a staged partition (the published one, if any, stays as it was)."""
    if not staged.published:
        try:
            os.unlink(staged.tmp)
        except FileNotFoundError:
            pass


def write_partition(
    obj: pl.DataFrame | pl.LazyFrame | Batches, root: UPath | str, dataset: str, day: date | str, schema: pl.Schema | None = None
) -> WriteResult:
    """Stage and publish one day of ``dataset`` (see :func:`stage_partition`)."""
    return publish(stage_partition(obj, root, dataset, day, schema))


def _writer_gone(name: str) -> bool:
    """Whether the staged file ``name`` was written by a process of this host that is gone."""
    parts = name.split("-")
    if len(parts) < 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # pragma: no cover - another user's live process
        return False
    return False


def cleanup_staging(root: UPath | str, max_age_seconds: float = STAGING_MAX_AGE_SECONDS) -> list[str]:
    """Remove staged files left over by killed writers: those whose writing process (on this
    host) is gone, and any older than ``max_age_seconds``."""
    staging = local_staging_dir(UPath(root))
    removed: list[str] = []
    if not os.path.isdir(staging):
        return removed
    now = time.time()
    for name in os.listdir(staging):
        path = os.path.join(staging, name)
        try:
            if _writer_gone(name) or now - os.path.getmtime(path) > max_age_seconds:
                os.unlink(path)
                removed.append(path)
        except FileNotFoundError:
            continue
    return removed


# ----------------------------------------------------------------------------- listing
def existing_days(root: UPath | str, dataset: str) -> list[date]:
    """Days with a partition file, sorted: a fresh listing of the dataset folder (no cache,
    no data read; a zero-byte or damaged file is listed and reported when read)."""
    root = UPath(root)
    local = _local_path(root)
    if local is not None:
        folder = os.path.join(local, dataset)
        if not os.path.isdir(folder):
            return []
        names = [n for n in os.listdir(folder) if os.path.exists(os.path.join(folder, n, PART_FILE))]
    else:
        fs = _fs(root)
        base = (root / dataset).path
        try:
            found = fs.glob(f"{base}/date=*/{PART_FILE}")
        except FileNotFoundError:
            return []
        names = [p.rstrip("/").split("/")[-2] for p in found]
    days = []
    for name in names:
        if name.startswith("date="):
            try:
                days.append(date.fromisoformat(name[5:]))
            except ValueError:
                continue
    return sorted(set(days))


# ----------------------------------------------------------------------------- verified reads
_VERIFIED: dict[str, tuple] = {}
_VERIFIED_LOCK = threading.Lock()


@dataclass(frozen=True)
class PartitionInfo:
    path: str
    size: int
    rows: int
    symbols: tuple[str, ...]
    content_hash: str | None


def _where(dataset: str, day: date | None, path: str) -> str:
    return f"{dataset} {day.isoformat() if day else ''} ({path})".replace("  ", " ")


def _open(path: UPath):
    local = _local_path(path)
    return open(local, "rb") if local is not None else path.open("rb")


def verify_partition(root: UPath | str, dataset: str, day: date, *, full: bool | None = None) -> PartitionInfo:
    """Check one stored partition and return what its footer says.

    Raises :class:`MissingPartitionError` when the file is not there and
    :class:`CorruptPartitionError` when it is empty, truncated, not parquet, or its content
    hash does not match (any flipped byte). The full-content check (``full``, default: on
    local disks) reads the file once per process and file version.
    """
    root = UPath(root)
    path = root / partition_file(dataset, day)
    key = str(path)
    local = _local_path(path)
    full = (local is not None) if full is None else full
    try:
        if local is not None:
            st = os.stat(local)
            size, stamp = st.st_size, (st.st_size, st.st_mtime_ns, st.st_ino)
        else:
            info = _fs(root).info(path.path)
            size = int(info.get("size") or 0)
            stamp = (size, info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime"))
    except FileNotFoundError:
        raise MissingPartitionError(f"{_where(dataset, day, key)}: no partition stored for this day") from None
    with _VERIFIED_LOCK:
        cached = _VERIFIED.get(key)
    if cached is not None and cached[0] == stamp and (cached[2] or not full):
        return cached[1]
    if size == 0:
        raise CorruptPartitionError(f"{_where(dataset, day, key)}: the partition file is empty (0 bytes)")
    try:
        with _open(path) as fh:
            meta = pq.ParquetFile(fh).metadata
            kv = meta.metadata or {}
            stored = kv.get(CONTENT_KEY)
            if full and stored is not None:
                actual = _content_hash(fh, size, stored)
                if actual.encode() != stored:
                    raise CorruptPartitionError(
                        f"{_where(dataset, day, key)}: content hash mismatch (stored {stored.decode()}, "
                        f"computed {actual}): the file was damaged after it was written; re-materialize this day"
                    )
    except PartitionError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CorruptPartitionError(f"{_where(dataset, day, key)}: not a readable parquet file ({exc})") from exc
    symbols = tuple(json.loads(kv[SYMBOLS_KEY])) if SYMBOLS_KEY in kv else None
    if symbols is None:  # files written by other tools: read the column
        with _open(path) as fh:
            table = pq.read_table(fh, columns=["symbol"]) if "symbol" in meta.schema.names else None
        symbols = tuple(sorted(set(table.column("symbol").drop_null().to_pylist()))) if table is not None else ()
    info = PartitionInfo(key, size, meta.num_rows, symbols, stored.decode() if stored else None)
    with _VERIFIED_LOCK:
        _VERIFIED[key] = (stamp, info, full)
    return info


def _symbol_ranges(meta: pq.FileMetaData) -> list[tuple[int, int, str | None, str | None]]:
    """``(row group, rows, min symbol, max symbol)`` of every non-empty row group; ``None``
    bounds where the footer has no statistics (or no ``symbol`` column)."""
    names = [meta.schema.column(j).path for j in range(meta.num_columns)]
    j = names.index("symbol") if "symbol" in names else None
    out = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        if rg.num_rows == 0:
            continue
        stats = rg.column(j).statistics if j is not None else None
        if stats is not None and stats.has_min_max and isinstance(stats.min, str) and isinstance(stats.max, str):
            out.append((i, rg.num_rows, stats.min, stats.max))
        else:
            out.append((i, rg.num_rows, None, None))
    return out


def symbol_batch_plan(meta: pq.FileMetaData, min_rows: int) -> list[list[int]]:
    """Row groups to read together so that no symbol is split across reads: row groups whose
    ``[min, max]`` symbol ranges (footer statistics) overlap form one group, groups are taken in
    ascending symbol order and packed until a read holds ``min_rows`` rows. A row group without
    statistics overlaps everything (the whole file is then one read)."""
    ranges = _symbol_ranges(meta)
    if any(lo is None for _, _, lo, _ in ranges):
        return [[i for i, *_ in ranges]] if ranges else []
    components: list[tuple[list[int], int]] = []  # (row groups, rows), ascending symbol ranges
    top: str | None = None
    for i, rows, lo, hi in sorted(ranges, key=lambda r: (r[2], r[3], r[0])):
        if components and lo <= top:  # overlaps the current component (closed ranges)
            components[-1][0].append(i)
            components[-1] = (components[-1][0], components[-1][1] + rows)
            top = max(top, hi)
        else:
            components.append(([i], rows))
            top = hi
    plan: list[list[int]] = []
    size = 0
    for groups, rows in components:
        if plan and size < min_rows:
            plan[-1].extend(groups)
            size += rows
        else:
            plan.append(list(groups))
            size = rows
    return [sorted(p) for p in plan]


def symbol_batches(
    root: UPath | str, dataset: str, day: date, min_rows: int = 2_000_000, columns: Sequence[str] | None = None
) -> Iterator[pl.DataFrame]:
    """One stored partition, read a batch of whole symbols at a time (see :func:`symbol_batch_plan`):
    batches come in ascending symbol order, no symbol spans two batches, and a batch holds about
    ``min_rows`` rows (more when one symbol alone has more). For a symbol-clustered file (the
    trades: one or more row groups per pair) memory is bounded by a batch, not by the day; a
    file that is not clustered is read as one batch. ``symbol`` is a String. The file is
    verified first (:func:`verify_partition`)."""
    root = UPath(root)
    day = day if isinstance(day, date) else date.fromisoformat(day)
    verify_partition(root, dataset, day)
    path = root / partition_file(dataset, day)
    with _open(path) as fh:
        pf = pq.ParquetFile(fh)
        for groups in symbol_batch_plan(pf.metadata, min_rows):
            table = pf.read_row_groups(groups, columns=list(columns) if columns is not None else None)
            frame = pl.from_arrow(table)
            del table
            yield frame


def file_symbols(path: UPath | str) -> tuple[str, ...]:
    """The symbol set recorded in a partition file's footer (reads the footer only)."""
    path = UPath(path)
    with _open(path) as fh:
        meta = pq.ParquetFile(fh).metadata.metadata or {}
    if SYMBOLS_KEY in meta:
        return tuple(json.loads(meta[SYMBOLS_KEY]))
    with _open(path) as fh:
        return tuple(sorted(set(pq.read_table(fh, columns=["symbol"]).column("symbol").drop_null().to_pylist())))


def footer_symbols(root: UPath | str, dataset: str, days: Sequence[date], *, verify: bool = True) -> dict[date, tuple[str, ...]]:
    """``{day: symbols}`` for the given days, from verified footers (in parallel on object stores)."""
    root = UPath(root)

    def one(day: date) -> tuple[str, ...]:
        return verify_partition(root, dataset, day, full=None if verify else False).symbols

    if _is_local(root):
        return {d: one(d) for d in days}
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(days, pool.map(one, days), strict=True))


def symbol_enum(symbol_sets: Iterable[Iterable[str]]) -> pl.Enum:
    """``pl.Enum`` over the sorted union of symbol sets."""
    union: set[str] = set()
    for symbols in symbol_sets:
        union.update(symbols)
    return pl.Enum(sorted(union))


def polars_storage_options(root: UPath) -> dict | None:
    """object_store options for polars' own readers from a UPath's fsspec options and the
    usual AWS environment variables (``AWS_ENDPOINT_URL`` included)."""
    if _is_local(root):
        return None
    opts = _storage_options(root)
    out: dict[str, str] = {}
    client = opts.get("client_kwargs") or {}
    endpoint = opts.get("endpoint_url") or client.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        out["aws_endpoint_url"] = endpoint
        if endpoint.startswith("http://"):
            out["aws_allow_http"] = "true"
    for ours, theirs in (("key", "aws_access_key_id"), ("secret", "aws_secret_access_key"), ("token", "aws_session_token")):
        if opts.get(ours):
            out[theirs] = opts[ours]
    region = client.get("region_name") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        out["aws_region"] = region
    return out or None


def scan_days(
    root: UPath | str,
    dataset: str,
    days: Sequence[date],
    *,
    enum: pl.Enum | None = None,
    schema: pl.Schema | None = None,
    verify: bool = True,
) -> pl.LazyFrame:
    """One ``LazyFrame`` over the given days of a dataset, ``symbol`` cast to one ``pl.Enum``.

    Every day must be stored (:class:`MissingPartitionError` names the missing days) and
    intact (:class:`CorruptPartitionError`, see :func:`verify_partition`). The Enum is the
    union of the days' footer symbol sets unless ``enum`` is given. With no days, an empty
    frame of ``schema`` (which must then be given).
    """
    root = UPath(root)
    days = sorted(set(days))
    if not days:
        if schema is None:
            raise ValueError(f"{root / dataset}: no days to scan and no schema given")
        frame = pl.LazyFrame(schema=schema)
        if enum is not None and "symbol" in schema:
            frame = frame.with_columns(pl.col("symbol").cast(enum))
        return frame
    stored = set(existing_days(root, dataset))
    missing = [d for d in days if d not in stored]
    if missing:
        shown = ", ".join(d.isoformat() for d in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise MissingPartitionError(f"{root / dataset}: no partition for {len(missing)} day(s): {shown}")
    symbols = footer_symbols(root, dataset, days, verify=verify)
    if enum is None:
        enum = symbol_enum(symbols.values())
    paths = [root / partition_file(dataset, d) for d in days]
    if _is_local(root):
        sources = [str(p.path) for p in paths]
    else:
        sources = [str(p) for p in paths]
    lf = pl.scan_parquet(sources, hive_partitioning=False, storage_options=polars_storage_options(root))
    if "symbol" in lf.collect_schema():
        lf = lf.with_columns(pl.col("symbol").cast(enum))
    return lf
