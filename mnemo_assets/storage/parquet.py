"""Reading and writing hive-partitioned parquet datasets (local paths or any fsspec URL).

Each day is one file, ``{dataset}/date=YYYY-MM-DD/part-0.parquet``. Files store ``symbol`` as
plain (dictionary-encoded) strings and carry their sorted symbol set in the parquet footer
(key ``mnemo.symbols``), so the universe of a dataset and its ``pl.Enum`` come from footers
alone, and two days with different symbols never fail a read.

**Write, audit, publish.** A partition is first *staged* (:func:`stage_partition`: written to
``{root}/.staging/`` on local roots, to a local folder for object stores (see
:func:`local_staging_dir`), and fsynced), then audited by the caller (the asset's blocking checks),
and only then *published* (:func:`publish`: one atomic rename, or one PUT on object stores)
or *discarded* (:func:`discard`). A partition that fails its audit is never visible, a failed
or killed run leaves the previous partition as it was, and a reader never sees a half-written
file. :func:`write_partition` stages and publishes in one call.

**Checksums.** Every file carries a content hash of all its bytes in its footer (key
``mnemo.content``: xxh3-128 of the file with the hash field itself blanked). Readers verify
it (:func:`verify_partition`, once per file version and process), so a flipped byte, a
truncated or a zero-byte file is a :class:`CorruptPartitionError` naming the dataset, the day
and the path, never different numbers. On object stores (``s3://`` ...) reads go through
local snapshots (:func:`snapshot`: each object version fetched whole with one GET and checked
against its content hash, then read locally), so the full check costs no extra request there
either; :func:`verify_partition` alone (footers for the symbol Enum, the checks) fetches only
the footer (one ranged GET of the tail) and checks the object's size (non-zero, at least a
parquet header and footer, the footer length within it) unless asked for the full check.

**Listings are never stale.** Every existence check and listing (:func:`list_partitions`,
:func:`existing_days`, the reads) asks the store itself, each time: a directory listing on
local disks, one recursive ``ListObjectsV2`` (paginated, 1,000 keys a page) per dataset on
object stores, after dropping fsspec's listing cache. A listing also gives each file's size and
version (mtime and inode locally, ETag on object stores): verified footers are cached per
file *version*, so a file rewritten by another process is read again, and warm reads cost one
listing per dataset and no request per file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    except Exception:
        pass
    return fs


def local_staging_dir(root: UPath | str, staging_dir: str | None = None) -> str:
    """Where partitions are staged before they are published: ``staging_dir`` when given (the
    settings pass ``{local_root}/.staging``), else below the root on local disks (same
    filesystem: the publish is a rename) and ``{local cache}/staging`` for object stores (a
    local file, published with one PUT and then removed; see ``local_cache_dir``)."""
    if staging_dir is not None:
        return staging_dir
    local = _local_path(UPath(root))
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
    staging_dir: str | None = None,
) -> Staged:
    """Write one day of ``dataset`` to the staging folder (fsynced, sealed with its content
    hash; see :func:`local_staging_dir`); nothing is visible to readers until :func:`publish`.

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
        raise TypeError(f"{dataset} {day}: columns {dict(_storage_schema(data_schema))} differ from the dataset's schema {dict(target)}")
    arrow_schema = pl.DataFrame(schema=target).to_arrow().schema
    staging = local_staging_dir(root, staging_dir)
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
            except Exception:
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
        # one PutObject (multipart above s3fs' 50 MiB chunk size: the object appears only at
        # CompleteMultipartUpload); either way readers see the old object or the new one
        fs = final.fs
        fs.put_file(staged.tmp, final.path)
        os.unlink(staged.tmp)
        try:
            fs.invalidate_cache()
        except Exception:
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
    obj: pl.DataFrame | pl.LazyFrame | Batches,
    root: UPath | str,
    dataset: str,
    day: date | str,
    schema: pl.Schema | None = None,
    staging_dir: str | None = None,
) -> WriteResult:
    """Stage and publish one day of ``dataset`` (see :func:`stage_partition`); a failed
    publish leaves the stored partition as it was and removes the staged file."""
    staged = stage_partition(obj, root, dataset, day, schema, staging_dir)
    try:
        return publish(staged)
    finally:
        discard(staged)


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


