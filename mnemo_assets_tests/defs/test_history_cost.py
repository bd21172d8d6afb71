"""Per-partition cost does not grow with history: what a partition reads of earlier days.

The returns' stale-mark carry-in walks earlier days' footers to find a symbol's last row; it
must read (and verify) only the day holding that row, never every stored day.
"""

from datetime import date, datetime, timedelta

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from mnemo_assets.binance.datasets import ParquetDataset, last_rows_before_day
from mnemo_assets.config import MarketSettings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.grids import last_trade_grid
from mnemo_assets.returns import gridded_returns
from mnemo_assets.storage import parquet
from mnemo_assets.storage.layout import grid_dataset, returns_dataset
from mnemo_assets.storage.parquet import scan_days, write_partition
from mnemo_assets_tests.defs.conftest import small_settings
from mnemo_assets_tests.oracles import assert_rows_close

START = date(2024, 12, 1)
DAYS = [START + timedelta(days=k) for k in range(12)]
RET = AssetKey(["binance", "spot", "usdt", "spot_usdt_ret_10m"])
GRID = grid_dataset("spot", "5s", "USDT")


def _trades(symbol: str, day: date, n: int, seed: int) -> pl.DataFrame:
    t0 = datetime(day.year, day.month, day.day)
    # trades every ~7 min from 00:03, the last at a symbol-specific time (stale marks differ)
    times = [t0 + timedelta(minutes=3 + 7 * k, seconds=seed) for k in range(n)]
    return pl.DataFrame(
        {
            "symbol": symbol,
            "peg_symbol": "USDT",
            "trade_id": list(range(n)),
            "price": [100.0 + seed + 0.1 * k for k in range(n)],
            "qty": [1.0 + (k % 3) for k in range(n)],
            "quote_qty": [(100.0 + seed + 0.1 * k) * (1.0 + (k % 3)) for k in range(n)],
            "time": times,
            "is_buyer_maker": [k % 2 == 0 for k in range(n)],
        }
    )


#: which symbols trade on which day: AAA every day; BBB on day 1, then again on days 9-11 (a
#: relisting: its stale mark is 8 days old); CCC from day 10 only (a new listing: no mark)
PRESENCE = {
    "AAA": set(range(12)),
    "BBB": {1, 9, 10, 11},
    "CCC": {10, 11},
}


@pytest.fixture
def grid_store(data_root):
    for i, day in enumerate(DAYS):
        trades = pl.concat([_trades(s, day, 150 if s == "AAA" else 40, seed) for seed, (s, days) in enumerate(PRESENCE.items()) if i in days])
        write_partition(last_trade_grid(trades, "5s"), data_root, GRID, day)
    return data_root


@pytest.fixture
def hashed(monkeypatch):
    """Days whose stored content was read to verify it (what grows with history if unbounded)."""
    seen: list[str] = []
    real = parquet._content_hash

    def counting(fh, size, stored):
        if stored != parquet._BLANK:
            seen.append(fh.name)
        return real(fh, size, stored)

    monkeypatch.setattr(parquet, "_content_hash", counting)
    parquet._VERIFIED.clear()
    return seen


def _day_of(path: str) -> date:
    return date.fromisoformat(path.split("date=")[1][:10])


def test_last_rows_before_day_reads_only_the_days_it_needs(grid_store, hashed):
    grids = ParquetDataset(GRID, str(grid_store))
    carry = last_rows_before_day(grids, DAYS[9], {"AAA", "BBB", "CCC"})
    verified = sorted({_day_of(p) for p in hashed})
    # the brute force: every symbol's last row over all earlier days
    everything = scan_days(grid_store, GRID, DAYS[:9]).collect().with_columns(pl.col("symbol").cast(pl.String))
    expected = everything.sort("last_trade_time").group_by("symbol").last().sort("symbol")
    assert carry.schema["symbol"] == pl.String
    assert carry.sort("symbol").to_dicts() == expected.to_dicts()
    assert set(carry["symbol"]) == {"AAA", "BBB"}  # CCC never traded before day 10
    # only the days holding a last row were verified (day 8 for AAA, day 1 for BBB); the days
    # in between had their footers read, nothing else
    assert verified == [DAYS[1], DAYS[8]]
    assert last_rows_before_day(grids, DAYS[9], set()) is None
    assert last_rows_before_day(grids, DAYS[0], {"AAA"}) is None


def test_returns_with_stale_carry_in_equal_one_computation_and_read_no_history(grid_store, hashed):
    settings = small_settings(grid_store).model_copy(update={"markets": {"spot": MarketSettings(pegs=("USDT",))}})
    d = build_definitions(settings)
    day = DAYS[9]  # BBB relisted (its mark is from day 1), CCC listed the next day
    tags = {"dagster/asset_partition_range_start": day.isoformat(), "dagster/asset_partition_range_end": day.isoformat()}
    result = materialize(
        list(d.assets), selection=[RET], tags=tags, resources=d.resources, instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert result.success
    verified = {_day_of(p) for p in hashed if GRID in p}
    full = gridded_returns(scan_days(grid_store, GRID, DAYS).collect(), day, day + timedelta(days=1), "10m")
    stored = scan_days(grid_store, returns_dataset("spot", "10m", "USDT"), [day]).collect()
    as_str = pl.col("symbol").cast(pl.String)
    assert stored.height == full.height == 2 * 144
    assert_rows_close(stored.with_columns(as_str).sort("symbol", "returns_grid_time").to_dicts(), full.with_columns(as_str).to_dicts())
    bbb = stored.filter(as_str == "BBB").sort("returns_grid_time")
    assert bbb["max_tick_to_query_lag"][0] > timedelta(days=7)  # the 8-day-old mark was carried in
    # read: the window D−1..D+1 and the carry day 1; not the other earlier days
    assert verified == {DAYS[1], DAYS[8], DAYS[9], DAYS[10]}
    # and the materialization says which earlier grid day the carried-in marks came from
    (event,) = [e for e in result.get_asset_materialization_events() if e.materialization.partition == day.isoformat()]
    meta = event.materialization.metadata
    assert meta["carried_in_symbols"].value == 1 and meta["carried_in_from_grid_days"].value == DAYS[1].isoformat()
