"""The Binance public archive over HTTP, cached in a local mirror directory.

:class:`HttpArchive` downloads ``{base_url}{key}`` (``key`` from
:func:`~mnemo_assets.binance.archive.archive_key`, trades or 1m klines) and its
``{key}.CHECKSUM`` into ``{mirror_dir}/{key}``, in the archive's own layout, so that the same
directory can later be read offline with :class:`~mnemo_assets.binance.archive.LocalMirror`.

* **Caching and re-uploads.** A cached file whose CHECKSUM verifies is served without a request
  while its last check is younger than ``revalidate_after`` seconds. After that (or always, with
  :meth:`HttpArchive.recheck`) the ``.CHECKSUM`` is asked for again with ``If-None-Match`` /
  ``If-Modified-Since`` (the ``ETag`` and ``Last-Modified`` recorded at download): ``304`` or the
  same digest keeps the file; a new digest (Binance re-publishes corrected days, see the
  "Updates" section of binance/binance-public-data's README) downloads the zip again and the
  returned :class:`~mnemo_assets.binance.archive.ArchiveFile` carries ``previous_sha256``. What
  was learnt is kept in ``{mirror_dir}/.http-meta/{key}.json``.
* **Atomic downloads.** Bodies stream to a temporary file beside the target (``.{name}.*.part``),
  hashed while writing, checked against ``Content-Length`` and the CHECKSUM's sha256, and only
  then moved into place with :func:`os.replace`.
* **Retries and deadlines** (`tenacity`_). Connection errors, timeouts, HTTP 429/5xx, truncated
  bodies and checksum mismatches are retried ``retries`` times with exponential backoff and
  jitter (``Retry-After`` honoured). Every request (connect, headers, body) must finish within
  ``timeout`` seconds, a watchdog shuts its socket down otherwise (a server dripping one byte a
  second fails, it does not hang); all attempts for one file or listing page must finish within
  ``deadline`` seconds. HTTP 404 raises :class:`~mnemo_assets.binance.archive.ArchiveMissingError`
  at once; other 4xx raise :class:`~mnemo_assets.binance.archive.ArchiveError`; an archive that
  cannot be reached says so in one line, with the offline sources as the way out.
* **Only the configured URLs.** Requests go to ``base_url`` and ``listing_url`` only; a redirect
  to another host is refused. Pair names must use the archive's alphabet ``[A-Z0-9_]`` and every
  local path is resolved under ``mirror_dir``: a hostile name (``..``, ``/``, ``%2F``, spaces)
  never reads or writes outside it.
* **Listings** use the bucket's S3 ListObjects (v1) XML API with ``delimiter=/``, follow
  ``NextMarker`` (or the last key/prefix) while ``IsTruncated``, and are cached in memory and in
  ``{mirror_dir}/.listings/`` for ``listing_ttl`` seconds (0 disables the cache), so a newly
  published day is hidden at most that long.

HTTP goes through `urllib3`_ (its connection pools, timeouts and proxies from the environment).

.. _tenacity: https://tenacity.readthedocs.io/
.. _urllib3: https://urllib3.readthedocs.io/
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import random
import socket
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import tenacity
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

from mnemo_assets.binance import formats
from mnemo_assets.binance.archive import (
    ArchiveError,
    ArchiveFile,
    ArchiveMissingError,
    ArchiveSource,
    ChecksumMismatchError,
    LocalMirror,
    archive_key,
    parse_checksum,
    safe_path,
    verify_zip,
    write_atomic,
)
from mnemo_assets.binance.formats import TRADES
from mnemo_assets.config import HttpSettings

log = logging.getLogger(__name__)

_DEFAULTS = HttpSettings()
DEFAULT_BASE_URL = _DEFAULTS.base_url
DEFAULT_LISTING_URL = _DEFAULTS.listing_url


def _default_user_agent() -> str:
    try:
        from importlib.metadata import version

        ver = version("mnemo_assets")
    except Exception:  # pragma: no cover - not installed
        ver = "0"
    return f"mnemo_assets/{ver} (+urllib3; Binance public trade archive mirror)"


DEFAULT_USER_AGENT = _default_user_agent()

_CHUNK = 1 << 16
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
_REDIRECTS = {301, 302, 303, 307, 308}
_OFFLINE_HINT = "to work without it, set source.kind: synthetic or mirror (MNEMO_SOURCE=synthetic|mirror)"


class _Retryable(Exception):
    """A transient failure worth another attempt (internal)."""

    def __init__(self, message: str, retry_after: float | None = None, connect: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.connect = connect


class _Mismatch(_Retryable):
    def __init__(self, expected: str, actual: str):
        super().__init__(f"sha256 {actual} does not match CHECKSUM ({expected})")
        self.expected, self.actual = expected, actual


# ------------------------------------------------------------------ per-request watchdog

_local = threading.local()


class _Watchdog:
    """Shuts the socket of the current request down once ``seconds`` have passed, whatever it
    is doing (waiting for headers or reading a body that arrives one byte at a time)."""

    def __init__(self, seconds: float):
        self.seconds = max(0.001, seconds)
        self.fired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(self.seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        _local.watchdog = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _local.watchdog = None

    def watch(self, conn: HTTPConnection) -> None:
        # keep the socket itself: http.client drops ``conn.sock`` once a response will close
        sock = getattr(conn, "sock", None)
        if sock is None:
            return
        with self._lock:
            self._socks.append(sock)
            fired = self.fired
        if fired:
            self._shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            socks = list(self._socks)
        for sock in socks:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _WatchedMixin:
    def getresponse(self):  # type: ignore[override]
        watchdog = getattr(_local, "watchdog", None)
        if watchdog is not None:
            watchdog.watch(self)  # type: ignore[arg-type]
        return super().getresponse()  # type: ignore[misc]


class _HTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _HTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _manager(proxy: str | None = None) -> urllib3.PoolManager:
    manager = urllib3.ProxyManager(proxy, num_pools=4) if proxy else urllib3.PoolManager(num_pools=4)
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


@dataclass(frozen=True)
class _Download:
    sha256: str
    checksum_text: str
    etag: str | None
    last_modified: str | None
    size: int


class HttpArchive(ArchiveSource):
    """The archive at ``base_url`` (files) and ``listing_url`` (S3 ListObjects v1), mirrored
    into ``mirror_dir``. Defaults come from :class:`~mnemo_assets.config.HttpSettings`.

    ``retries`` is the number of extra attempts after the first (so at most ``retries + 1``
    requests per file); the wait before retry ``n`` (0-based) is about ``backoff * 2**n``
    seconds with jitter, capped at ``max_backoff``. ``timeout`` bounds each request from
    connect to last byte, ``deadline`` all attempts for one file or listing page. Listings
    are reused for ``listing_ttl`` seconds (0 disables the cache); a cached file's CHECKSUM is
    re-checked when its last check is older than ``revalidate_after`` seconds (0: every fetch).
    """

    kind = "http"

    def __init__(
        self,
        mirror_dir: str | Path,
        base_url: str = _DEFAULTS.base_url,
        listing_url: str = _DEFAULTS.listing_url,
        retries: int = _DEFAULTS.retries,
        backoff: float = _DEFAULTS.backoff_seconds,
        timeout: float = _DEFAULTS.timeout_seconds,
        listing_ttl: float = _DEFAULTS.listing_ttl_seconds,
        user_agent: str = DEFAULT_USER_AGENT,
        max_backoff: float = _DEFAULTS.max_backoff_seconds,
        deadline: float = _DEFAULTS.deadline_seconds,
        revalidate_after: float = _DEFAULTS.revalidate_seconds,
    ):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if timeout <= 0 or deadline <= 0:
            raise ValueError(f"timeout and deadline must be positive, got {timeout} and {deadline}")
        self.mirror_dir = Path(mirror_dir).expanduser()
        self.mirror = LocalMirror(self.mirror_dir)
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.listing_url = listing_url
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.timeout = float(timeout)
        self.deadline = float(deadline)
        self.listing_ttl = float(listing_ttl)
        self.revalidate_after = float(revalidate_after)
        self.user_agent = user_agent
        self._listings: dict[str, tuple[float, list[str], list[str]]] = {}
        self._origins = {_origin(self.base_url), _origin(self.listing_url)}
        self._managers: dict[str | None, urllib3.PoolManager] = {}
        self._managers_lock = threading.Lock()

    @classmethod
    def from_settings(cls, mirror_dir: str | Path, settings: HttpSettings) -> HttpArchive:
        """The archive a ``source.http`` section describes, cached in ``mirror_dir``."""
        return cls(
            mirror_dir,
            base_url=settings.base_url,
            listing_url=settings.listing_url,
            retries=settings.retries,
            backoff=settings.backoff_seconds,
            max_backoff=settings.max_backoff_seconds,
            timeout=settings.timeout_seconds,
            deadline=settings.deadline_seconds,
            listing_ttl=settings.listing_ttl_seconds,
            revalidate_after=settings.revalidate_seconds,
        )

    def describe(self) -> str:
        return f"http:{self.base_url} (mirror {self.mirror_dir})"

    def __repr__(self) -> str:
        return f"HttpArchive(mirror_dir={str(self.mirror_dir)!r}, base_url={self.base_url!r})"

    # ------------------------------------------------------------------ paths

    def path_for(self, market: str, pair: str, day: date, dataset: str = TRADES) -> Path:
        """Where ``fetch`` puts the zip for ``(market, pair, day)``."""
        return safe_path(self.mirror_dir, archive_key(market, pair, day, dataset))

    def url_for(self, market: str, pair: str, day: date, dataset: str = TRADES) -> str:
        """The download URL of the zip for ``(market, pair, day)``."""
        return self.base_url + archive_key(market, pair, day, dataset)

    def _meta_path(self, key: str) -> Path:
        return safe_path(self.mirror_dir / ".http-meta", key + ".json")

    # ------------------------------------------------------------------ listings

    def list_pairs(self, market: str, dataset: str = TRADES) -> list[str]:
        """Pairs with a ``dataset`` folder for ``market``, from the bucket listing, sorted.

        Names outside the archive's alphabet are ignored (and logged)."""
        prefix = formats.dataset_prefix(market, dataset) + "/"
        _, prefixes = self._listing(prefix)
        pairs = set()
        for p in prefixes:
            name = p[len(prefix) :].rstrip("/") if p.startswith(prefix) else ""
            if formats.PAIR_RE.fullmatch(name):
                pairs.add(name)
            elif name:
                log.warning("%s: ignoring listed folder %r (not a pair name)", self.listing_url, name)
        return sorted(pairs)

    def list_days(self, market: str, pair: str, dataset: str = TRADES) -> list[date]:
        """Days with a ``.zip`` in the pair's folder (CHECKSUMs and other files ignored), sorted."""
        prefix = formats.pair_folder(market, pair, dataset) + "/"
        keys, _ = self._listing(prefix)
        days = set()
        for key in keys:
            name = key[len(prefix) :] if key.startswith(prefix) else ""
            if not name.endswith(".zip") or "/" in name:
                continue
            try:
                kind, file_pair, day = formats.parse_file_name(name)
            except ValueError:
                continue
            if kind == dataset and file_pair == pair:
                days.add(day)
        return sorted(days)

    def invalidate_listings(self) -> None:
        """Forget cached listings (memory and ``mirror_dir/.listings``)."""
        self._listings.clear()
        cache_dir = self.mirror_dir / ".listings"
        if cache_dir.is_dir():
            for path in cache_dir.glob("*.json"):
                path.unlink(missing_ok=True)

    def _cache_path(self, prefix: str) -> Path:
        safe = prefix.strip("/").replace("/", "__") or "_root"
        return self.mirror_dir / ".listings" / f"{safe}.json"

    def _listing(self, prefix: str) -> tuple[list[str], list[str]]:
        """``(keys, common_prefixes)`` below ``prefix``, from cache when fresh."""
        now = time.time()
        if self.listing_ttl > 0:
            cached = self._listings.get(prefix)
            if cached and 0 <= now - cached[0] < self.listing_ttl:
                return cached[1], cached[2]
            disk = self._read_cached_listing(prefix, now)
            if disk is not None:
                self._listings[prefix] = disk
                return disk[1], disk[2]
        keys, prefixes = self._list_objects(prefix)
        if self.listing_ttl > 0:
            entry = (now, keys, prefixes)
            self._listings[prefix] = entry
            self._write_cached_listing(prefix, entry)
        return keys, prefixes

    def _read_cached_listing(self, prefix: str, now: float) -> tuple[float, list[str], list[str]] | None:
        path = self._cache_path(prefix)
        try:
            data = json.loads(path.read_text())
            fetched_at = float(data["fetched_at"])
            if data.get("listing_url") != self.listing_url or data.get("prefix") != prefix:
                return None
            if not 0 <= now - fetched_at < self.listing_ttl:
                return None
            return fetched_at, list(data["keys"]), list(data["prefixes"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: ignoring unreadable listing cache (%s)", path, exc)
            return None

    def _write_cached_listing(self, prefix: str, entry: tuple[float, list[str], list[str]]) -> None:
        path = self._cache_path(prefix)
        data = {"listing_url": self.listing_url, "prefix": prefix, "fetched_at": entry[0], "keys": entry[1], "prefixes": entry[2]}
        try:
            write_atomic(path, json.dumps(data).encode())
        except OSError as exc:
            log.warning("%s: could not write listing cache (%s)", path, exc)

    def _list_objects(self, prefix: str) -> tuple[list[str], list[str]]:
        """All keys and common prefixes below ``prefix`` (``delimiter=/``), every page."""
        keys: list[str] = []
        prefixes: list[str] = []
        marker = ""
        while True:
            query = {"prefix": prefix, "delimiter": "/"}
            if marker:
                query["marker"] = marker
            sep = "&" if "?" in self.listing_url else "?"
            url = f"{self.listing_url}{sep}{urllib.parse.urlencode(query)}"
            page_keys, page_prefixes, truncated, next_marker = self._attempts(url, lambda deadline_at, url=url: self._list_page(url, deadline_at))
            keys.extend(page_keys)
            prefixes.extend(page_prefixes)
            if not truncated:
                break
            new_marker = next_marker or max([*page_keys[-1:], *page_prefixes[-1:]], default="")
            if not new_marker or new_marker <= marker:
                raise ArchiveError(f"{url}: listing is truncated but gives no way forward (marker {new_marker!r})")
            marker = new_marker
        return keys, prefixes

    def _list_page(self, url: str, deadline_at: float) -> tuple[list[str], list[str], bool, str | None]:
        body, _ = self._get_bytes(url, deadline_at)
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise _Retryable(f"{url}: listing is not valid XML ({exc})") from exc
        if root.tag.rsplit("}", 1)[-1] != "ListBucketResult":
            raise ArchiveError(f"{url}: expected an S3 ListBucketResult, got <{root.tag}>")
        truncated = (root.findtext("{*}IsTruncated") or "false").strip().lower() == "true"
        page_keys = [(e.text or "") for e in root.findall("{*}Contents/{*}Key")]
        page_prefixes = [(e.text or "") for e in root.findall("{*}CommonPrefixes/{*}Prefix")]
        next_marker = (root.findtext("{*}NextMarker") or "").strip() or None
        return page_keys, page_prefixes, truncated, next_marker

    # ------------------------------------------------------------------ fetch and revalidation

    def fetch(self, market: str, pair: str, day: date, dataset: str = TRADES) -> ArchiveFile:
        """A verified zip in the mirror, downloading it (and its CHECKSUM) only when needed.

        A cached copy is re-checked against the archive when its last check is older than
        ``revalidate_after``; if the archive cannot be asked then, the cached copy is served
        (with a warning).
        """
        return self._fetch(market, pair, day, dataset, force=False)

    def recheck(self, market: str, pair: str, day: date, dataset: str = TRADES) -> ArchiveFile:
        """Ask the archive whether ``(market, pair, day)`` was re-published, now.

        One conditional request for the ``.CHECKSUM`` (``304 Not Modified`` in the usual case);
        the zip is downloaded again only when the checksum changed, and the result then has
        ``previous_sha256`` set. A file not cached yet is fetched. Errors are raised (a sensor
        re-checking the last days wants to know).
        """
        return self._fetch(market, pair, day, dataset, force=True)

    def _fetch(self, market: str, pair: str, day: date, dataset: str, force: bool) -> ArchiveFile:
        key = archive_key(market, pair, day, dataset)
        path = safe_path(self.mirror_dir, key)
        checksum_path = path.with_name(path.name + ".CHECKSUM")
        meta_path = self._meta_path(key)
        url = self.base_url + key

        cached_sha: str | None = None
        if path.exists() and checksum_path.exists():
            try:
                cached_sha = verify_zip(path, checksum_path)
            except ArchiveError as exc:
                log.warning("%s: cached copy does not verify (%s); downloading it again", path, exc)
                for stale in (path, checksum_path, meta_path):
                    stale.unlink(missing_ok=True)
        if cached_sha is None:
            got = self._download(url, path, checksum_path)
            self._write_meta(meta_path, url, got, previous=None)
            log.info("%s: downloaded to %s (sha256 %s)", url, path, got.sha256)
            return self._file(market, pair, day, dataset, path, url, got)

        meta = self._read_meta(meta_path)
        cached = _Download(cached_sha, "", meta.get("etag"), meta.get("last_modified"), int(meta.get("size") or path.stat().st_size))
        fresh = meta.get("sha256") == cached_sha and 0 <= time.time() - float(meta.get("checked_at", 0)) < self.revalidate_after
        if fresh and not force:
            return self._file(market, pair, day, dataset, path, url, cached)

        try:
            status, text, etag, modified = self._conditional(url + ".CHECKSUM", cached.etag, cached.last_modified)
        except ArchiveError as exc:
            if force:
                raise
            log.warning("%s: could not re-check the archive (%s); serving the cached copy", url, exc)
            return self._file(market, pair, day, dataset, path, url, cached)
        if status == 304 or parse_checksum(text, url + ".CHECKSUM") == cached_sha:
            kept = _Download(cached_sha, "", etag or cached.etag, modified or cached.last_modified, cached.size)
            self._write_meta(meta_path, url, kept, previous=meta.get("previous_sha256"))
            return self._file(market, pair, day, dataset, path, url, kept)

        new_sha = parse_checksum(text, url + ".CHECKSUM")
        log.warning("%s: re-published (sha256 %s -> %s); downloading it again", url, cached_sha, new_sha)
        got = self._download(url, path, checksum_path)
        self._write_meta(meta_path, url, got, previous=cached_sha)
        return self._file(market, pair, day, dataset, path, url, got, previous=cached_sha)

    @staticmethod
    def _file(market, pair, day, dataset, path, url, got: _Download, previous: str | None = None) -> ArchiveFile:
        return ArchiveFile(
            market,
            pair,
            day,
            path,
            got.sha256,
            dataset=dataset,
            previous_sha256=previous,
            etag=got.etag,
            last_modified=got.last_modified,
            url=url,
            size=got.size,
        )

    def _read_meta(self, path: Path) -> dict:
        try:
            data = json.loads(path.read_text())
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s: ignoring unreadable download record (%s)", path, exc)
            return {}

    def _write_meta(self, path: Path, url: str, got: _Download, previous: str | None) -> None:
        data = {
            "url": url,
            "sha256": got.sha256,
            "etag": got.etag,
            "last_modified": got.last_modified,
            "size": got.size,
            "checked_at": time.time(),
            "previous_sha256": previous,
        }
        try:
            write_atomic(path, json.dumps(data).encode())
        except OSError as exc:
            log.warning("%s: could not write the download record (%s)", path, exc)

    def _conditional(self, url: str, etag: str | None, modified: str | None) -> tuple[int, str, str | None, str | None]:
        """``(status, text, etag, last_modified)`` of a conditional GET (``304`` gives no text)."""
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if modified:
            headers["If-Modified-Since"] = modified

        def attempt(deadline_at: float):
            body, resp = self._get_bytes(url, deadline_at, headers, allow_304=True)
            return resp.status, body, resp.headers.get("ETag"), resp.headers.get("Last-Modified")

        status, body, new_etag, new_modified = self._attempts(url, attempt)
        if status == 304:
            return 304, "", new_etag, new_modified
        parse_checksum(body, url)  # a clear error for a garbage CHECKSUM
        return status, body.decode("ascii"), new_etag, new_modified

    def _download(self, url: str, path: Path, checksum_path: Path) -> _Download:
        """Download ``url`` and its CHECKSUM into place (atomically), retrying mismatches."""
        checksum_url = url + ".CHECKSUM"
        path.parent.mkdir(parents=True, exist_ok=True)

        def attempt(deadline_at: float) -> tuple[str, _Download]:
            body, resp = self._get_bytes(checksum_url, deadline_at)
            expected = parse_checksum(body, checksum_url)
            tmp, actual, size = self._download_to_temp(url, path, deadline_at)
            if actual != expected:
                Path(tmp).unlink(missing_ok=True)
                raise _Mismatch(expected, actual)
            got = _Download(actual, body.decode("ascii"), resp.headers.get("ETag"), resp.headers.get("Last-Modified"), size)
            return tmp, got

        try:
            tmp, got = self._attempts(url, attempt, what=f"nothing written to {path}")
        except _Mismatch as exc:
            raise ChecksumMismatchError(
                f"{url}: sha256 {exc.actual} does not match {checksum_url} ({exc.expected}) "
                f"after {getattr(exc, 'attempts', self.retries + 1)} attempt(s); nothing written to {path}"
            ) from None
        try:
            os.replace(tmp, path)
            write_atomic(checksum_path, got.checksum_text.encode())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            raise
        return got

    def download_range(
        self,
        market: str,
        pairs: str | Iterable[str],
        start: date,
        end: date,
        progress: Callable[[int, int, ArchiveFile], None] | None = None,
        dataset: str = TRADES,
    ) -> list[ArchiveFile]:
        """Fetch every listed day in ``[start, end]`` (inclusive) for each pair.

        Days the listing does not hold are skipped. ``progress(done, total, file)`` is called
        after each file.
        """
        if isinstance(pairs, str):
            pairs = [pairs]
        wanted = [(pair, day) for pair in pairs for day in self.list_days(market, pair, dataset) if start <= day <= end]
        files: list[ArchiveFile] = []
        for done, (pair, day) in enumerate(wanted, start=1):
            files.append(self.fetch(market, pair, day, dataset))
            if progress is not None:
                progress(done, len(wanted), files[-1])
        return files

    def _download_to_temp(self, url: str, path: Path, deadline_at: float) -> tuple[str, str, int]:
        """Stream ``url`` into a temp file beside ``path``; return ``(temp_path, sha256, size)``."""
        budget = self._budget(url, deadline_at)
        with _Watchdog(budget) as watchdog:
            resp = self._open(url, budget, watchdog)
            try:
                length_header = resp.headers.get("Content-Length")
                try:
                    expected_len = int(length_header) if length_header is not None else None
                except ValueError:
                    expected_len = None
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
                digest = hashlib.sha256()
                received = 0
                ok = False
                try:
                    with os.fdopen(fd, "wb") as fh:
                        while True:
                            try:
                                chunk = resp.read1(_CHUNK) if hasattr(resp, "read1") else resp.read(_CHUNK)
                            except (urllib3.exceptions.HTTPError, OSError) as exc:
                                if expected_len is not None and not watchdog.fired:
                                    raise _Retryable(
                                        f"{url}: truncated body, the connection closed after {received} of "
                                        f"{expected_len} bytes ({type(exc).__name__})"
                                    ) from exc
                                raise self._broken(url, watchdog, budget, f"body incomplete after {received} bytes", exc) from exc
                            if not chunk:
                                break
                            fh.write(chunk)
                            digest.update(chunk)
                            received += len(chunk)
                    if watchdog.fired:
                        raise self._broken(url, watchdog, budget, f"body incomplete after {received} bytes", None)
                    if expected_len is not None and received != expected_len:
                        raise _Retryable(f"{url}: truncated body, got {received} of {expected_len} bytes")
                    ok = True
                finally:
                    if not ok:
                        Path(tmp).unlink(missing_ok=True)
            finally:
                resp.release_conn()
        return tmp, digest.hexdigest(), received

    # ------------------------------------------------------------------ HTTP plumbing

    def _budget(self, url: str, deadline_at: float) -> float:
        left = deadline_at - time.monotonic()
        if left <= 0:
            raise _Retryable(f"{url}: deadline of {self.deadline:g} s (deadline_seconds) reached")
        return min(self.timeout, left)

    def _broken(self, url: str, watchdog: _Watchdog, budget: float, what: str, exc: Exception | None) -> _Retryable:
        if watchdog.fired:
            return _Retryable(f"{url}: no complete answer within {budget:g} s (timeout_seconds per request; {what})")
        return _Retryable(f"{url}: {what} ({exc!r})")

    def _get_bytes(
        self, url: str, deadline_at: float, headers: dict | None = None, allow_304: bool = False
    ) -> tuple[bytes, urllib3.BaseHTTPResponse]:
        """The whole body of ``url`` within this attempt's time."""
        budget = self._budget(url, deadline_at)
        with _Watchdog(budget) as watchdog:
            resp = self._open(url, budget, watchdog, headers, allow_304)
            try:
                body = resp.read() if resp.status != 304 else b""
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._broken(url, watchdog, budget, "body incomplete", exc) from exc
            finally:
                resp.release_conn()
            if watchdog.fired:
                raise self._broken(url, watchdog, budget, "body incomplete", None)
        return body, resp

    def _pool(self, url: str) -> urllib3.PoolManager:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        proxy = None
        if host not in _LOOPBACK and not urllib.request.proxy_bypass(host):
            proxy = urllib.request.getproxies().get(parts.scheme)
        with self._managers_lock:
            if proxy not in self._managers:
                self._managers[proxy] = _manager(proxy)
            return self._managers[proxy]

    def _open(self, url: str, budget: float, watchdog: _Watchdog, headers: dict | None = None, allow_304: bool = False) -> urllib3.BaseHTTPResponse:
        """Open ``url`` (following same-host redirects); map errors to archive errors or :class:`_Retryable`."""
        request_headers = {"User-Agent": self.user_agent, "Accept-Encoding": "identity", **(headers or {})}
        for _hop in range(5):
            if _origin(url) not in self._origins:
                raise ArchiveError(
                    f"refusing to fetch {url}: only {self.base_url} and {self.listing_url} are fetched (source.http.base_url / listing_url)"
                )
            try:
                resp = self._pool(url).request(
                    "GET",
                    url,
                    headers=request_headers,
                    preload_content=False,
                    redirect=False,
                    retries=False,
                    timeout=urllib3.Timeout(connect=budget, read=budget),
                )
            except urllib3.exceptions.ConnectTimeoutError as exc:  # includes refused and DNS failures
                reason = getattr(exc, "reason", None) or exc
                raise _Retryable(f"{url}: cannot connect ({reason})", connect=True) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._broken(url, watchdog, budget, "no answer", exc) from None
            status = resp.status
            if status in _REDIRECTS:
                location = resp.headers.get("Location", "")
                resp.release_conn()
                target = urllib.parse.urljoin(url, location)
                if _origin(target) not in self._origins:
                    raise ArchiveError(f"{url}: HTTP {status} redirect to {target} refused: only {self.base_url} and {self.listing_url} are fetched")
                url = target
                continue
            if status == 200 or (status == 304 and allow_304):
                return resp
            retry_after = _retry_after(resp.headers.get("Retry-After"))
            reason = resp.reason or ""
            resp.release_conn()
            if status == 404:
                raise ArchiveMissingError(f"{url}: HTTP 404 Not Found (no such file in the archive)")
            if status == 429 or status >= 500:
                raise _Retryable(f"{url}: HTTP {status} {reason}".rstrip(), retry_after)
            raise ArchiveError(f"{url}: HTTP {status} {reason}".rstrip())
        raise ArchiveError(f"{url}: too many redirects")

    def _attempts(self, url: str, call: Callable[[float], object], what: str = ""):
        """``call(deadline_at)`` with retries (tenacity) while it raises :class:`_Retryable`,
        within ``retries + 1`` attempts and ``deadline`` seconds; a clear error after that."""
        deadline_at = time.monotonic() + self.deadline
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1) | tenacity.stop_before_delay(self.deadline),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=lambda state: log.warning(
                "%s: attempt %d/%d failed: %s", url, state.attempt_number, self.retries + 1, state.outcome.exception()
            ),
            reraise=True,
        )
        try:
            return retrying(call, deadline_at)
        except _Mismatch as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise
        except _Retryable as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            tail = f"; {what}" if what else ""
            if exc.connect:
                host = urllib.parse.urlsplit(url).netloc
                raise ArchiveError(
                    f"{url}: the archive at {host} is unreachable after {attempts} attempt(s) ({exc}); {_OFFLINE_HINT}{tail}"
                ) from None
            raise ArchiveError(f"{url}: failed after {attempts} attempt(s); last error: {exc}{tail}") from None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        n = state.attempt_number - 1
        delay = min(self.max_backoff, self.backoff * (2**n))
        delay = delay / 2 + random.uniform(0, delay / 2)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = min(self.max_backoff, max(delay, retry_after))
        return delay


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