def cleanup_staging(root: UPath | str, max_age_seconds: float = STAGING_MAX_AGE_SECONDS, staging_dir: str | None = None) -> list[str]:
    """Remove staged files left over by killed writers: those whose writing process (on this
    host) is gone, and any older than ``max_age_seconds``."""
    staging = local_staging_dir(root, staging_dir)
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
#: what a listing says of one file: ``(size, version)``; the version is ``(mtime_ns, inode)``
#: on local disks and the ETag (else the modification time) on object stores
Stamp = tuple
_DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def _object_stamp(info: dict) -> Stamp:
    size = int(info.get("size") or info.get("Size") or 0)
    version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or info.get("updated")
    return size, str(version) if version is not None else None


def _day_of(name: str) -> date | None:
    match = _DAY_DIR.match(name)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def list_partitions(root: UPath | str, dataset: str) -> dict[date, Stamp]:
    """``{day: (size, version)}`` of every stored partition file of ``dataset``: a fresh
    listing each call (no cache; what any process has written), no data read. Local disks:
    one directory listing and a ``stat`` per day; object stores: one recursive listing of
    ``{dataset}/date=`` (one request per 1,000 objects). A zero-byte or damaged file is listed
    (and reported when read)."""
    root = UPath(root)
    local = _local_path(root)
    out: dict[date, Stamp] = {}
    if local is not None:
        folder = os.path.join(local, dataset)
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return out
        for name in names:
            day = _day_of(name)
            if day is None:
                continue
            try:
                st = os.stat(os.path.join(folder, name, PART_FILE))
            except (FileNotFoundError, NotADirectoryError):
                continue
            out[day] = (st.st_size, (st.st_mtime_ns, st.st_ino))
        return out
    fs = _fs(root)
    base = (root / dataset).path.rstrip("/")
    try:
        try:
            found = fs.find(base, prefix="date=", detail=True)
        except TypeError:  # filesystems without a server-side prefix filter
            found = fs.find(base, detail=True)
    except FileNotFoundError:
        return out
    for name, info in found.items():
        rest = name.rstrip("/")[len(base) + 1 :] if name.startswith(base + "/") else ""
        parts = rest.split("/")
        if len(parts) != 2 or parts[1] != PART_FILE or info.get("type") == "directory":
            continue
        day = _day_of(parts[0])
        if day is not None:
            out[day] = _object_stamp(info)
    return out


def existing_days(root: UPath | str, dataset: str) -> list[date]:
    """Days with a partition file, sorted (a fresh listing: :func:`list_partitions`)."""
    return sorted(list_partitions(root, dataset))


# ----------------------------------------------------------------------------- verified reads
_VERIFIED: dict[str, tuple] = {}
_VERIFIED_LOCK = threading.Lock()
#: bytes fetched from the end of an object to read its footer (one ranged GET; a longer
#: footer costs a second one)
TAIL_BYTES = 256 * 1024


@dataclass(frozen=True)
class PartitionInfo:
    path: str
    size: int
    rows: int
    symbols: tuple[str, ...]
    content_hash: str | None
    columns: tuple[str, ...] = ()
    #: the ``(size, version)`` of the file this describes (see :func:`list_partitions`)
    stamp: Stamp | None = None


def _where(dataset: str, day: date | None, path: str) -> str:
    return f"{dataset} {day.isoformat() if day else ''} ({path})".replace("  ", " ")


def _open(path: UPath):
    local = _local_path(path)
    return open(local, "rb") if local is not None else path.open("rb")


