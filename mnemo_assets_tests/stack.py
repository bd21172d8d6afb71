"""A real Dagster stack for tests: dagster-webserver and dagster-daemon on loopback, each in its own
process group (stopped with the group), with a temporary DAGSTER_HOME and data root.

By default the instance is the repository's ``dagster.yaml`` (sqlite under DAGSTER_HOME); pass
``instance_yaml`` (e.g. ``deploy/postgres/dagster.yaml``) and the ``env`` it reads to run the
same stack on another instance."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mnemo_assets.graphql import DagsterGraphQL

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SMALL_CONFIG = """\
data_root: {root}
start_date: 2024-12-01
source:
  kind: synthetic
  synthetic: {{seed: 11, n_pairs: 8, trades_per_day: 6000, start: 2024-12-01}}
markets:
  spot: {{pegs: [USDT]}}
grids: {{intervals: [5s, 10m]}}
automation: {{enabled: false}}
backfill: {{days_per_batch: 30}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, base: Path, instance_yaml: Path | None = None, env: dict[str, str] | None = None, config: str = SMALL_CONFIG):
        self.base = base
        self.instance_yaml = Path(instance_yaml) if instance_yaml else REPO / "dagster.yaml"
        self.extra_env = dict(env or {})
        self.config_text = config
        self.home = base / "dagster_home"
        self.root = base / "data"
        self.config = base / "mnemo.yaml"
        self.logs = base / "logs"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(DAGSTER_HOME=str(self.home), MNEMO_CONFIG=str(self.config), MNEMO_AUTOMATION="off")
        env.pop("MNEMO_DATA_ROOT", None)
        env.update(self.extra_env)
        return env

    def start(self) -> Stack:
        for d in (self.home, self.root, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.instance_yaml, self.home / "dagster.yaml")
        self.config.write_text(self.config_text.format(root=self.root))
        # create the storage once: two processes migrating a fresh store at once race
        out = subprocess.run([str(BIN / "dagster"), "instance", "migrate"], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"dagster instance migrate failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        workspace = str(REPO / "workspace.yaml")
        commands = {
            "webserver": [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(self.port)],
            "daemon": [str(BIN / "dagster-daemon"), "run", "-w", workspace],
        }
        for name, cmd in commands.items():
            log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            self.procs.append(subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        DagsterGraphQL(self.url).wait_until_up(timeout=180)
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)
