"""The archive-source interface, its errors, the archive layout, and the local mirror.

Every source (the HTTP archive, a local mirror directory, the synthetic archive) serves the
same thing: for a ``(market, pair, day)``, a zip holding one CSV and a ``.CHECKSUM`` file
``<sha256hex>  <file>.zip`` beside it, in the layout of https://data.binance.vision/::

    data/{spot|futures/um|futures/cm}/daily/trades/{PAIR}/{PAIR}-trades-{YYYY-MM-DD}.zip
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from mnemo_assets.markets import ARCHIVE_PREFIX, check_market

_FILE_RE = re.compile(r"^(?P<pair>[A-Z0-9_]+)-trades-(?P<day>\d{4}-\d{2}-\d{2})\.(?:zip|csv)(?:\.CHECKSUM)?$")


class ArchiveError(Exception):
    """Bad or unavailable archive input. The message names the file."""


class ArchiveMissingError(ArchiveError):
    """The archive has no file for this market, pair and day (HTTP 404, absent from a mirror)."""


class ChecksumMismatchError(ArchiveError):
    """A zip's sha256 differs from its ``.CHECKSUM`` file."""


class CorruptArchiveError(ArchiveError):
    """A zip that cannot be read, or does not hold exactly one CSV."""


def archive_key(market: str, pair: str, day: date) -> str:
    """Key of a trades zip below an archive root.

    >>> archive_key("um", "BTCUSDT", date(2024, 8, 8))
    'data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2024-08-08.zip'
    """
    check_market(market)
    return f"{ARCHIVE_PREFIX[market]}/{pair}/{trades_file_name(pair, day)}"


def trades_file_name(pair: str, day: date, ext: str = "zip") -> str:
    """``{PAIR}-trades-{YYYY-MM-DD}.zip``, the archive's file name."""
    return f"{pair}-trades-{day.isoformat()}.{ext}"


def parse_trades_file_name(name: str) -> tuple[str, date]:
    """``(pair, day)`` from an archive file name such as ``BTCUSDT-trades-2024-08-08.zip``.

    Accepts ``.zip``, ``.csv`` and ``.zip.CHECKSUM``, and a ``.partial`` infix before ``.csv``.
    """
    base = Path(name).name.replace(".partial.", ".")
    match = _FILE_RE.match(base)
    if not match:
        raise ValueError(
            f"{name!r} is not an archive trades file name ({{PAIR}}-trades-{{YYYY-MM-DD}}.zip or .csv)"
        )
    return match.group("pair"), date.fromisoformat(match.group("day"))


def checksum_line(zip_bytes: bytes, file_name: str) -> str:
    """The ``.CHECKSUM`` content for a zip: ``<sha256hex>  <file>.zip`` and a newline."""
    return f"{hashlib.sha256(zip_bytes).hexdigest()}  {file_name}\n"


def parse_checksum(text: str, where: str) -> str:
    """The sha256 hex digest in a ``.CHECKSUM`` file's text."""
    parts = text.strip().split()
    if not parts or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
        raise ArchiveError(f"{where}: malformed CHECKSUM file (expected '<sha256hex>  <file>.zip'), got {text[:100]!r}")
    return parts[0].lower()


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
    expected = parse_checksum(checksum_path.read_text(), str(checksum_path))
    actual = sha256_file(zip_path)
    if actual != expected:
        raise ChecksumMismatchError(
            f"{zip_path}: sha256 {actual} does not match {checksum_path.name} ({expected})"
        )
    return actual


@dataclass(frozen=True)
class ArchiveFile:
    """A verified trades zip on local disk."""

    market: str
    pair: str
    day: date
    path: Path
    sha256: str


class ArchiveSource(ABC):
    """Where trade archives come from. Implementations: :class:`LocalMirror`,
    :class:`~mnemo_assets.binance.http_archive.HttpArchive` and
    :class:`~mnemo_assets.binance.synthetic.SyntheticArchive`.
    """

    #: short name shown in logs and materialization metadata
    kind: str = "archive"

    @abstractmethod
    def list_pairs(self, market: str) -> list[str]:
        """All pairs the archive holds for ``market``, sorted."""

    @abstractmethod
    def list_days(self, market: str, pair: str) -> list[date]:
        """The days the archive holds a trades file for, sorted."""

    @abstractmethod
    def fetch(self, market: str, pair: str, day: date) -> ArchiveFile:
        """A verified local zip for ``(market, pair, day)``.

        Raises :class:`ArchiveMissingError` when the archive has no such file,
        :class:`ChecksumMismatchError` when the bytes do not match the CHECKSUM.
        """

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

    def _market_dir(self, market: str) -> Path:
        return self.root / ARCHIVE_PREFIX[check_market(market)]

    def list_pairs(self, market: str) -> list[str]:
        base = self._market_dir(market)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))

    def list_days(self, market: str, pair: str) -> list[date]:
        folder = self._market_dir(market) / pair
        if not folder.is_dir():
            return []
        days = set()
        for path in folder.glob(f"{pair}-trades-*.zip"):
            try:
                days.add(parse_trades_file_name(path.name)[1])
            except ValueError:
                continue
        return sorted(days)

    def path_for(self, market: str, pair: str, day: date) -> Path:
        return self.root / archive_key(market, pair, day)

    def fetch(self, market: str, pair: str, day: date) -> ArchiveFile:
        path = self.path_for(market, pair, day)
        if not path.exists():
            raise ArchiveMissingError(f"{path}: no trades file for {pair} on {day} in the mirror")
        digest = verify_zip(path, path.with_name(path.name + ".CHECKSUM"))
        return ArchiveFile(market, pair, day, path, digest)