class _Tail(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only the last ``len(data)`` are known (the
    footer of an object fetched with one ranged GET): enough for pyarrow to parse the footer."""

    def __init__(self, data: bytes, size: int):
        super().__init__()
        self._data, self._size, self._start, self._pos = data, size, size - len(data), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        if self._pos >= self._size:
            return 0
        if self._pos < self._start:
            raise OSError(f"byte {self._pos} lies before the {len(self._data)} tail bytes fetched")
        chunk = self._data[self._pos - self._start : self._pos - self._start + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def _ranged_get(fs, path: str, suffix: int) -> tuple[bytes, int, Stamp]:
    """The last ``suffix`` bytes of an object, the object's size and its stamp, from one GET
    (``Range: bytes=-N``): one version whatever is being written meanwhile. On S3 (s3fs) size
    and ETag come from that response; other filesystems ask for them separately."""
    if hasattr(fs, "_call_s3") and hasattr(fs, "split_path"):
        from fsspec.asyn import sync

        bucket, key, _ = fs.split_path(path)

        async def get():
            resp = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes=-{suffix}")
            try:
                body = await resp["Body"].read()
            finally:
                resp["Body"].close()
            return resp, body

        resp, body = sync(fs.loop, get)
        total = str(resp.get("ContentRange") or "").rpartition("/")[2]
        size = int(total) if total.isdigit() else len(body)
        return body, size, (size, str(resp.get("ETag")) if resp.get("ETag") else None)
    stamp = _object_stamp(fs.info(path))
    return fs.cat_file(path, start=-suffix), int(stamp[0]), stamp


def _object_tail(fs, path: str) -> tuple[_Tail, Stamp]:
    """The tail of an object holding its whole footer, and the object's stamp: one GET (two for
    a footer longer than :data:`TAIL_BYTES`, both of the same version), after checking the
    size, the trailing magic and the footer length against the size."""
    for _attempt in range(4):
        tail, size, stamp = _ranged_get(fs, path, TAIL_BYTES)
        if size < 12:
            raise ValueError(f"{size} bytes is too short for a parquet file")
        if len(tail) != min(size, TAIL_BYTES):
            raise ValueError(f"the object is shorter than its {size} bytes (got {len(tail)} of its last {min(size, TAIL_BYTES)})")
        if tail[-4:] != b"PAR1":
            raise ValueError("no parquet magic at the end of the file")
        (length,) = struct.unpack("<I", tail[-8:-4])
        if length + 12 > size:
            raise ValueError(f"footer length {length} exceeds the file size {size}")
        if length + 8 <= len(tail):
            return _Tail(tail, size), stamp
        tail, _size2, stamp2 = _ranged_get(fs, path, length + 8)
        if stamp2 == stamp:
            return _Tail(tail, size), stamp
        # replaced between the two reads: start again
    raise ValueError("the object kept changing while its footer was read")


def verify_partition(root: UPath | str, dataset: str, day: date, *, full: bool | None = None, stamp: Stamp | None = None) -> PartitionInfo:
    """Check one stored partition and return what its footer says.

    Raises :class:`MissingPartitionError` when the file is not there and
    :class:`CorruptPartitionError` when it is empty, truncated, not parquet, or its content
    hash does not match (any flipped byte). The full-content check (``full``, default: on
    local disks, off on object stores; see the module docstring) reads the file once per
    process and file version. ``stamp`` is what a fresh listing said of the file
    (:func:`list_partitions`): given, the file is not stat'ed (no HEAD request) and a footer
    already verified for that version costs nothing.
    """
    root = UPath(root)
    path = root / partition_file(dataset, day)
    key = str(path)
    local = _local_path(path)
    full = (local is not None) if full is None else full
    if stamp is None:
        try:
            if local is not None:
                st = os.stat(local)
                stamp = (st.st_size, (st.st_mtime_ns, st.st_ino))
            else:
                stamp = _object_stamp(_fs(root).info(path.path))
        except FileNotFoundError:
            raise MissingPartitionError(f"{_where(dataset, day, key)}: no partition stored for this day") from None
    size = int(stamp[0])
    with _VERIFIED_LOCK:
        cached = _VERIFIED.get(key)
    if cached is not None and cached[0] == stamp and (cached[2] or not full):
        return cached[1]
    if size == 0:
        raise CorruptPartitionError(f"{_where(dataset, day, key)}: the partition file is empty (0 bytes)")
    try:
        if local is not None:
            with _open(path) as fh:
                _footer_span(fh, size)
                fh.seek(0)
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
        else:
            try:
                tail, stamp = _object_tail(root.fs, path.path)
            except ValueError:
                if int(_object_stamp(_fs(root).info(path.path))[0]) == 0:
                    raise CorruptPartitionError(f"{_where(dataset, day, key)}: the partition file is empty (0 bytes)") from None
                raise
            size = int(stamp[0])
            meta = pq.ParquetFile(tail).metadata
            kv = meta.metadata or {}
            stored = kv.get(CONTENT_KEY)
    except PartitionError:
        raise
    except FileNotFoundError:
        raise MissingPartitionError(f"{_where(dataset, day, key)}: no partition stored for this day (deleted meanwhile)") from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CorruptPartitionError(f"{_where(dataset, day, key)}: not a readable parquet file ({exc})") from exc
    symbols = tuple(json.loads(kv[SYMBOLS_KEY])) if SYMBOLS_KEY in kv else None
    if symbols is None:  # files written by other tools: read the column
        with _open(path) as fh:
            table = pq.read_table(fh, columns=["symbol"]) if "symbol" in meta.schema.names else None
        symbols = tuple(sorted(set(table.column("symbol").drop_null().to_pylist()))) if table is not None else ()
    info = PartitionInfo(key, size, meta.num_rows, symbols, stored.decode() if stored else None, tuple(meta.schema.names), stamp)
    if local is None and full:
        got = snapshot(root, dataset, day, info)[1]  # fetched whole, its content hash checked
        if got is not info:  # replaced meanwhile: the newer version, not cached under this stamp
            return got
    with _VERIFIED_LOCK:
        _VERIFIED[key] = (stamp, info, full)
    return info


def file_symbols(path: UPath | str) -> tuple[str, ...]:
    """The symbol set recorded in a partition file's footer (reads the footer only)."""
    path = UPath(path)
    with _open(path) as fh:
        meta = pq.ParquetFile(fh).metadata.metadata or {}
    if SYMBOLS_KEY in meta:
        return tuple(json.loads(meta[SYMBOLS_KEY]))
    with _open(path) as fh:
        return tuple(sorted(set(pq.read_table(fh, columns=["symbol"]).column("symbol").drop_null().to_pylist())))


