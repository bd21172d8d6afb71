"""The Binance public trade archive over HTTP, cached in a local mirror directory.

:class:`HttpArchive` downloads ``{base_url}{key}`` (``key`` from
:func:`~mnemo_assets.binance.archive.archive_key``) and its ``{key}.CHECKSUM`` into
``{mirror_dir}/{key}``, in the archive's own layout, so that the same directory can later be
read offline with :class:`~mnemo_assets.binance.archive.LocalMirror`.

* A file already in the mirror whose CHECKSUM verifies is returned without any HTTP request,
  so re-runs download nothing.
* Downloads are streamed to a temporary file beside the target (``.{name}.*.part``), hashed
  while writing, checked against ``Content-Length`` and the sha256 in the CHECKSUM, and only
  then moved into place with :func:`os.replace`; a partial or unverified file never appears at
  the final path.
* Connection errors, timeouts, HTTP 429/5xx, truncated bodies and checksum mismatches are
  retried ``retries`` times with exponential backoff and jitter (``Retry-After`` honoured).
  HTTP 404 raises :class:`~mnemo_assets.binance.archive.ArchiveMissingError` at once; other 4xx
  raise :class:`~mnemo_assets.binance.archive.ArchiveError` with the status.
* Listings use the bucket's S3 ListObjects (v1) XML API with ``delimiter=/``, follow
  ``NextMarker`` (or the last key/prefix) while ``IsTruncated``, and are cached in memory and
  in ``{mirror_dir}/.listings/`` for ``listing_ttl`` seconds.

Only the standard library is used (``urllib``, ``http.client``, ``xml.etree``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

from mnemo_assets.binance.archive import (
    ArchiveError,
    ArchiveFile,
    ArchiveMissingError,
    ArchiveSource,
    ChecksumMismatchError,
    LocalMirror,
    archive_key,
    parse_checksum,
    parse_trades_file_name,
    verify_zip,
    write_atomic,
)
from mnemo_assets.markets import ARCHIVE_PREFIX, check_market

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://data.binance.vision/"
DEFAULT_LISTING_URL = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"


def _default_user_agent() -> str:
    try:
        from importlib.metadata import version

        ver = version("mnemo_assets")
    except Exception:  # pragma: no cover - not installed
        ver = "0"
    return f"mnemo_assets/{ver} (+python-urllib; Binance public trade archive mirror)"


DEFAULT_USER_AGENT = _default_user_agent()

_CHUNK = 1 << 20
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


class _Retryable(Exception):
    """A transient failure worth another attempt (internal)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class HttpArchive(ArchiveSource):
    """The archive at ``base_url`` (files) and ``listing_url`` (S3 ListObjects v1), mirrored
    into ``mirror_dir``.

    ``retries`` is the number of extra attempts after the first (so at most ``retries + 1``
    requests per file); the wait before retry ``n`` (0-based) is about ``backoff * 2**n``
    seconds with jitter, capped at ``max_backoff``. ``timeout`` is the socket timeout of each
    request. Listings are reused for ``listing_ttl`` seconds (0 disables the cache).
    """

    kind = "http"

    def __init__(
        self,
        mirror_dir: str | Path,
        base_url: str = DEFAULT_BASE_URL,
        listing_url: str = DEFAULT_LISTING_URL,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 60,
        listing_ttl: float = 3600,
        user_agent: str = DEFAULT_USER_AGENT,
        max_backoff: float = 30.0,
    ):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.mirror_dir = Path(mirror_dir).expanduser()
        self.mirror = LocalMirror(self.mirror_dir)
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.listing_url = listing_url
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.timeout = timeout
        self.listing_ttl = float(listing_ttl)
        self.user_agent = user_agent
        self._listings: dict[str, tuple[float, list[str], list[str]]] = {}
        self._proxied = urllib.request.build_opener()
        self._direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def describe(self) -> str:
        return f"http:{self.base_url} (mirror {self.mirror_dir})"

    def __repr__(self) -> str:
        return f"HttpArchive(mirror_dir={str(self.mirror_dir)!r}, base_url={self.base_url!r})"

    # ------------------------------------------------------------------ paths

    def path_for(self, market: str, pair: str, day: date) -> Path:
        """Where ``fetch`` puts the zip for ``(market, pair, day)``."""
        return self.mirror_dir / archive_key(market, pair, day)

    def url_for(self, market: str, pair: str, day: date) -> str:
        """The download URL of the zip for ``(market, pair, day)``."""
        return self.base_url + archive_key(market, pair, day)

    # ------------------------------------------------------------------ listings

    def list_pairs(self, market: str) -> list[str]:
        """Pairs with a trades folder for ``market``, from the bucket listing, sorted."""
        prefix = ARCHIVE_PREFIX[check_market(market)] + "/"
        _, prefixes = self._listing(prefix)
        pairs = {p[len(prefix):].rstrip("/") for p in prefixes if p.startswith(prefix)}
        return sorted(p for p in pairs if p)

    def list_days(self, market: str, pair: str) -> list[date]:
        """Days with a ``.zip`` in the pair's folder (CHECKSUMs and other files ignored), sorted."""
        if not pair or "/" in pair:
            raise ValueError(f"bad pair name {pair!r}")
        prefix = f"{ARCHIVE_PREFIX[check_market(market)]}/{pair}/"
        keys, _ = self._listing(prefix)
        days = set()
        for key in keys:
            name = key[len(prefix):] if key.startswith(prefix) else ""
            if not name.endswith(".zip") or "/" in name:
                continue
            try:
                file_pair, day = parse_trades_file_name(name)
            except ValueError:
                continue
            if file_pair == pair:
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
        data = {
            "listing_url": self.listing_url,
            "prefix": prefix,
            "fetched_at": entry[0],
            "keys": entry[1],
            "prefixes": entry[2],
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh)
            os.replace(tmp, path)
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
            page_keys, page_prefixes, truncated, next_marker = self._with_retries(
                url, lambda url=url: self._list_page(url)
            )
            keys.extend(page_keys)
            prefixes.extend(page_prefixes)
            if not truncated:
                break
            new_marker = next_marker or max([*page_keys[-1:], *page_prefixes[-1:]], default="")
            if not new_marker or new_marker <= marker:
                raise ArchiveError(f"{url}: listing is truncated but gives no way forward (marker {new_marker!r})")
            marker = new_marker
        return keys, prefixes

    def _list_page(self, url: str) -> tuple[list[str], list[str], bool, str | None]:
        with self._open(url) as resp:
            try:
                body = resp.read()
            except (http.client.HTTPException, OSError) as exc:
                raise _Retryable(f"{url}: listing body incomplete ({exc!r})") from exc
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

    # ------------------------------------------------------------------ downloads

    def fetch(self, market: str, pair: str, day: date) -> ArchiveFile:
        """A verified zip in the mirror, downloading it (and its CHECKSUM) only when needed."""
        key = archive_key(market, pair, day)
        path = self.mirror_dir / key
        checksum_path = path.with_name(path.name + ".CHECKSUM")
        if path.exists() and checksum_path.exists():
            try:
                return ArchiveFile(market, pair, day, path, verify_zip(path, checksum_path))
            except ArchiveError as exc:
                log.warning("%s: cached copy does not verify (%s); downloading it again", path, exc)
                path.unlink(missing_ok=True)
                checksum_path.unlink(missing_ok=True)

        url = self.base_url + key
        checksum_url = url + ".CHECKSUM"
        path.parent.mkdir(parents=True, exist_ok=True)
        attempts = self.retries + 1
        last: Exception | None = None
        mismatch: tuple[str, str] | None = None  # (expected, actual) of the last attempt
        for attempt in range(attempts):
            if attempt:
                self._sleep(attempt - 1, last)
            try:
                checksum_text = self._get_text(checksum_url)
                expected = parse_checksum(checksum_text, checksum_url)
                tmp, actual = self._download_to_temp(url, path)
            except _Retryable as exc:
                last, mismatch = exc, None
                log.warning("%s: attempt %d/%d failed: %s", url, attempt + 1, attempts, exc)
                continue
            if actual != expected:
                Path(tmp).unlink(missing_ok=True)
                mismatch = (expected, actual)
                last = _Retryable(f"sha256 {actual} does not match CHECKSUM ({expected})")
                log.warning("%s: attempt %d/%d: %s", url, attempt + 1, attempts, last)
                continue
            try:
                os.replace(tmp, path)
                write_atomic(checksum_path, checksum_text.encode())
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                path.unlink(missing_ok=True)
                raise
            log.info("%s: downloaded to %s (sha256 %s)", url, path, actual)
            return ArchiveFile(market, pair, day, path, actual)

        if mismatch is not None:
            expected, actual = mismatch
            raise ChecksumMismatchError(
                f"{url}: sha256 {actual} does not match {checksum_url} ({expected}) "
                f"after {attempts} attempt(s); nothing written to {path}"
            )
        raise ArchiveError(f"{url}: download failed after {attempts} attempt(s); last error: {last}; nothing written to {path}")

    def download_range(
        self,
        market: str,
        pairs: str | Iterable[str],
        start: date,
        end: date,
        progress: Callable[[int, int, ArchiveFile], None] | None = None,
    ) -> list[ArchiveFile]:
        """Fetch every listed day in ``[start, end]`` (inclusive) for each pair.

        Days the listing does not hold are skipped. ``progress(done, total, file)`` is called
        after each file.
        """
        if isinstance(pairs, str):
            pairs = [pairs]
        wanted = [(pair, day) for pair in pairs for day in self.list_days(market, pair) if start <= day <= end]
        files: list[ArchiveFile] = []
        for done, (pair, day) in enumerate(wanted, start=1):
            files.append(self.fetch(market, pair, day))
            if progress is not None:
                progress(done, len(wanted), files[-1])
        return files

    def _get_text(self, url: str) -> str:
        with self._open(url) as resp:
            try:
                body = resp.read()
            except (http.client.HTTPException, OSError) as exc:
                raise _Retryable(f"{url}: body incomplete ({exc!r})") from exc
        # undecodable bytes become U+FFFD, which parse_checksum reports as a malformed CHECKSUM
        return body.decode("utf-8", errors="replace")

    def _download_to_temp(self, url: str, path: Path) -> tuple[str, str]:
        """Stream ``url`` into a temp file beside ``path``; return ``(temp_path, sha256)``."""
        with self._open(url) as resp:
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
                            chunk = resp.read(_CHUNK)
                        except (http.client.HTTPException, OSError) as exc:
                            raise _Retryable(f"{url}: body incomplete after {received} bytes ({exc!r})") from exc
                        if not chunk:
                            break
                        fh.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                if expected_len is not None and received != expected_len:
                    raise _Retryable(f"{url}: truncated body, got {received} of {expected_len} bytes")
                ok = True
            finally:
                if not ok:
                    Path(tmp).unlink(missing_ok=True)
        return tmp, digest.hexdigest()

    # ------------------------------------------------------------------ HTTP plumbing

    def _open(self, url: str):
        """Open ``url``; map HTTP errors to archive errors or :class:`_Retryable`."""
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
        host = urllib.parse.urlsplit(url).hostname or ""
        opener = self._direct if host in _LOOPBACK else self._proxied
        try:
            return opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            exc.close()
            if status == 404:
                raise ArchiveMissingError(f"{url}: HTTP 404 Not Found (no such file in the archive)") from None
            if status == 429 or status >= 500:
                raise _Retryable(f"{url}: HTTP {status} {exc.reason}", retry_after) from None
            raise ArchiveError(f"{url}: HTTP {status} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retryable(f"{url}: connection failed ({reason!r})") from exc

    def _with_retries(self, url: str, call: Callable[[], object]):
        attempts = self.retries + 1
        last: _Retryable | None = None
        for attempt in range(attempts):
            if attempt:
                self._sleep(attempt - 1, last)
            try:
                return call()
            except _Retryable as exc:
                last = exc
                log.warning("%s: attempt %d/%d failed: %s", url, attempt + 1, attempts, exc)
        raise ArchiveError(f"{url}: failed after {attempts} attempt(s); last error: {last}")

    def _sleep(self, n: int, last: Exception | None) -> None:
        delay = min(self.max_backoff, self.backoff * (2**n))
        delay = delay / 2 + random.uniform(0, delay / 2)
        retry_after = getattr(last, "retry_after", None)
        if retry_after is not None:
            delay = min(self.max_backoff, max(delay, retry_after))
        if delay > 0:
            time.sleep(delay)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form only)."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None
