import shutil
from datetime import date
from pathlib import Path

import pytest
from dagster import DagsterInstance

from mnemo_assets.config import GridSettings, MarketSettings, Settings, SourceSettings, SyntheticSettings


def small_settings(root, **source) -> Settings:
    """A small synthetic (or mirror) configuration for fast pipeline tests."""
    src = {"kind": "synthetic", "synthetic": SyntheticSettings(seed=11, n_pairs=8, trades_per_day=6000, start=date(2024, 12, 1))}
    src.update(source)
    return Settings(
        data_root=str(root),
        start_date=date(2024, 12, 1),
        source=SourceSettings(**src),
        markets={"spot": MarketSettings(pegs=("USDT", "USDC")), "cm": MarketSettings(pegs=("USD",))},
        grids=GridSettings(intervals=("5s", "10m")),
    )


@pytest.fixture
def settings(data_root):
    return small_settings(data_root)


REPO = Path(__file__).resolve().parents[2]


def persistent_instance(home: Path) -> DagsterInstance:
    """A Dagster instance under ``home`` configured by the repository's ``dagster.yaml`` (what
    `mnemo` uses on a laptop)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    return DagsterInstance.from_config(str(home))


@pytest.fixture
def instance(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    inst = persistent_instance(tmp_path / "dagster_home")
    yield inst
    inst.dispose()


def run_days(settings, keys, days, instance, missing_only: bool = False):
    """Plan and run ``keys`` × ``days`` as one in-process asset backfill (what `mnemo` does)."""
    from mnemo_assets.defs.execution import Request, run_request

    request = Request(list(keys), list(days), missing_only, "test")
    return run_request(settings, request, progress=False, echo=lambda _m: None, instance=instance)
