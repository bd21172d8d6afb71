"""The seed notebooks' cells, verbatim but for the import (``mnemosyne`` → ``mnemo_assets``)."""

from datetime import date, timedelta

import polars as pl
import pytest

from mnemo_assets.binance.synthetic import SyntheticArchive
from mnemo_assets.grids import last_trade_grid
from mnemo_assets.storage.layout import grid_dataset
from mnemo_assets.storage.parquet import write_partition

FIRST = date(2025, 7, 1)
DAYS = 55  # the seed reads partitions[30:50] and queries 2025-08-01


@pytest.fixture(scope="module")
def seed_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed-store")
    archive = SyntheticArchive(root / "gen", seed=3, n_pairs=12, trades_per_day=3000, start=FIRST, end=FIRST + timedelta(days=DAYS))
    for k in range(DAYS):
        day = FIRST + timedelta(days=k)
        pairs = [p for p in archive.list_pairs("spot") if day in archive.list_days("spot", p)]
        trades = pl.concat([archive.normalised_trades("spot", p, day) for p in pairs])
        for peg in ("USDT", "USDC"):
            for iv in ("10m", "5s"):
                grid = last_trade_grid(trades.filter(pl.col("peg_symbol") == peg), iv)
                write_partition(grid, root, grid_dataset("spot", iv, peg), day)
    return root


@pytest.fixture
def in_store(seed_store, monkeypatch):
    monkeypatch.setenv("MNEMO_DATA_ROOT", str(seed_store))
    monkeypatch.delenv("MNEMO_CONFIG", raising=False)
    return seed_store


def test_returns_notebook_grid_cell(in_store):
    import mnemo_assets as ms  # was: import mnemosyne as ms

    peg_symbol = "USDT"
    dstype = ms.DatasetType.BinanceSpotTrades
    grid_interval = "10m"

    dataset = ms.binance.BinanceLastTradesGrid(
        peg_symbol=peg_symbol,
        grid_interval=grid_interval,
        dataset_type=dstype,
        parquet_names="*.parquet",
        num_workers=4,
    )

    df = dataset[dataset.partitions[30:50]].collect()
    assert df.columns[:17] == [
        "symbol",
        "date",
        "time",
        "peg_symbol",
        "open",
        "high",
        "low",
        "close",
        "volume_base",
        "volume_quote",
        "trade_count",
        "last_trade_time",
        "taker_buy_volume_quote",
        "taker_sell_volume_quote",
        "vwap_taker_buy",
        "vwap_taker_sell",
        "vwap_total_by_base",
    ]
    assert isinstance(df.schema["symbol"], pl.Enum) and df.schema["trade_count"] == pl.UInt32
    assert df["date"].n_unique() == 20

    # In [2]
    query_lf = df.lazy().select("symbol", "time", pl.col("last_trade_time").alias("start_time")).drop("time")
    start_time = pl.col("last_trade_time")  # noqa: F841
    fair_expr = pl.col("vwap_total_by_base")  # Expression from gridded schema from which to compute fair
    mark_expr = pl.lit("10m")
    tick_lag_tolerance = pl.lit("30s")

    peg_symbol = "USDC"
    grid_backend_dstype = ms.DatasetType.BinanceSpotTrades
    grid_backend_interval = "10m"

    query_lf.collect()

    # In [74]
    backend_dataset = ms.binance.BinanceLastTradesGrid(
        peg_symbol=peg_symbol, grid_interval=grid_backend_interval, dataset_type=grid_backend_dstype, parquet_names="*.parquet"
    )
    db = backend_dataset.lazyframe()
    db_symbol_enum = db.collect_schema()["symbol"]

    # In [75]
    query_with_both = (
        query_lf.sort(["symbol", "start_time"])
        .filter(pl.col("symbol").cast(str).is_in(list(db_symbol_enum.categories)))
        .with_columns(pl.col("symbol").cast(str).cast(db_symbol_enum))
        .with_row_index("row_id")
        .with_columns(pl.col("start_time").dt.offset_by(mark_expr).alias("end_time"))
        .with_columns([pl.col("start_time").set_sorted(), pl.col("end_time").set_sorted()])
    )
    query_type_enum = pl.Enum(["start", "end"])
    long_format = (
        pl.concat(
            [
                query_with_both.select(
                    "row_id",
                    "symbol",
                    "start_time",
                    pl.col("start_time").alias("query_time"),
                    pl.lit("start").alias("query_type").cast(query_type_enum),
                ),
                query_with_both.select(
                    "row_id", "symbol", "start_time", pl.col("end_time").alias("query_time"), pl.lit("end").alias("query_type").cast(query_type_enum)
                ),
            ]
        )
        .drop("start_time")
        .sort(["symbol", "query_time"])
    )
    query_with_both.collect()

    # In [76]
    min_date, max_date = (
        long_format.select(pl.col("query_time").dt.date().min().alias("min"), pl.col("query_time").dt.date().max().alias("max")).collect().row(0)
    )

    inrange_db = (
        db.filter(pl.col("date").is_between(min_date, max_date))
        .select(
            "symbol",
            fair_expr.alias("mark_fair"),
            pl.col("last_trade_time").alias("mark_time"),
        )
        .sort("symbol", "mark_time")
        .with_columns(pl.col("mark_time").set_sorted())
    )
    assert inrange_db.collect().height > 0

    # the engine on the same query gives the same returns as the notebook's hand-made join would
    from mnemo_assets.engines import ReturnsEngine

    usdc = query_lf.filter(pl.col("symbol").cast(str).is_in(list(db_symbol_enum.categories)))
    got = ReturnsEngine(db).query(usdc, pl.col("start_time"), mark_expr, tick_lag_tolerance).collect()
    assert got.columns == ["symbol", "start_time", "max_tick_to_query_lag", "return"]
    assert got["return"].drop_nulls().len() > 0


