"""MetadataEngine: compute() through Dagster (skip / recompute), compute_range from the store."""

from datetime import date

import polars as pl
import pytest

from mnemo_assets import DatasetType
from mnemo_assets.binance import BinanceLastTradesGrid
from mnemo_assets.config import MarketSettings
from mnemo_assets.engines import MetadataEngine
from mnemo_assets_tests.defs.conftest import small_settings
from mnemo_assets_tests.oracles import assert_rows_close


@pytest.fixture
def engine(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    settings = small_settings(data_root).model_copy(update={"markets": {"spot": MarketSettings(pegs=("USDT",))}})
    grid = BinanceLastTradesGrid("USDT", "5s", DatasetType.BinanceSpotTrades, root=str(data_root))
    return MetadataEngine(backend_dataset=grid, settings=settings)


def test_compute_skips_stored_days_unless_recompute(engine):
    first = engine.compute(start=date(2024, 12, 1), end=date(2024, 12, 4), progress=False)
    assert first.ok and first.backfill_id
    assert engine.partitions == [date(2024, 12, 1), date(2024, 12, 2), date(2024, 12, 3)]  # 12-04 waits for 12-05
    assert "waits for" in first.assets["binance/spot/usdt/spot_usdt_meta_1h"].waiting[date(2024, 12, 4)]
    again = engine.compute(start=date(2024, 12, 1), end=date(2024, 12, 4), progress=False)
    assert again.ok and again.backfill_id is None and sum(a.planned for a in again.assets.values()) == 0
    redo = engine.compute(recompute=True, start=date(2024, 12, 1), end=date(2024, 12, 4), progress=False)
    touched = {name.split("/")[-1] for name, a in redo.assets.items() if a.planned}
    assert touched == {"spot_usdt_meta_1h", "spot_usdt_ipart_1h", "spot_usdt_rpart_1h"}
    assert all(a.materialized == a.planned for a in redo.assets.values())
    stored = engine[[date(2024, 12, 2)]].collect()
    direct = engine.compute_range(date(2024, 12, 2), date(2024, 12, 3))
    s = pl.col("symbol").cast(pl.String)
    assert_rows_close(stored.with_columns(s).to_dicts(), direct.with_columns(s).to_dicts(), rel=1e-9)
