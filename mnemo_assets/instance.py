"""The Dagster instance the CLI records runs in ($DAGSTER_HOME, default ./.dagster_home)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dagster import DagsterInstance

DEFAULT_HOME = ".dagster_home"


def ensure_dagster_home(home: str | Path | None = None) -> Path:
    """Make sure ``$DAGSTER_HOME`` is set and holds a ``dagster.yaml``; return it.

    When unset it becomes ``./.dagster_home``. A missing ``dagster.yaml`` is copied from the
    working directory's ``dagster.yaml`` (the repository's instance settings) when there is one.
    """
    home = Path(home or os.environ.get("DAGSTER_HOME") or DEFAULT_HOME).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    config = home / "dagster.yaml"
    local = Path.cwd() / "dagster.yaml"
    if not config.exists() and local.exists() and local.resolve() != config:
        shutil.copyfile(local, config)
    return home


def get_instance() -> DagsterInstance:
    """The persistent instance under ``$DAGSTER_HOME`` (created on first use)."""
    ensure_dagster_home()
    return DagsterInstance.get()
