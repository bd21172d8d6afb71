from datetime import date

import pytest

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
