"""Where the trades are not a local file (an object store), the grid asset reads a day's trades a
batch of whole symbols at a time (memory bounded by a batch, not by the day) and stores exactly
what one computation over the day gives. (A local file streams through ``grid_from_parquet``:
see ``test_clustered.py``.)"""

from datetime import date, datetime

import polars as pl
from dagster import DagsterInstance, materialize

import mnemo_assets.defs.grids as grid_defs
from mnemo_assets.config import MarketSettings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.binance.parse import TRADES_SCHEMA
from mnemo_assets.grids import grid_checks, last_trade_grid
from mnemo_assets.storage import parquet
from mnemo_assets.storage.layout import grid_dataset, trades_dataset
from mnemo_assets.storage.parquet import scan_days, write_partition
from mnemo_assets_tests.defs.conftest import small_settings
from mnemo_assets_tests.oracles import assert_rows_close

DAY = date(2025, 1, 1)


def test_grid_in_symbol_batches_equals_the_whole_day(data_root, monkeypatch):
    settings = small_settings(data_root).model_copy(update={"markets": {"spot": MarketSettings(pegs=("USDT", "USDC"))}})
    batches: list[int] = []
    real = parquet.symbol_batches

    def spy(*args, **kwargs):
        for frame in real(*args, **kwargs):
            batches.append(frame.height)
            yield frame

    monkeypatch.setattr(grid_defs, "GRID_BATCH_ROWS", 1)  # every pair its own batch
    monkeypatch.setattr(grid_defs, "symbol_batches", spy)
    monkeypatch.setattr(grid_defs, "local_file", lambda root, relative: None)  # as on an object store
    d = build_definitions(settings)
    result = materialize(list(d.assets), selection=[k for k in d.resolve_asset_graph().get_all_asset_keys() if k.path[1] == "spot"
                                                   and ("_grid_" in k.path[-1] or k.path[-1].endswith(("_trades", "_quality")))],
                         partition_key=DAY.isoformat(), resources=d.resources, instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    trades = scan_days(data_root, trades_dataset("spot"), [DAY]).collect()
    n_symbols = trades["symbol"].n_unique()
    assert len(batches) == 4 * n_symbols > 4  # 2 pegs × 2 intervals, each reading one batch per symbol
    assert max(batches) < trades.height
    as_str = pl.col("symbol").cast(pl.String)
    for peg in ("USDT", "USDC"):
        for interval in ("5s", "10m"):
            expected = last_trade_grid(trades.filter(pl.col("peg_symbol") == peg), interval).with_columns(as_str)
            stored = scan_days(data_root, grid_dataset("spot", interval, peg), [DAY]).collect().with_columns(as_str)
            # equal up to the last bits of float sums (polars' group-by sums depend on how the rows
            # are chunked: the same lazy computation run twice can differ in a few cells)
            assert stored.height > 0
            assert stored.select(pl.exclude(pl.Float64)).equals(expected.select(pl.exclude(pl.Float64))), (peg, interval)
            assert_rows_close(stored.to_dicts(), expected.to_dicts(), rel=1e-12)


def test_a_day_without_trades_of_the_peg_is_an_empty_grid_with_every_check(data_root):
    day_start = datetime(DAY.year, DAY.month, DAY.day)
    trades = pl.DataFrame({
        "symbol": ["BTC", "ETH"], "peg_symbol": ["USDC", "USDC"], "trade_id": [1, 2], "price": [1.0, 2.0], "qty": [1.0, 1.0],
        "quote_qty": [1.0, 2.0], "time": [day_start, day_start], "is_buyer_maker": [True, False],
    }, schema=TRADES_SCHEMA)
    write_partition(trades, data_root, trades_dataset("spot"), DAY)
    in_day = pl.col("peg_symbol") == "USDT"
    counts: dict[str, int] = {}
    assert list(grid_defs._grids(str(data_root), trades_dataset("spot"), DAY, in_day, "5s", counts)) == []
    reference = grid_checks(last_trade_grid(trades, "5s"), trades, "5s")
    assert counts == dict.fromkeys(reference, 0)
    # the USDC grid of the same file: one batch, the checks of the whole day
    counts = {}
    grids = list(grid_defs._grids(str(data_root), trades_dataset("spot"), DAY, pl.col("peg_symbol") == "USDC", "5s", counts))
    assert len(grids) == 1 and grids[0].height == 2 and counts == reference