def footer_infos(
    root: UPath | str, dataset: str, days: Sequence[date], *, verify: bool = True, listing: Mapping[date, Stamp] | None = None
) -> dict[date, PartitionInfo]:
    """``{day: PartitionInfo}`` for the given days, from verified footers (in parallel on
    object stores). With ``listing`` (:func:`list_partitions`), days it lacks are a
    :class:`MissingPartitionError` and files are not stat'ed again."""
    root = UPath(root)
    if listing is not None:
        missing = [d for d in days if d not in listing]
        if missing:
            raise MissingPartitionError(f"{root / dataset}: {_missing_text(missing)}")

    def one(day: date) -> PartitionInfo:
        return verify_partition(root, dataset, day, full=None if verify else False, stamp=None if listing is None else listing[day])

    if _is_local(root) or len(days) < 2:
        return {d: one(d) for d in days}
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(days, pool.map(one, days), strict=True))


def footer_symbols(
    root: UPath | str, dataset: str, days: Sequence[date], *, verify: bool = True, listing: Mapping[date, Stamp] | None = None
) -> dict[date, tuple[str, ...]]:
    """``{day: symbols}`` for the given days, from verified footers (see :func:`footer_infos`)."""
    return {d: info.symbols for d, info in footer_infos(root, dataset, days, verify=verify, listing=listing).items()}


# ----------------------------------------------------------------------------- snapshots
#: cached object versions unused for longer than this may be removed to keep the cache
#: within its budget (a LazyFrame is expected to be collected within this time)
SNAPSHOT_MIN_AGE_SECONDS = 3600
#: the snapshot cache's budget: ``$MNEMO_SNAPSHOT_CACHE_GB`` (default 20)
_SNAPSHOT_BUDGET_ENV = "MNEMO_SNAPSHOT_CACHE_GB"
_SNAPSHOTS: dict[tuple[str, Stamp], str] = {}
_SNAPSHOT_LOCK = threading.Lock()


