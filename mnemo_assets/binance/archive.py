"""The archive-source interface, its errors, the archive layout, and the local mirror.

Every source (the HTTP archive, a local mirror directory, the synthetic archive) serves the
same thing: for a ``(market, pair, day)`` and a dataset (``trades`` or 1m ``klines``), a zip
holding one CSV and a ``.CHECKSUM`` file ``<sha256hex>  <file>.zip`` beside it, in the layout of
https://data.binance.vision/ (see :mod:`mnemo_assets.binance.formats`)::

    data/{spot|futures/um|futures/cm}/daily/trades/{PAIR}/{PAIR}-trades-{YYYY-MM-DD}.zip
    data/{spot|futures/um|futures/cm}/daily/klines/{PAIR}/1m/{PAIR}-1m-{YYYY-MM-DD}.zip

Pair names are checked against the archive's alphabet ``[A-Z0-9_]`` before they become a key,
and every local path is resolved under its root, so no name reads or writes outside a mirror.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from mnemo_assets.binance import formats
from mnemo_assets.binance.formats import KLINES, TRADES

if TYPE_CHECKING:
    from mnemo_assets.config import Settings, SourceSettings


class ArchiveError(Exception):
    """Bad or unavailable archive input. The message names the file."""


class ArchiveMissingError(ArchiveError):
    """The archive has no file for this market, pair and day (HTTP 404, absent from a mirror)."""


class ChecksumMismatchError(ArchiveError):
    """A zip's sha256 differs from its ``.CHECKSUM`` file."""


class CorruptArchiveError(ArchiveError):
    """A zip that cannot be read, or does not hold exactly one CSV."""


def archive_key(market: str, pair: str, day: date, dataset: str = TRADES) -> str:
    """Key of a zip below an archive root.

    >>> archive_key("um", "BTCUSDT", date(2024, 8, 8))
    'data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2024-08-08.zip'
    >>> archive_key("spot", "BTCUSDT", date(2025, 1, 2), "klines")
    'data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01-02.zip'
    """
    return f"{formats.pair_folder(market, pair, dataset)}/{formats.file_name(pair, day, dataset)}"


def trades_file_name(pair: str, day: date, ext: str = "zip") -> str:
    """``{PAIR}-trades-{YYYY-MM-DD}.zip``, the archive's file name."""
    return formats.file_name(pair, day, TRADES, ext)


def klines_file_name(pair: str, day: date, ext: str = "zip") -> str:
    """``{PAIR}-1m-{YYYY-MM-DD}.zip``, the archive's 1m klines file name."""
    return formats.file_name(pair, day, KLINES, ext)


def parse_trades_file_name(name: str) -> tuple[str, date]:
    """``(pair, day)`` from an archive file name such as ``BTCUSDT-trades-2024-08-08.zip``.

    Accepts ``.zip``, ``.csv`` and ``.zip.CHECKSUM``, and a ``.partial`` infix before ``.csv``.
    """
    try:
        dataset, pair, day = formats.parse_file_name(name)
    except ValueError:
        dataset = ""
    if dataset != TRADES:
        raise ValueError(f"{name!r} is not an archive trades file name ({{PAIR}}-trades-{{YYYY-MM-DD}}.zip or .csv)")
    return pair, day


def parse_archive_file_name(name: str) -> tuple[str, str, date]:
    """``(dataset, pair, day)`` of a trades or 1m klines file name; ``ValueError`` otherwise."""
    return formats.parse_file_name(name)


def checksum_line(zip_bytes: bytes, file_name: str) -> str:
    """The ``.CHECKSUM`` content for a zip: ``<sha256hex>  <file>.zip`` and a newline."""
    return f"{hashlib.sha256(zip_bytes).hexdigest()}  {file_name}\n"


