"""Configuration: file, environment overrides, validation, and the repository's mnemo.yaml."""

from datetime import date, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from mnemo_assets.config import Settings, load_settings
from mnemo_assets.intervals import day_interval, interval_name, to_timedelta

REPO = Path(__file__).resolve().parents[1]


def test_repository_mnemo_yaml_spells_out_the_defaults():
    assert load_settings(REPO / "mnemo.yaml", env={}) == Settings()


def test_environment_overrides(tmp_path):
    env = {
        "MNEMO_DATA_ROOT": "s3://bucket/mnemo", "MNEMO_SOURCE": "mirror", "MNEMO_MIRROR_DIR": "/mnt/binance",
        "MNEMO_START_DATE": "2023-01-01", "MNEMO_MARKETS": "spot,cm",
    }
    s = load_settings(REPO / "mnemo.yaml", env=env)
    assert s.data_root == "s3://bucket/mnemo" and s.source.kind == "mirror" and s.mirror_dir == "/mnt/binance"
    assert s.start_date == date(2023, 1, 1) and list(s.markets) == ["spot", "cm"]


def test_mnemo_config_env_points_at_a_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_root: /x\nmarkets:\n  spot:\n    pegs: [FDUSD]\ngrids:\n  intervals: [5s, 1m]\n")
    s = load_settings(env={"MNEMO_CONFIG": str(cfg)})
    assert s.data_root == "/x" and s.markets["spot"].pegs == ("FDUSD",) and s.grids.intervals == ("5s", "1m")
    assert s.mirror_dir == "/x/archive"


@pytest.mark.parametrize(
    "text,match",
    [
        ("grids:\n  intervals: [7m]\n", "does not divide one day"),
        ("markets:\n  futures:\n    pegs: [USDT]\n", "unknown market"),
        ("markets:\n  spot:\n    pegs: [usdt]\n", "upper-case"),
        ("source:\n  kind: ftp\n", "kind"),
        ("grids:\n  intervals: [10m]\n", "returns.grid_interval"),
        ("bogus: 1\n", "bogus"),
    ],
)
def test_invalid_configuration_is_a_clear_error(tmp_path, text, match):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises((ValidationError, ValueError), match=match):
        load_settings(cfg, env={})


def test_unknown_market_in_env():
    with pytest.raises(ValueError, match="MNEMO_MARKETS"):
        load_settings(REPO / "mnemo.yaml", env={"MNEMO_MARKETS": "spot,options"})


def test_intervals():
    assert to_timedelta("1h30m") == timedelta(minutes=90)
    assert interval_name(timedelta(seconds=300)) == "5m" and interval_name("4s") == "4s"
    assert day_interval("10m") == timedelta(minutes=10)
    import polars as pl

    assert to_timedelta(pl.lit("30s")) == timedelta(seconds=30)
    for bad in ("7m", "0s", "abc", "5x"):
        with pytest.raises(ValueError):
            day_interval(bad)
