"""A loopback stand-in for data.binance.vision and its S3 bucket listing, for tests.

:class:`ArchiveServer` serves a mirror directory in the archive layout
(``{mirror_root}/data/spot/daily/trades/...``) over HTTP on 127.0.0.1 (never anything else)
and answers S3 ListObjects (v1) queries, with pagination, on ``/listing`` and on ``/``::

    with ArchiveServer(mirror_root, page_size=2) as server:
        archive = HttpArchive(tmp / "cache", base_url=server.url, listing_url=server.listing_url,
                              backoff=0.01)
        server.faults[key] = [500, 500]      # two failures, then served normally
        ...
        assert server.requests_for(key) == []

Fault rules (``server.faults``, a dict keyed by the file key relative to the mirror root without
a leading slash, e.g. ``data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-08-08.zip`` or the
same plus ``.CHECKSUM``; the key ``"listing"`` applies to every listing request). A rule is a
single action, applied to every request, or a list of actions consumed one per request, after
which the file is served normally. Actions:

* an ``int`` HTTP status (``404``, ``403``, ``429``, ``500``, ``503``...): that status, no body;
* ``"truncate"``: headers with the full ``Content-Length`` but only half the body, then close;
* ``"corrupt"``: the full body with its middle byte flipped (``^ 0xFF``);
* ``"drop"``: close the connection without any response;
* ``"hang"``: sleep ``hang_seconds`` before answering normally (for timeout tests);
* ``"drip"``: the headers (full ``Content-Length``) at once, then the body one byte every
  ``drip_seconds`` (a slow-loris server: no single read ever waits long);
* ``"drip_headers"``: the status line and headers one byte every ``drip_seconds``;
* ``("redirect", url)``: HTTP 302 to ``url`` (absolute, or relative to this server);
* ``None`` or ``"ok"``: serve normally.

Files are served with ``ETag`` (quoted md5 of the body) and ``Last-Modified`` (the file's
mtime); ``If-None-Match`` / ``If-Modified-Since`` get ``304 Not Modified``.
:meth:`ArchiveServer.republish` replaces a zip and its CHECKSUM (a re-upload).

Every request's path (with its query string) is appended to ``server.requests``, its headers to
``server.request_headers``. Also here: :func:`make_trades_zip` and :func:`write_archive_day`, to
build a small mirror.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import os
import sys
import threading
import time
import urllib.parse
import zipfile
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

from mnemo_assets.binance.archive import archive_key, checksum_line, trades_file_name

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
LISTING_KEY = "listing"

_HEADERS = {
    "spot": None,
    "um": "id,price,qty,quote_qty,time,is_buyer_maker",
    "cm": "id,price,qty,base_qty,time,is_buyer_maker",
}


def default_rows(market: str, day: date, n: int = 3) -> list[str]:
    """``n`` plausible archive CSV rows for ``market`` on ``day`` (no header)."""
    start_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    rows = []
    for i in range(n):
        price, qty, ms = 100.0 + i, 1.0 + i, start_ms + 1000 * i
        if market == "spot":
            rows.append(f"{i + 1},{price:.8f},{qty:.8f},{price * qty:.8f},{ms},True,True")
        elif market == "um":
            rows.append(f"{i + 1},{price:.1f},{qty:.3f},{price * qty:.5f},{ms},true")
        else:
            rows.append(f"{i + 1},{price:.1f},{int(qty)},{qty * 100 / price:.8f},{ms},false")
    return rows


def make_trades_zip(market: str, pair: str, day: date, rows: list[str] | None = None) -> bytes:
    """A zip holding one CSV ``{PAIR}-trades-{day}.csv`` in the archive format (deterministic bytes)."""
    lines = list(default_rows(market, day) if rows is None else rows)
    if _HEADERS.get(market) and rows is None:
        lines.insert(0, _HEADERS[market])
    info = zipfile.ZipInfo(trades_file_name(pair, day, "csv"), date_time=(day.year, day.month, day.day, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, "\n".join(lines) + "\n")
    return buf.getvalue()


def write_archive_day(root: Path, market: str, pair: str, day: date, rows: list[str] | None = None) -> Path:
    """Write ``{root}/{archive_key}`` and its ``.CHECKSUM``; return the zip path."""
    path = Path(root) / archive_key(market, pair, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = make_trades_zip(market, pair, day, rows)
    path.write_bytes(data)
    path.with_name(path.name + ".CHECKSUM").write_text(checksum_line(data, path.name))
    return path


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ArchiveServer

    def handle_error(self, request, client_address):
        # a client that gave up (timeout tests) makes writes fail; that is expected here
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.server.owner._handle(self, head=False)

    def do_HEAD(self):
        self.server.owner._handle(self, head=True)


class ArchiveServer:
    """Serve ``mirror_root`` like data.binance.vision plus its S3 listing, on 127.0.0.1.

    ``page_size`` caps the entries (keys + common prefixes) per listing page; set
    ``next_marker=False`` to omit ``<NextMarker>`` so that clients must continue from the last
    key/prefix. ``url`` is the file base (``http://127.0.0.1:PORT/``), ``listing_url`` the
    ListObjects endpoint (``http://127.0.0.1:PORT/listing``; ``url`` itself also answers).
    """

    def __init__(
        self,
        mirror_root: str | Path,
        page_size: int = 1000,
        faults: dict | None = None,
        hang_seconds: float = 2.0,
        next_marker: bool = True,
        bucket: str = "data.binance.vision",
        drip_seconds: float = 0.2,
    ):
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.mirror_root = Path(mirror_root).resolve()
        self.page_size = page_size
        self.faults: dict[str, object] = dict(faults or {})
        self.hang_seconds = hang_seconds
        self.drip_seconds = drip_seconds
        self.request_headers: list[tuple[str, dict[str, str]]] = []
        self.next_marker = next_marker
        self.bucket = bucket
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ArchiveServer:
        if self._httpd is not None:
            return self
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="ArchiveServer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ArchiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ArchiveServer is not running")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def listing_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/listing"

    # ------------------------------------------------------------------ log helpers

    def requests_for(self, key: str) -> list[str]:
        """Logged requests whose path is exactly ``/{key}`` (query ignored)."""
        want = "/" + key.lstrip("/")
        with self._lock:
            return [r for r in self.requests if r.split("?", 1)[0] == want]

    @property
    def listing_requests(self) -> list[str]:
        with self._lock:
            return [r for r in self.requests if self._is_listing(urllib.parse.urlsplit(r))]

    @property
    def file_requests(self) -> list[str]:
        with self._lock:
            return [r for r in self.requests if not self._is_listing(urllib.parse.urlsplit(r))]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.request_headers.clear()

    def headers_for(self, key: str) -> list[dict[str, str]]:
        """Headers of the logged requests for ``/{key}``."""
        want = "/" + key.lstrip("/")
        with self._lock:
            return [h for p, h in self.request_headers if p.split("?", 1)[0] == want]

    def republish(self, key: str, data: bytes) -> None:
        """Replace the zip at ``key`` and its CHECKSUM (as the archive does for a corrected day)."""
        path = self.mirror_root / key
        path.write_bytes(data)
        path.with_name(path.name + ".CHECKSUM").write_text(checksum_line(data, path.name))
        later = time.time() + 5  # a Last-Modified that differs from the first upload's
        for p in (path, path.with_name(path.name + ".CHECKSUM")):
            os.utime(p, (later, later))

    # ------------------------------------------------------------------ request handling

    @staticmethod
    def _is_listing(parts: urllib.parse.SplitResult) -> bool:
        return parts.path == "/listing" or (parts.path == "/" and bool(parts.query))

    def _next_action(self, key: str):
        with self._lock:
            rule = self.faults.get(key)
            if isinstance(rule, list):
                if not rule:
                    return None
                return rule.pop(0)
            return rule

    def _handle(self, h: _Handler, head: bool) -> None:
        with self._lock:
            self.requests.append(h.path)
            self.request_headers.append((h.path, dict(h.headers.items())))
        parts = urllib.parse.urlsplit(h.path)
        listing = self._is_listing(parts)
        key = LISTING_KEY if listing else urllib.parse.unquote(parts.path).lstrip("/")
        action = self._next_action(key)
        if action == "hang":
            time.sleep(self.hang_seconds)
            action = None
        if action == "drop":
            h.close_connection = True
            return
        if isinstance(action, int):
            self._send(h, action, b"", "text/plain", head)
            return
        if isinstance(action, tuple) and action[0] == "redirect":
            h.send_response(302)
            h.send_header("Location", action[1])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if action == "drip_headers":
            self._drip(h, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
            return

        if listing:
            body = self._list_objects(urllib.parse.parse_qs(parts.query, keep_blank_values=True))
            ctype = "application/xml"
        else:
            path = self._resolve(key)
            if path is None:
                body = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
                    f"<Message>The specified key does not exist.</Message><Key>{escape(key)}</Key></Error>"
                ).encode()
                self._send(h, 404, body, "application/xml", head)
                return
            body = path.read_bytes()
            ctype = "application/zip" if key.endswith(".zip") else "text/plain"
            etag = f'"{hashlib.md5(body).hexdigest()}"'
            mtime = int(path.stat().st_mtime)
            validators = {"ETag": etag, "Last-Modified": email.utils.formatdate(mtime, usegmt=True)}
            if self._not_modified(h, etag, mtime) and action in (None, "ok"):
                h.send_response(304)
                for name, value in validators.items():
                    h.send_header(name, value)
                h.end_headers()
                return
            if action == "drip":
                head_bytes = (f"HTTP/1.0 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nETag: {etag}\r\n\r\n").encode()
                h.wfile.write(head_bytes)
                h.wfile.flush()
                self._drip(h, body)
                return
            if action in (None, "ok"):
                self._send(h, 200, body, ctype, head, validators)
                return

        if action == "corrupt" and body:
            mid = len(body) // 2
            body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1 :]
        if action == "truncate":
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if not head:
                h.wfile.write(body[: len(body) // 2])
                h.wfile.flush()
            h.close_connection = True
            return
        self._send(h, 200, body, ctype, head)

    @staticmethod
    def _not_modified(h: _Handler, etag: str, mtime: int) -> bool:
        if_none = h.headers.get("If-None-Match")
        if if_none is not None:
            return etag in [t.strip() for t in if_none.split(",")] or if_none.strip() == "*"
        since = h.headers.get("If-Modified-Since")
        if since:
            try:
                return mtime <= email.utils.parsedate_to_datetime(since).timestamp()
            except (TypeError, ValueError):
                return False
        return False

    def _drip(self, h: _Handler, data: bytes) -> None:
        """Write ``data`` one byte every ``drip_seconds`` until done or the client is gone."""
        for i in range(len(data)):
            if self._httpd is None:
                return
            try:
                h.wfile.write(data[i : i + 1])
                h.wfile.flush()
            except OSError:
                return
            time.sleep(self.drip_seconds)
        h.close_connection = True

    @staticmethod
    def _send(h: _Handler, status: int, body: bytes, ctype: str, head: bool, extra: dict | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            h.send_header(name, value)
        h.end_headers()
        if body and not head:
            h.wfile.write(body)

    def _resolve(self, key: str) -> Path | None:
        if not key or any(part.startswith(".") for part in key.split("/")):
            return None
        path = (self.mirror_root / key).resolve()
        if not path.is_relative_to(self.mirror_root) or not path.is_file():
            return None
        return path

    def _all_keys(self) -> list[str]:
        keys = []
        for path in self.mirror_root.rglob("*"):
            rel = path.relative_to(self.mirror_root)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                keys.append(rel.as_posix())
        return sorted(keys, key=lambda k: k.encode())

    def _list_objects(self, query: dict[str, list[str]]) -> bytes:
        """An S3 ListObjects (v1) page: ``prefix``, ``delimiter``, ``marker``, ``max-keys``."""
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        marker = query.get("marker", [""])[0]
        try:
            max_keys = int(query.get("max-keys", [str(self.page_size)])[0])
        except ValueError:
            max_keys = self.page_size
        max_keys = max(0, min(max_keys, self.page_size, 1000))

        entries: list[tuple[str, bool]] = []  # (key or common prefix, is_prefix)
        seen: set[str] = set()
        for key in self._all_keys():
            if not key.startswith(prefix) or key <= marker:
                continue
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                if common <= marker or common in seen:
                    continue
                seen.add(common)
                entries.append((common, True))
            else:
                entries.append((key, False))
            if len(entries) > max_keys:
                break
        truncated = len(entries) > max_keys
        page = entries[:max_keys]

        out = [
            '<?xml version="1.0" encoding="UTF-8"?>\n',
            f'<ListBucketResult xmlns="{S3_NS}">',
            f"<Name>{escape(self.bucket)}</Name><Prefix>{escape(prefix)}</Prefix>",
            f"<Marker>{escape(marker)}</Marker>",
        ]
        if truncated and delimiter and self.next_marker and page:
            out.append(f"<NextMarker>{escape(page[-1][0])}</NextMarker>")
        out.append(f"<MaxKeys>{max_keys}</MaxKeys>")
        if delimiter:
            out.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        for name, is_prefix in page:
            if is_prefix:
                continue
            path = self.mirror_root / name
            stat = path.stat()
            etag = hashlib.md5(path.read_bytes()).hexdigest()
            modified = datetime.fromtimestamp(stat.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            out.append(
                f"<Contents><Key>{escape(name)}</Key><LastModified>{modified}</LastModified>"
                f"<ETag>&quot;{etag}&quot;</ETag><Size>{stat.st_size}</Size>"
                f"<StorageClass>STANDARD</StorageClass></Contents>"
            )
        for name, is_prefix in page:
            if is_prefix:
                out.append(f"<CommonPrefixes><Prefix>{escape(name)}</Prefix></CommonPrefixes>")
        out.append("</ListBucketResult>")
        return "".join(out).encode()