def parse_checksum(text: str | bytes, where: str) -> str:
    """The sha256 hex digest in a ``.CHECKSUM`` file's content (text or raw bytes).

    Anything else (empty, random bytes, not ASCII, a short digest) is an :class:`ArchiveError`
    naming ``where``.
    """
    expected = "(expected '<sha256hex>  <file>.zip')"
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ArchiveError(f"{where}: malformed CHECKSUM file: {len(text)} bytes that are not ASCII text {expected}") from None
    parts = text.strip().split()
    if not parts or len(parts[0]) != 64 or any(c not in "0123456789abcdefABCDEF" for c in parts[0]):
        raise ArchiveError(f"{where}: malformed CHECKSUM file {expected}, got {text[:100]!r}")
    return parts[0].lower()


def safe_path(root: Path, key: str) -> Path:
    """``root / key``, refusing any key that would resolve outside ``root``."""
    root = Path(root)
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in key.split("/")):
        raise ArchiveError(f"refusing archive key {key!r}: not a plain relative path")
    path = root / key
    base = root.resolve()
    if not path.resolve().is_relative_to(base):
        raise ArchiveError(f"refusing archive key {key!r}: it resolves outside {root}")
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and one rename: a reader
    never sees a partial file, and a failure leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    """sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_zip(zip_path: Path, checksum_path: Path) -> str:
    """Check a zip against its ``.CHECKSUM`` file; return the digest or raise a clear error."""
    if not checksum_path.exists():
        raise ArchiveMissingError(f"{checksum_path}: CHECKSUM file missing beside {zip_path.name}")
    expected = parse_checksum(checksum_path.read_bytes(), str(checksum_path))
    actual = sha256_file(zip_path)
    if actual != expected:
        raise ChecksumMismatchError(f"{zip_path}: sha256 {actual} does not match {checksum_path.name} ({expected})")
    return actual


@dataclass(frozen=True)
class ArchiveFile:
    """A verified archive zip on local disk.

    ``previous_sha256`` is set when this fetch replaced a cached copy because the archive
    re-published the day with another checksum (HTTP source); ``etag``, ``last_modified``
    (of the ``.CHECKSUM``), ``url`` and ``size`` (of the zip) are known for HTTP downloads.
    """

    market: str
    pair: str
    day: date
    path: Path
    sha256: str
    dataset: str = TRADES
    previous_sha256: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    url: str | None = None
    size: int | None = None

    @property
    def republished(self) -> bool:
        """Whether this fetch found the day re-published with another checksum."""
        return self.previous_sha256 is not None and self.previous_sha256 != self.sha256


class ArchiveSource(ABC):
    """Where trade archives come from. Implementations: :class:`LocalMirror`,
    :class:`~mnemo_assets.binance.http_archive.HttpArchive` and
    :class:`~mnemo_assets.binance.synthetic.SyntheticArchive`.
    """

    #: short name shown in logs and materialization metadata
    kind: str = "archive"

    @abstractmethod
    def list_pairs(self, market: str, dataset: str = TRADES) -> list[str]:
        """All pairs the archive holds ``dataset`` files for in ``market``, sorted."""

    @abstractmethod
    def list_days(self, market: str, pair: str, dataset: str = TRADES) -> list[date]:
        """The days the archive holds a ``dataset`` file for, sorted."""

    @abstractmethod
    def fetch(self, market: str, pair: str, day: date, dataset: str = TRADES) -> ArchiveFile:
        """A verified local zip for ``(market, pair, day)`` of ``dataset``.

        Raises :class:`ArchiveMissingError` when the archive has no such file,
        :class:`ChecksumMismatchError` when the bytes do not match the CHECKSUM.
        """

    def fetch_datasets(
        self,
        market: str,
        pair: str,
        day: date,
        datasets: tuple[str, ...] = (TRADES, KLINES),
    ) -> dict[str, ArchiveFile | ArchiveError]:
        """:meth:`fetch` of several datasets of one pair-day: ``{dataset: file or the
        ArchiveError its fetch raised}`` (one dataset failing never hides the other). Sources
        that make files (the synthetic archive) make them all in one pass."""
        out: dict[str, ArchiveFile | ArchiveError] = {}
        for dataset in datasets:
            try:
                out[dataset] = self.fetch(market, pair, day, dataset)
            except ArchiveError as exc:
                out[dataset] = exc
        return out

    def recheck(self, market: str, pair: str, day: date, dataset: str = TRADES) -> ArchiveFile:
        """Like :meth:`fetch`, but asks the archive again whether the day was re-published.

        Cheap where it matters (HTTP: one conditional request for the ``.CHECKSUM``; the zip is
        downloaded again only when its checksum changed, and the result then carries
        ``previous_sha256``). Local sources re-verify the files they hold.
        """
        return self.fetch(market, pair, day, dataset)

    def describe(self) -> str:
        return self.kind


class LocalMirror(ArchiveSource):
    """A directory holding (part of) the archive in its own layout (``{root}/data/spot/...``).

    This is what a user who already downloaded the archive points at, and where
    :class:`~mnemo_assets.binance.http_archive.HttpArchive` caches its downloads.
    """

    kind = "mirror"

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def describe(self) -> str:
        return f"mirror:{self.root}"

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise ArchiveError(
                f"mirror folder {self.root} does not exist (source.mirror_dir / MNEMO_MIRROR_DIR): "
                "point it at a folder holding data/spot/..., data/futures/..."
            )

    def list_pairs(self, market: str, dataset: str = TRADES) -> list[str]:
        self._require_root()
        base = self.root / formats.dataset_prefix(market, dataset)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and formats.PAIR_RE.fullmatch(p.name))

    def list_days(self, market: str, pair: str, dataset: str = TRADES) -> list[date]:
        self._require_root()
        folder = self.root / formats.pair_folder(market, pair, dataset)
        if not folder.is_dir():
            return []
        days = set()
        for path in folder.glob(f"{pair}-*.zip"):
            try:
                kind, name_pair, day = formats.parse_file_name(path.name)
            except ValueError:
                continue
            if kind == dataset and name_pair == pair:
                days.add(day)
        return sorted(days)

    def path_for(self, market: str, pair: str, day: date, dataset: str = TRADES) -> Path:
        return safe_path(self.root, archive_key(market, pair, day, dataset))

    def fetch(self, market: str, pair: str, day: date, dataset: str = TRADES) -> ArchiveFile:
        self._require_root()
        path = self.path_for(market, pair, day, dataset)
        if not path.exists():
            raise ArchiveMissingError(f"{path}: no {dataset} file for {pair} on {day} in the mirror")
        digest = verify_zip(path, path.with_name(path.name + ".CHECKSUM"))
        return ArchiveFile(market, pair, day, path, digest, dataset=dataset, size=path.stat().st_size)


def open_source(settings: SourceSettings, mirror_dir: str | Path, synthetic_dir: str | Path) -> ArchiveSource:
    """The archive source a ``source:`` section describes (``mirror_dir`` and ``synthetic_dir``
    are the derived paths of :class:`~mnemo_assets.config.Settings`)."""
    if settings.kind == "mirror":
        return LocalMirror(mirror_dir)
    if settings.kind == "http":
        from mnemo_assets.binance.http_archive import HttpArchive

        return HttpArchive.from_settings(mirror_dir, settings.http)
    if settings.kind == "synthetic":
        from mnemo_assets.binance.synthetic import SyntheticArchive

        return SyntheticArchive.from_settings(synthetic_dir, settings.synthetic)
    raise ValueError(f"unknown archive source {settings.kind!r}: expected synthetic, http or mirror")


def source_from_settings(settings: Settings) -> ArchiveSource:
    """The archive source of a whole configuration (``settings.source`` and its derived paths)."""
    return open_source(settings.source, settings.mirror_dir, settings.synthetic_dir)