def snapshot_dir() -> str:
    """Where object versions read from object stores are kept: ``{local cache}/objects``
    (content-addressed: one file per content hash, shared by processes)."""
    from mnemo_assets.storage.layout import local_cache_dir

    return os.path.join(local_cache_dir(), "objects")


def _file_content_hash(path: str) -> tuple[str | None, str]:
    """``(stored, computed)`` content hash of a local partition file."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        kv = pq.ParquetFile(fh).metadata.metadata or {}
        stored = kv.get(CONTENT_KEY)
        if stored is None:
            return None, ""
        return stored.decode(), _content_hash(fh, size, stored)


def _local_info(path: str, url: str) -> PartitionInfo:
    """What the footer of a local copy of a partition says."""
    meta = pq.ParquetFile(path).metadata
    kv = meta.metadata or {}
    stored = kv.get(CONTENT_KEY)
    if SYMBOLS_KEY in kv:
        symbols = tuple(json.loads(kv[SYMBOLS_KEY]))
    elif "symbol" in meta.schema.names:
        symbols = tuple(sorted(set(pq.read_table(path, columns=["symbol"]).column("symbol").drop_null().to_pylist())))
    else:
        symbols = ()
    return PartitionInfo(url, os.path.getsize(path), meta.num_rows, symbols, stored.decode() if stored else None, tuple(meta.schema.names))


def snapshot(root: UPath | str, dataset: str, day: date, info: PartitionInfo) -> tuple[str, PartitionInfo]:
    """A local, verified copy of one version of an object-store partition: its path and what
    its footer says.

    Polars reads an object with several ranged GETs (footer, then column chunks): an object
    replaced between them (a re-materialization of that day) makes the read fail. A snapshot
    is fetched whole and checked against the content hash in its own footer, so a reader gets
    the old version or the new one, complete, and never a mix. ``info`` is the version
    expected (:func:`verify_partition`); when the object was replaced meanwhile, the copy is of
    the newer version and the returned info says so. Snapshots are named by content hash below
    :func:`snapshot_dir`: a version is fetched once per machine, and a day re-materialized
    with identical bytes is not fetched again."""
    root = UPath(root)
    path = root / partition_file(dataset, day)
    url = str(path)
    with _SNAPSHOT_LOCK:
        known = _SNAPSHOTS.get((url, info.stamp)) if info.stamp is not None else None
    if known is not None and os.path.exists(known):
        return known, info
    folder = snapshot_dir()
    os.makedirs(folder, exist_ok=True)
    name = info.content_hash or hashlib.sha256(f"{url}\0{info.stamp!r}".encode()).hexdigest()[:32]
    local = os.path.join(folder, f"{name}.parquet")
    got = info
    if os.path.exists(local):
        os.utime(local)
    else:
        last: Exception | None = None
        for _attempt in range(3):
            tmp = os.path.join(folder, f".{uuid.uuid4().hex}.tmp")
            try:
                root.fs.get_file(path.path, tmp)
                stored, computed = _file_content_hash(tmp)
                if stored is not None and stored != computed:
                    raise ValueError(f"content hash mismatch (stored {stored}, computed {computed})")
                if stored is not None and stored != info.content_hash:
                    # replaced since its footer was read: a newer version, complete
                    local = os.path.join(folder, f"{stored}.parquet")
                    got = _local_info(tmp, url)
                os.replace(tmp, local)
                last = None
                break
            except FileNotFoundError:
                raise MissingPartitionError(f"{_where(dataset, day, url)}: no partition stored for this day (deleted meanwhile)") from None
            except (OSError, ValueError, pa.ArrowException) as exc:  # a torn or damaged read: fetch again
                last = exc
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        if last is not None:
            raise CorruptPartitionError(
                f"{_where(dataset, day, url)}: every read of the object was damaged ({last}): it was damaged after "
                "it was written; re-materialize this day"
            ) from last
        _trim_snapshots(folder)
    if got is info and info.stamp is not None:
        with _SNAPSHOT_LOCK:
            _SNAPSHOTS[(url, info.stamp)] = local
    return local, got


def local_copy(root: UPath | str, dataset: str, day: date) -> str | None:
    """A local file holding one stored partition, or ``None`` when the day is not stored: the
    file itself on a local disk; on an object store its verified snapshot (:func:`snapshot`:
    a reader that already scanned the day in this process pays one listing and nothing else).
    For readers that stream a file by row ranges, such as the grid's ``grid_from_parquet``."""
    root = UPath(root)
    if _is_local(root):
        path = str((root / partition_file(dataset, day)).path)
        return path if os.path.isfile(path) else None
    listing = list_partitions(root, dataset)
    if day not in listing:
        return None
    return snapshot(root, dataset, day, footer_infos(root, dataset, [day], listing=listing)[day])[0]