def test_returns_notebook_engine_cell(in_store):
    from datetime import datetime as Datetime

    import polars as pl

    import mnemo_assets as ms  # was: import mnemosyne as ms
    from mnemo_assets.engines import ReturnsEngine  # was: from mnemosyne.engines import ReturnsEngine

    symbol_enum = pl.Enum(["BTC", "ETH", "BTCDOWN", "BNB"])

    query_lf = (
        pl.DataFrame({"symbol": ["BTC", "ETH", "BTCDOWN", "BNB"], "times": [Datetime(2025, 8, 1, 9, 0, 0)] * 4})
        .with_columns(pl.col("symbol").cast(symbol_enum))
        .lazy()
    )

    backend_db = ms.binance.BinanceLastTradesGrid(
        peg_symbol="USDT",
        grid_interval="10m",
        dataset_type=ms.DatasetType.BinanceSpotTrades,
    ).lazyframe()

    re = ReturnsEngine(backend_db, backend_fair_expr=pl.col("vwap_total_by_base"), backend_time_expr=pl.col("last_trade_time"))

    value = re.query(query_lf, start_time_expr=pl.col("times"), mark_duration=pl.lit("10m"), tick_lag_tolerance=pl.lit("30s"))
    out = value.collect()
    assert out.columns == ["symbol", "times", "max_tick_to_query_lag", "return"]
    assert out.schema["symbol"] == symbol_enum and out.schema["max_tick_to_query_lag"] == pl.Duration("us")
    assert out.row(2) == ("BTCDOWN", Datetime(2025, 8, 1, 9), None, None)  # never seen by the backend
    assert out["max_tick_to_query_lag"][0] is not None  # BTC trades every 10 minutes here


def test_metadata_notebook_reader_cells(in_store):
    from datetime import timedelta as _td

    import mnemo_assets as ms

    class Timedelta(_td):  # stands in for timedelta_isoformat.timedelta, a timedelta subclass
        pass

    dataset_type, backend_grid_interval, peg_symbol = (ms.DatasetType.BinanceSpotTrades, Timedelta(seconds=5), "USDC")
    backend_dataset = ms.binance.BinanceLastTradesGrid(
        peg_symbol=peg_symbol,
        grid_interval=backend_grid_interval,
        dataset_type=dataset_type,
        parquet_names="*.parquet",
    )
    returns_interval = Timedelta(minutes=10)
    backend_universe_df = backend_dataset.cast_symbol_col_to_enum(backend_dataset.universe())
    returns_grid = (
        backend_universe_df.with_columns(
            returns_grid_time=pl.datetime_ranges(pl.col("date"), pl.col("date").dt.offset_by("1d"), interval=returns_interval, closed="left")
        )
        .explode("returns_grid_time")
        .sort("symbol", "returns_grid_time")
        .lazy()
    )
    out = returns_grid.collect()
    assert out.height == backend_universe_df.height * 144
    assert out.schema["symbol"] == backend_dataset.symbol_enum
