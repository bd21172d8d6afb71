"""last_trade_grid against a per-trade loop oracle: realdata, synthetic-like random days, edge cases."""

from datetime import datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemo_assets.binance.parse import TRADES_SCHEMA, read_trades_file
from mnemo_assets.grids import GRID_COLUMNS, GRID_SCHEMA, grid_violations, last_trade_grid
from mnemo_assets.intervals import to_micros
from mnemo_assets_tests.conftest import REALDATA, realdata_files
from mnemo_assets_tests.oracles import assert_rows_close, grid_oracle

SEED_COLUMNS = [
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


def check_against_oracle(trades: pl.DataFrame, interval: str) -> pl.DataFrame:
    grid = last_trade_grid(trades, interval)
    expected = grid_oracle(trades.to_dicts(), to_micros(interval))
    actual = grid.with_columns(pl.col("symbol").cast(pl.String)).to_dicts()
    assert_rows_close(actual, expected)
    return grid


def test_columns_and_dtypes_are_the_seeds():
    trades = read_trades_file(REALDATA / "spot/trades/BTCUSDT-trades-2021-01-08.partial.csv", "spot")
    grid = last_trade_grid(trades, "4s")
    assert grid.columns[:17] == SEED_COLUMNS
    assert grid.columns == GRID_COLUMNS
    assert isinstance(grid.schema["symbol"], pl.Enum)
    for name, dtype in GRID_SCHEMA.items():
        if name != "symbol":
            assert grid.schema[name] == dtype, name


@pytest.mark.parametrize("path,market", realdata_files(), ids=lambda v: getattr(v, "name", v))
@pytest.mark.parametrize("interval", ["5s", "10m"])
def test_realdata_file_matches_oracle(path, market, interval):
    check_against_oracle(read_trades_file(path, market), interval)


@pytest.mark.parametrize("market,folder", [("spot", "spot/trades"), ("um", "futures/um/trades"), ("cm", "futures/cm/trades")])
def test_buckets_straddling_midnight(market, folder):
    """Two real partial days around 2024-08-09 00:00, BTC and ETH together, 1m and 7-minute-ish grids."""
    files = sorted((REALDATA / folder).glob("*-2024-08-0[89].partial.csv"))
    trades = pl.concat([read_trades_file(p, market) for p in files])
    for interval in ("1s", "1m", "10m", "1h"):
        grid = check_against_oracle(trades, interval)
        assert set(grid.get_column("date").to_list()) <= {datetime(2024, 8, 8).date(), datetime(2024, 8, 9).date()}
        assert grid_violations(grid, interval) == dict.fromkeys(grid_violations(grid, interval), 0)


def test_lazy_in_lazy_out_and_enum_input_kept():
    trades = read_trades_file(REALDATA / "spot/trades/ETHUSDT-trades-2024-08-09.partial.csv", "spot")
    enum = pl.Enum(["BTC", "ETH", "XRP"])
    lazy = last_trade_grid(trades.lazy().with_columns(pl.col("symbol").cast(enum)), "5s")
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.collect_schema()["symbol"] == enum


def test_interval_must_divide_a_day():
    trades = pl.DataFrame(schema=TRADES_SCHEMA)
    with pytest.raises(ValueError, match="does not divide one day"):
        last_trade_grid(trades, "7m")


def test_empty_trades_give_empty_grid():
    grid = last_trade_grid(pl.DataFrame(schema=TRADES_SCHEMA), "5s")
    assert grid.height == 0 and grid.columns == GRID_COLUMNS


def test_vwap_null_without_taker_side():
    t0 = datetime(2024, 1, 1)
    trades = pl.DataFrame(
        {
            "symbol": ["A", "A"],
            "peg_symbol": ["USDT"] * 2,
            "trade_id": [1, 2],
            "price": [2.0, 4.0],
            "qty": [1.0, 1.0],
            "quote_qty": [2.0, 4.0],
            "time": [t0, t0 + timedelta(seconds=1)],
            "is_buyer_maker": [True, True],
        },
        schema=TRADES_SCHEMA,
    )
    row = last_trade_grid(trades, "5s").row(0, named=True)
    assert row["vwap_taker_buy"] is None and row["vwap_taker_sell"] == 3.0 and row["taker_buy_volume_quote"] == 0.0


BASE = datetime(2024, 12, 31, 23, 59, 50)


@st.composite
def trade_frames(draw):
    """Trades sitting on bucket boundaries, sharing timestamps, with ids in any order."""
    n = draw(st.integers(1, 60))
    offsets = draw(
        st.lists(
            st.one_of(
                st.sampled_from([0, 1, 4_999_999, 5_000_000, 5_000_001, 10_000_000, 9_999_999, 15_000_000]),
                st.integers(0, 20_000_000),
            ),
            min_size=n,
            max_size=n,
        )
    )
    ids = draw(st.permutations(list(range(100, 100 + n))))
    symbols = draw(st.lists(st.sampled_from(["BTC", "ETH", "1000PEPE"]), min_size=n, max_size=n))
    prices = draw(st.lists(st.floats(1e-6, 1e5, allow_nan=False), min_size=n, max_size=n))
    qtys = draw(st.lists(st.floats(1e-4, 1e4, allow_nan=False), min_size=n, max_size=n))
    sides = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return pl.DataFrame(
        {
            "symbol": symbols,
            "peg_symbol": ["USDT"] * n,
            "trade_id": ids,
            "price": prices,
            "qty": qtys,
            "quote_qty": [p * q for p, q in zip(prices, qtys, strict=True)],
            "time": [BASE + timedelta(microseconds=o) for o in offsets],
            "is_buyer_maker": sides,
        },
        schema=TRADES_SCHEMA,
    )


@settings(max_examples=150, deadline=None)
@given(trades=trade_frames(), interval=st.sampled_from(["1s", "5s", "10s", "1m"]))
def test_hypothesis_matches_oracle(trades, interval):
    check_against_oracle(trades, interval)


@settings(max_examples=50, deadline=None)
@given(trades=trade_frames())
def test_row_order_of_input_does_not_matter(trades):
    a = last_trade_grid(trades, "5s").with_columns(pl.col("symbol").cast(pl.String))
    b = last_trade_grid(trades.reverse(), "5s").with_columns(pl.col("symbol").cast(pl.String))
    assert_rows_close(b.to_dicts(), a.to_dicts())


@pytest.mark.parametrize(
    "column,value", [("price", float("inf")), ("price", float("nan")), ("qty", float("inf")), ("quote_qty", float("-inf")), ("qty", float("nan"))]
)
def test_non_finite_values_are_a_grid_violation(column, value):
    """``high = inf`` (or a NaN vwap) passes every bound check; ``finite_values`` catches it."""
    t0 = datetime(2024, 1, 1)
    trades = pl.DataFrame(
        {
            "symbol": ["A"] * 3,
            "peg_symbol": ["USDT"] * 3,
            "trade_id": [1, 2, 3],
            "price": [2.0, 4.0, 3.0],
            "qty": [1.0, 1.0, 2.0],
            "quote_qty": [2.0, 4.0, 6.0],
            "time": [t0, t0, t0 + timedelta(seconds=7)],
            "is_buyer_maker": [True, False, True],
        },
        schema=TRADES_SCHEMA,
    )
    clean = last_trade_grid(trades, "5s")
    assert grid_violations(clean, "5s") == dict.fromkeys(grid_violations(clean, "5s"), 0)
    bad = last_trade_grid(trades.with_columns(pl.when(pl.col("trade_id") == 2).then(value).otherwise(pl.col(column)).alias(column)), "5s")
    violations = grid_violations(bad, "5s")
    assert violations["finite_values"] == 1  # the first bucket only; the second stays finite
    if (column, value) == ("price", float("inf")):
        assert violations["price_bounds"] == 0  # high = inf: what made the defect invisible before


def test_null_vwaps_are_not_non_finite():
    grid = last_trade_grid(read_trades_file(REALDATA / "futures/um/trades/ETHUSDT-trades-2024-08-09.partial.csv", "um"), "1s")
    assert grid.get_column("vwap_taker_buy").null_count() + grid.get_column("vwap_taker_sell").null_count() > 0
    assert grid_violations(grid, "1s")["finite_values"] == 0
