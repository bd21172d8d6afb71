"""A real S3 endpoint for tests: ``moto_server`` (moto's HTTP server) on a free loopback port,
in its own process group, with every request it receives counted from its request log.

No in-process mock: fsspec/s3fs, polars' object_store reader, DuckDB's httpfs and the Dagster
processes all talk HTTP to it exactly as they would to S3 (path-style addressing, plain http).

>>> server = MotoServer(tmp_path).start()  # doctest: +SKIP
>>> server.create_bucket("mnemo")  # doctest: +SKIP
>>> mark = server.mark(); ...; server.requests(since=mark)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from mnemo_assets_tests.stack import free_port

BIN = Path(sys.executable).parent
#: werkzeug's request log line: ``127.0.0.1 - - [date] "GET /path?query HTTP/1.1" 200 -``
_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+" (?P<status>\d{3})')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

ACCESS_KEY = "mnemo-test-key"
SECRET_KEY = "mnemo-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class Request:
    """One request the server answered."""

    method: str
    path: str  # /bucket/key (decoded)
    query: dict[str, list[str]]
    status: int

    @property
    def is_listing(self) -> bool:
        """A ListObjects call (a GET on the bucket itself)."""
        return self.method == "GET" and self.path.strip("/").count("/") == 0 and "location" not in self.query

    @property
    def kind(self) -> str:
        """``LIST``, ``HEAD``, ``GET``, ``PUT``, ``DELETE``, ... (object requests by method)."""
        return "LIST" if self.is_listing else self.method


class MotoServer:
    """``moto_server`` on 127.0.0.1 (see the module docstring)."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = self.base / f"moto-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 60) -> MotoServer:
        self.base.mkdir(parents=True, exist_ok=True)
        exe = BIN / "moto_server"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
        log = open(self.log, "wb")  # noqa: SIM115 - closed with the process
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.proc = subprocess.Popen(
            [*cmd, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start:\n{self.log.read_text(errors='replace')[-3000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    # ------------------------------------------------------------------ clients
    @property
    def env(self) -> dict[str, str]:
        """The usual AWS variables pointing every client (s3fs, polars, DuckDB, the CLI) here."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    # ------------------------------------------------------------------ request log
    def _lines(self) -> list[str]:
        text = _ANSI.sub("", self.log.read_text(errors="replace"))
        return [line for line in text.splitlines() if _LINE.search(line)]

    def mark(self) -> int:
        """The number of requests answered so far (pass to :meth:`requests` as ``since``)."""
        time.sleep(0.05)  # the log line is written as the response goes out
        return len(self._lines())

    def requests(self, since: int = 0, bucket: str | None = None) -> list[Request]:
        """Requests answered after ``since`` (optionally only those on ``bucket``), oldest first;
        the ``/moto-api/`` control calls are left out."""
        time.sleep(0.05)
        out = []
        for line in self._lines()[since:]:
            m = _LINE.search(line)
            target = urlsplit(m.group("target"))
            path = unquote(target.path)
            if path.startswith("/moto-api"):
                continue
            if bucket is not None and path.strip("/").split("/")[0] != bucket:
                continue
            out.append(Request(m.group("method"), path, parse_qs(target.query, keep_blank_values=True), int(m.group("status"))))
        return out

    def counts(self, since: int = 0, bucket: str | None = None) -> Counter:
        """``Counter`` of request kinds (``LIST``, ``HEAD``, ``GET``, ``PUT``, ...) after ``since``."""
        return Counter(r.kind for r in self.requests(since, bucket))


class CuttingProxy:
    """A loopback TCP proxy in front of an S3 endpoint that drops the connection half-way
    through the body of every PUT whose path contains ``cut`` (an upload that fails mid-way,
    as on a network failure or a killed writer); everything else passes unchanged."""

    def __init__(self, upstream_port: int, cut: str):
        import socket
        import threading

        self.upstream_port = upstream_port
        self.cut = cut
        self.cuts = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        self._sock.close()

    def _serve(self) -> None:
        import socket
        import threading

        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump_back, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump_back(src, dst) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def _requests(self, client, upstream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                end = buffer.index(b"\r\n\r\n") + 4
                head, buffer = buffer[:end], buffer[end:]
                first, *lines = head.decode("latin-1").split("\r\n")
                method, target = first.split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
                length = int(headers.get("content-length", "0") or 0)
                upstream.sendall(head)
                cutting = method == "PUT" and self.cut in unquote(target) and length > 1
                budget = length // 2 if cutting else length
                while budget > 0:
                    if not buffer:
                        buffer = client.recv(65536)
                        if not buffer:
                            return
                    piece, buffer = buffer[:budget], buffer[budget:]
                    upstream.sendall(piece)
                    budget -= len(piece)
                if cutting:
                    self.cuts += 1
                    return
        except OSError:
            return
        finally:
            if "cutting" in locals() and cutting:
                for s in (client, upstream):
                    try:
                        s.shutdown(2)
                        s.close()
                    except OSError:
                        pass
