"""grid_from_parquet (the segmented path over symbol-clustered trades files) against the
general last_trade_grid: identical frames on random days, taken only when the file's order
and layout allow it."""

import itertools
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemo_assets.binance.parse import TRADES_SCHEMA, read_trades_file
from mnemo_assets.clustered import clustered_pairs, grid_from_parquet
from mnemo_assets.grids import last_trade_grid
from mnemo_assets.storage.parquet import Batches, write_partition
from mnemo_assets_tests.conftest import REALDATA
from mnemo_assets_tests.oracles import assert_rows_close, grid_oracle

DAY = date(2024, 12, 31)
BASE = datetime(2024, 12, 31, 23, 59, 50)


def write_clustered(trades: pl.DataFrame, root, *, sort: bool = True, row_group_size: int | None = None) -> str:
    """Store trades as the trades asset does: pairs in (symbol, peg) order, one batch (row
    group) per pair, each pair sorted by (time, trade_id) unless ``sort=False``."""
    pairs = trades.select("symbol", "peg_symbol").unique().sort("symbol", "peg_symbol").rows()

    def frames():
        for sym, peg in pairs:
            part = trades.filter((pl.col("symbol") == sym) & (pl.col("peg_symbol") == peg))
            part = part.sort("time", "trade_id", maintain_order=True) if sort else part
            if row_group_size:
                for k in range(0, part.height, row_group_size):
                    yield part.slice(k, row_group_size)
            else:
                yield part

    res = write_partition(Batches(TRADES_SCHEMA, frames()), root, "binance/trades/spot", DAY)
    return res.path


#: columns that are sums (or ratios of sums): the general path adds in an engine-chosen order
SUMS = [
    "volume_base",
    "volume_quote",
    "taker_buy_volume_quote",
    "taker_sell_volume_quote",
    "vwap_taker_buy",
    "vwap_taker_sell",
    "vwap_total_by_base",
    "taker_buy_volume_base",
    "taker_sell_volume_base",
]