def _trim_snapshots(folder: str) -> None:
    """Remove the least recently used snapshots beyond the budget (never one used within
    :data:`SNAPSHOT_MIN_AGE_SECONDS`)."""
    try:
        budget = float(os.environ.get(_SNAPSHOT_BUDGET_ENV, "20")) * 2**30
    except ValueError:
        budget = 20 * 2**30
    entries = []
    for entry in os.scandir(folder):
        if entry.name.endswith(".parquet"):
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    now = time.time()
    for mtime, size, path in sorted(entries):
        if total <= budget or now - mtime < SNAPSHOT_MIN_AGE_SECONDS:
            break
        try:
            os.unlink(path)
            total -= size
        except FileNotFoundError:
            continue


def _missing_text(missing: Sequence[date]) -> str:
    shown = ", ".join(d.isoformat() for d in missing[:10]) + (" ..." if len(missing) > 10 else "")
    return f"no partition for {len(missing)} day(s): {shown}"


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
    listing: Mapping[date, Stamp] | None = None,
    snapshots: bool = True,
) -> pl.LazyFrame:
    """One ``LazyFrame`` over the given days of a dataset, ``symbol`` cast to one ``pl.Enum``.

    Every day must be stored (:class:`MissingPartitionError` names the missing days) and
    intact (:class:`CorruptPartitionError`, see :func:`verify_partition`). The Enum is the
    union of the days' footer symbol sets unless ``enum`` is given. With no days, an empty
    frame of ``schema`` (which must then be given). ``listing`` is a fresh
    :func:`list_partitions` of the dataset when the caller has one (else one is made here):
    one listing per read, and no request per file whose verified footer is cached.

    On object stores each day is read from a verified local snapshot (:func:`snapshot`: one
    GET per object version, then no request at all): a day re-materialized while it is read
    gives the old rows or the new ones, never an error or a mix. ``snapshots=False`` lets
    polars read the objects directly (column projection over the network, but a read that
    meets a re-materialization of its day may fail).
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
    if listing is None:
        listing = list_partitions(root, dataset)
    infos = footer_infos(root, dataset, days, verify=verify, listing=listing)
    paths = [root / partition_file(dataset, d) for d in days]
    options = None
    if _is_local(root):
        sources = [str(p.path) for p in paths]
    elif snapshots:
        with ThreadPoolExecutor(max_workers=min(8, len(days))) as pool:
            copies = dict(zip(days, pool.map(lambda d: snapshot(root, dataset, d, infos[d]), days), strict=True))
        sources = [copies[d][0] for d in days]
        infos = {d: copies[d][1] for d in days}  # a day replaced meanwhile: the version read
    else:
        sources = [str(p) for p in paths]
        options = polars_storage_options(root)
    read = set().union(*(info.symbols for info in infos.values()))
    if enum is None:
        enum = symbol_enum([read])
    elif not read <= set(enum.categories.to_list()):  # a day re-materialized since the Enum was made
        enum = symbol_enum([read, enum.categories.to_list()])
    lf = pl.scan_parquet(sources, hive_partitioning=False, storage_options=options)
    if "symbol" in infos[days[0]].columns:
        lf = lf.with_columns(pl.col("symbol").cast(enum))
    return lf
