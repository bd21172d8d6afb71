"""A throwaway PostgreSQL server from Debian's packages, for tests.

``initdb`` and ``pg_ctl`` are looked up under ``/usr/lib/postgresql/*/bin`` (Debian's layout;
they are not on PATH). Debian's ``initdb`` refuses to run as root, so as root every server
command runs as the ``postgres`` user (``runuser -u postgres --``) in a data directory that user
owns. The server listens on 127.0.0.1 only, on a free port, with password authentication over
TCP; :meth:`PostgresServer.stop` stops it and removes its directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mnemo_assets_tests.stack import free_port

SUPERUSER = "postgres"


def _version(path: str) -> tuple[int, ...]:
    m = re.search(r"/postgresql/([\d.]+)/bin/", path)
    return tuple(int(p) for p in m.group(1).split(".")) if m else (0,)


def find_bin_dir() -> Path | None:
    """Newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl`` (or None)."""
    found = [p for p in glob.glob("/usr/lib/postgresql/*/bin/initdb") if os.access(p, os.X_OK)]
    for initdb in sorted(found, key=_version, reverse=True):
        bin_dir = Path(initdb).parent
        if os.access(bin_dir / "pg_ctl", os.X_OK):
            return bin_dir
    return None


def missing_reason() -> str | None:
    """Why a server cannot be started here, or None."""
    if find_bin_dir() is None:
        return "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (util-linux)"
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return "running as root and there is no 'postgres' user (Debian's postgresql package creates it)"
    return None


@dataclass(frozen=True)
class Database:
    host: str
    port: int
    db_name: str
    username: str
    password: str

    @property
    def env(self) -> dict[str, str]:
        """The variables deploy/postgres/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.db_name,
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
        }

    def connect(self):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, dbname=self.db_name, user=self.username, password=self.password)

    def count(self, sql: str, params: tuple = ()) -> int:
        """``SELECT count(*) ...`` straight from Postgres (no Dagster in between)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return int(cur.fetchone()[0])
        finally:
            conn.close()


class PostgresServer:
    def __init__(self) -> None:
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        self.bin = find_bin_dir()
        self.as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="mnemo-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.started = False

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", SUPERUSER, "--"] if self.as_root else []) + list(args)

    def _run(self, *args: str, timeout: float = 120) -> None:
        out = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=self.base)
        if out.returncode != 0:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{tail}")

    def start(self) -> PostgresServer:
        if self.as_root:
            user = pwd.getpwnam(SUPERUSER)
            os.chown(self.base, user.pw_uid, user.pw_gid)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            os.chown(pwfile, pwd.getpwnam(SUPERUSER).pw_uid, -1)
        pwfile.chmod(0o600)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=peer",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        # loopback only; the socket lives in our own directory; durability off (a test server)
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        self.started = True
        return self

    def superuser(self, db_name: str = "postgres"):
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=self.port, dbname=db_name, user=SUPERUSER, password=self.password)
                conn.autocommit = True
                return conn
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def create_database(self, name: str) -> Database:
        """A new database owned by a new login role of the same name."""
        password = secrets.token_hex(12)
        conn = self.superuser()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE ROLE "{name}" LOGIN PASSWORD %s', (password,))
                cur.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
        finally:
            conn.close()
        return Database("127.0.0.1", self.port, name, name, password)

    def stop(self) -> None:
        try:
            if self.started and (self.data / "postmaster.pid").exists():
                try:
                    self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", timeout=90)
                except (RuntimeError, subprocess.TimeoutExpired):
                    self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            self.started = False
            shutil.rmtree(self.base, ignore_errors=True)