def assert_same_grid(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Same schema, rows and order; every column bit-identical except sums (and vwaps), which
    may differ in the last bits (relative 1e-12) with the same null pattern."""
    assert got.schema == want.schema
    assert got.drop(SUMS).equals(want.drop(SUMS), null_equal=True), (got, want)
    for c in SUMS:
        a, b = got.get_column(c), want.get_column(c)
        assert a.is_null().equals(b.is_null()), c
        assert a.is_nan().fill_null(False).equals(b.is_nan().fill_null(False)), c
        both = a.is_not_null() & ~a.is_nan().fill_null(False)
        x, y = a.filter(both).to_numpy(), b.filter(both).to_numpy()
        assert np.allclose(x, y, rtol=1e-12, atol=0.0), c


def general(path: str, interval: str, peg=None, start=None, end=None, enum=None) -> pl.DataFrame:
    lf = pl.scan_parquet(path)
    if peg is not None:
        lf = lf.filter(pl.col("peg_symbol") == peg)
    if start is not None:
        lf = lf.filter((pl.col("time") >= start) & (pl.col("time") < end))
    if enum is not None:
        lf = lf.with_columns(pl.col("symbol").cast(enum))
    return last_trade_grid(lf, interval).collect()


@st.composite
def trade_days(draw):
    """Trades of several pairs on bucket boundaries, sharing timestamps, ids in any order."""
    n = draw(st.integers(1, 80))
    offsets = draw(
        st.lists(
            st.one_of(st.sampled_from([0, 1, 4_999_999, 5_000_000, 5_000_001, 10_000_000, 15_000_000]), st.integers(0, 20_000_000)),
            min_size=n,
            max_size=n,
        )
    )
    ids = draw(st.permutations(list(range(100, 100 + n))))
    symbols = draw(st.lists(st.sampled_from(["BTC", "ETH", "1000PEPE", "A"]), min_size=n, max_size=n))
    pegs = draw(st.lists(st.sampled_from(["USDT", "USDC"]), min_size=n, max_size=n))
    prices = draw(st.lists(st.one_of(st.floats(1e-6, 1e5, allow_nan=False), st.sampled_from([1.0, 2.0])), min_size=n, max_size=n))
    qtys = draw(st.lists(st.floats(1e-4, 1e4, allow_nan=False), min_size=n, max_size=n))
    sides = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return pl.DataFrame(
        {
            "symbol": symbols,
            "peg_symbol": pegs,
            "trade_id": ids,
            "price": prices,
            "qty": qtys,
            "quote_qty": [p * q for p, q in zip(prices, qtys, strict=True)],
            "time": [BASE + timedelta(microseconds=o) for o in offsets],
            "is_buyer_maker": sides,
        },
        schema=TRADES_SCHEMA,
    )


@settings(max_examples=120, deadline=None)
@given(
    trades=trade_days(),
    interval=st.sampled_from(["1s", "5s", "1m"]),
    batch_rows=st.sampled_from([1, 2, 3, 7, 1000]),
    row_group_size=st.sampled_from([None, 1, 4]),
    peg=st.sampled_from([None, "USDT"]),
)
def test_sorted_path_equals_general_path(tmp_path_factory, trades, interval, batch_rows, row_group_size, peg):
    """Random days stored clustered: the segmented path gives the general path's frame exactly
    (small days: the general path sums in the same order), whatever the slice size (buckets and
    pairs cut across slices and row groups)."""
    path = write_clustered(trades, tmp_path_factory.mktemp("store"), row_group_size=row_group_size)
    report: dict = {}
    got = grid_from_parquet(path, interval, peg=peg, batch_rows=batch_rows, report=report)
    want = general(path, interval, peg)
    assert report["layout"] == "clustered" and report["general_pairs"] == 0
    assert_same_grid(got, want)
    # and the SPEC oracle (sums to 1e-9)
    rows = trades.filter(pl.col("peg_symbol") == peg) if peg else trades
    assert_rows_close(
        got.with_columns(pl.col("symbol").cast(pl.String)).to_dicts(),
        grid_oracle(rows.to_dicts(), {"1s": 10**6, "5s": 5 * 10**6, "1m": 6 * 10**7}[interval]),
    )


@settings(max_examples=60, deadline=None)
@given(trades=trade_days(), batch_rows=st.sampled_from([1, 3, 1000]))
def test_unsorted_pairs_never_take_the_sorted_path(tmp_path_factory, trades, batch_rows):
    """Pairs stored in file order (not sorted by (time, trade_id)): those out of order are
    computed by the general path; the frame is the general path's."""
    path = write_clustered(trades, tmp_path_factory.mktemp("store"), sort=False)
    report: dict = {}
    got = grid_from_parquet(path, "5s", batch_rows=batch_rows, report=report)
    want = general(path, "5s")
    assert_same_grid(got, want)
    stored = pl.read_parquet(path)
    unsorted = 0
    for (_sym, _peg), part in stored.group_by("symbol", "peg_symbol"):
        keys = part.select("time", "trade_id").rows()
        unsorted += any(a >= b for a, b in itertools.pairwise(keys))
    assert report["general_pairs"] == unsorted


def test_ties_on_time_and_duplicate_keys_go_to_the_general_path(tmp_path):
    t0 = datetime(2024, 12, 31, 12)
    trades = pl.DataFrame(
        {
            "symbol": ["A"] * 4 + ["B"] * 3,
            "peg_symbol": ["USDT"] * 7,
            "trade_id": [1, 2, 3, 4, 7, 7, 8],
            "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            "qty": [1.0] * 7,
            "quote_qty": [1.0] * 7,
            "time": [t0, t0, t0, t0 + timedelta(seconds=1), t0, t0, t0],
            "is_buyer_maker": [True, False] * 3 + [True],
        },
        schema=TRADES_SCHEMA,
    )
    path = write_clustered(trades, tmp_path)
    report: dict = {}
    got = grid_from_parquet(path, "5s", report=report)
    assert report == {"layout": "clustered", "sorted_pairs": 1, "general_pairs": 1}  # B repeats (time, id 7)
    assert_same_grid(got, general(path, "5s"))
    assert got.row(0, named=True)["open"] == 1.0 and got.row(0, named=True)["close"] == 4.0


def test_nulls_and_nan_prices(tmp_path):
    t0 = datetime(2024, 12, 31, 12)
    trades = pl.DataFrame(
        {
            "symbol": ["A"] * 3 + ["B"] * 3,
            "peg_symbol": ["USDT"] * 6,
            "trade_id": [1, 2, 3, 1, 2, 3],
            "price": [float("nan"), 2.0, float("nan"), float("nan"), float("nan"), 1.0],
            "qty": [1.0, None, 1.0, 1.0, 1.0, 1.0],
            "quote_qty": [1.0] * 6,
            "time": [t0 + timedelta(seconds=s) for s in (0, 1, 2, 0, 1, 7)],
            "is_buyer_maker": [True, False, True, True, False, True],
        },
        schema=TRADES_SCHEMA,
    )
    path = write_clustered(trades, tmp_path)
    report: dict = {}
    got = grid_from_parquet(path, "5s", report=report)
    assert report["general_pairs"] == 1 and report["sorted_pairs"] == 1  # A holds a null qty
    assert_same_grid(got, general(path, "5s"))


def test_file_not_clustered_takes_the_general_path(tmp_path):
    trades = read_trades_file(REALDATA / "spot/trades/BTCUSDT-trades-2021-01-08.partial.csv", "spot")
    mixed = pl.concat([trades, trades.with_columns(pl.lit("ETH").alias("symbol"))]).sample(fraction=1.0, shuffle=True, seed=1)
    path = str(tmp_path / "mixed.parquet")
    mixed.write_parquet(path, row_group_size=100_000)
    assert clustered_pairs(path) is None
    report: dict = {}
    got = grid_from_parquet(path, "5s", report=report)
    assert report["layout"] == "general"
    assert_same_grid(got, general(path, "5s"))


def test_pair_in_two_places_is_not_clustered(tmp_path):
    t0 = datetime(2024, 12, 31, 12)
    frame = lambda sym, k: pl.DataFrame(
        {
            "symbol": [sym],
            "peg_symbol": ["USDT"],
            "trade_id": [k],
            "price": [1.0],
            "qty": [1.0],
            "quote_qty": [1.0],
            "time": [t0 + timedelta(seconds=k)],
            "is_buyer_maker": [True],
        },
        schema=TRADES_SCHEMA,
    )
    res = write_partition(Batches(TRADES_SCHEMA, iter([frame("A", 1), frame("B", 2), frame("A", 3)])), tmp_path, "t", DAY)
    assert clustered_pairs(res.path) is None
    assert_same_grid(grid_from_parquet(res.path, "5s"), general(res.path, "5s"))


def test_day_window_peg_and_enum(tmp_path):
    """The grid asset's call: one peg, one day, the dataset's Enum (with symbols absent here)."""
    files = sorted((REALDATA / "spot/trades").glob("*-2024-08-0[89].partial.csv"))
    trades = pl.concat([read_trades_file(p, "spot") for p in files])
    trades = pl.concat([trades, trades.with_columns(pl.lit("USDC").alias("peg_symbol"), pl.col("trade_id") + 1)])
    path = write_clustered(trades, tmp_path, row_group_size=777)
    enum = pl.Enum(["AAA", "BTC", "ETH", "XRP", "ZZZ"])
    start = datetime(2024, 8, 9)
    for peg in ("USDT", "USDC"):
        report: dict = {}
        got = grid_from_parquet(path, "1m", peg=peg, start=start, end=start + timedelta(days=1), enum=enum, batch_rows=5000, report=report)
        want = general(path, "1m", peg, start, start + timedelta(days=1), enum)
        assert report["layout"] == "clustered" and report["general_pairs"] == 0 and report["sorted_pairs"] >= 1
        assert got.schema["symbol"] == enum and got.height > 0
        assert_same_grid(got, want)
        assert got.get_column("time").min() >= start


def test_empty_selection(tmp_path):
    trades = read_trades_file(REALDATA / "spot/trades/ETHUSDT-trades-2024-08-09.partial.csv", "spot")
    path = write_clustered(trades, tmp_path)
    got = grid_from_parquet(path, "5s", peg="BUSD")
    assert got.height == 0 and got.columns == general(path, "5s").columns
    got = grid_from_parquet(path, "5s", start=datetime(2030, 1, 1), end=datetime(2030, 1, 2))
    assert got.height == 0


def test_sums_are_sequential_in_trade_order(tmp_path):
    """Sums accumulate row by row in (time, trade_id) order (what a 1-thread loop gives)."""
    rng = np.random.default_rng(3)
    n = 50_000
    t0 = datetime(2024, 12, 31)
    trades = pl.DataFrame(
        {
            "symbol": ["A"] * n,
            "peg_symbol": ["USDT"] * n,
            "trade_id": np.arange(n),
            "price": rng.random(n) + 1,
            "qty": rng.random(n) * 10.0 ** rng.integers(-4, 4, n),
            "quote_qty": rng.random(n) * 100,
            "time": pl.Series(np.sort(rng.integers(0, 3_600_000_000, n)) + (t0 - datetime(1970, 1, 1)) // timedelta(microseconds=1)).cast(
                pl.Datetime("us")
            ),
            "is_buyer_maker": rng.random(n) < 0.5,
        },
        schema=TRADES_SCHEMA,
    )
    path = write_clustered(trades, tmp_path, row_group_size=9_999)
    got = grid_from_parquet(path, "1m", batch_rows=7_000)
    b = (trades.get_column("time").cast(pl.Int64) // 60_000_000).to_numpy()
    qty = trades.get_column("qty").to_numpy()
    expected = {}
    for bucket, x in zip(b.tolist(), qty.tolist(), strict=True):
        expected[bucket] = expected.get(bucket, 0.0) + x
    assert got.get_column("volume_base").to_list() == [expected[k] for k in sorted(expected)]
    assert pq.ParquetFile(path).metadata.num_row_groups == 6


def test_grid_asset_reads_the_stored_file_with_the_same_result(tmp_path):
    """defs.grids.day_grid: the stored (local) trades file through grid_from_parquet equals the
    general path over the IO manager's input; without a local file it is the general path."""
    from mnemo_assets.defs.grids import day_grid
    from mnemo_assets.storage.parquet import scan_days

    files = sorted((REALDATA / "spot/trades").glob("*-2024-08-09.partial.csv"))
    trades = pl.concat([read_trades_file(p, "spot") for p in files])
    day = date(2024, 8, 9)

    def frames():
        for (_sym,), part in sorted(trades.group_by("symbol"), key=lambda kv: kv[0]):
            yield part.sort("time", "trade_id")

    write_partition(Batches(TRADES_SCHEMA, frames()), tmp_path, "binance/trades/spot", day)
    lf = scan_days(tmp_path, "binance/trades/spot", [day])
    grid, day_trades = day_grid(lf, str(tmp_path), "spot", "USDT", "5s", day)
    want = last_trade_grid(day_trades, "5s").collect()
    assert grid.height > 0
    assert_same_grid(grid, want)
    other, _ = day_grid(lf, str(tmp_path / "elsewhere"), "spot", "USDT", "5s", day)  # not in that store: general path
    assert other.equals(want)
