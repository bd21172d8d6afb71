"""ReturnsEngine and gridded returns against a loop oracle."""

from datetime import date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemo_assets.binance.parse import read_trades_file
from mnemo_assets.engines import ReturnsEngine
from mnemo_assets.grids import last_trade_grid
from mnemo_assets.returns import gridded_returns, last_rows_before
from mnemo_assets_tests.conftest import REALDATA
from mnemo_assets_tests.oracles import assert_rows_close, returns_oracle

T0 = datetime(2025, 1, 1, 12, 0, 0)
S = timedelta(seconds=1)


def backend(rows):
    """rows: (symbol, seconds after T0, fair)"""
    return pl.DataFrame(
        {"symbol": [r[0] for r in rows], "last_trade_time": [T0 + r[1] * S for r in rows], "vwap_total_by_base": [r[2] for r in rows]}
    )


def run(db: pl.DataFrame, queries: pl.DataFrame, duration="10s", tolerance="5s", **kw) -> pl.DataFrame:
    return ReturnsEngine(db).query(queries.lazy(), pl.col("t"), duration, tolerance, **kw).collect()


def check(db: pl.DataFrame, queries: pl.DataFrame, duration="10s", tolerance="5s", **kw):
    got = run(db, queries, duration, tolerance, **kw)
    want = returns_oracle(
        queries.with_columns(pl.col("symbol").cast(pl.String)).to_dicts(),
        db.with_columns(pl.col("symbol").cast(pl.String)).to_dicts(),
        "t",
        timedelta(seconds=int(duration[:-1])),
        timedelta(seconds=int(tolerance[:-1])),
    )
    assert got.columns == [*queries.columns, "max_tick_to_query_lag", "return"]
    assert_rows_close(got.with_columns(pl.col("symbol").cast(pl.String)).to_dicts(), want)
    return got


def q(*rows):
    return pl.DataFrame({"symbol": [r[0] for r in rows], "t": [T0 + r[1] * S for r in rows], "tag": list(range(len(rows)))})


def test_lag_exactly_at_tolerance_counts_and_one_more_microsecond_does_not():
    db = backend([("A", 0, 100.0), ("A", 15, 110.0)])
    got = check(db, q(("A", 5), ("A", 6)), duration="10s", tolerance="5s")
    # t0=5s: lag 5s == tolerance → fair counts; t1=15s: exact tick
    assert got["return"][0] == pytest.approx(0.1)
    assert got["return"][1] is None  # t0=6s: lag 6s > 5s
    assert got["max_tick_to_query_lag"].to_list() == [timedelta(seconds=5), timedelta(seconds=6)]


def test_tick_exactly_at_query_time_is_the_mark():
    db = backend([("A", 10, 100.0), ("A", 20, 50.0)])
    got = check(db, q(("A", 10)), tolerance="0s")
    assert got["return"][0] == pytest.approx(-0.5) and got["max_tick_to_query_lag"][0] == timedelta(0)


def test_ties_take_the_last_backend_row():
    db = backend([("A", 0, 100.0), ("A", 10, 1.0), ("A", 10, 200.0)])
    got = check(db, q(("A", 0)))
    assert got["return"][0] == pytest.approx(1.0)


def test_unknown_symbols_and_symbols_listed_mid_day_get_nulls():
    db = backend([("A", 0, 100.0), ("B", 100, 10.0), ("B", 110, 11.0)])
    got = check(db, q(("ZZZ", 0), ("B", 50), ("B", 95), ("B", 100)))
    assert got["return"].to_list()[:3] == [None, None, None]
    assert got["max_tick_to_query_lag"][0] is None and got["max_tick_to_query_lag"][1] is None
    assert got["max_tick_to_query_lag"][2] == timedelta(seconds=5)  # only the t1 mark exists
    assert got["return"][3] == pytest.approx(0.1)


@pytest.mark.parametrize("dtype", [pl.String, pl.Categorical, pl.Enum(["A", "B", "ZZZ", "Q"]), pl.Enum(["ZZZ", "B", "A"])])
def test_query_symbol_dtypes(dtype):
    db = backend([("A", 0, 100.0), ("A", 10, 101.0), ("B", 0, 1.0)]).with_columns(pl.col("symbol").cast(pl.Enum(["A", "B"])))
    queries = q(("A", 0), ("ZZZ", 0), ("B", 3)).with_columns(pl.col("symbol").cast(dtype))
    got = check(db, queries)
    assert got.schema["symbol"] == queries.schema["symbol"]


def test_unsorted_and_duplicated_queries_keep_their_order():
    db = backend([("A", i, 100.0 + i) for i in range(0, 60, 3)] + [("B", i, 50.0 - i / 10) for i in range(0, 60, 7)])
    queries = q(("B", 40), ("A", 7), ("A", 7), ("B", 1), ("A", 59), ("A", 7), ("B", 40))
    got = check(db, queries)
    assert got["tag"].to_list() == list(range(7))


def test_durations_as_string_timedelta_or_literal_and_append_lag():
    db = backend([("A", 0, 100.0), ("A", 10, 110.0)])
    a = run(db, q(("A", 0)), "10s", "5s")
    b = ReturnsEngine(db).query(q(("A", 0)).lazy(), pl.col("t"), timedelta(seconds=10), timedelta(seconds=5)).collect()
    c = ReturnsEngine(db).query(q(("A", 0)).lazy(), pl.col("t"), pl.lit("10s"), pl.lit("5s"), append_lag=False).collect()
    assert a.equals(b) and c.columns == ["symbol", "t", "tag", "return"] and c["return"].equals(a["return"])


@st.composite
def cases(draw):
    n = draw(st.integers(1, 30))
    rows = [(draw(st.sampled_from("ABC")), draw(st.integers(0, 60)), draw(st.one_of(st.none(), st.floats(0.5, 200)))) for _ in range(n)]
    m = draw(st.integers(1, 25))
    queries = [(draw(st.sampled_from("ABCD")), draw(st.integers(-5, 70))) for _ in range(m)]
    return backend(rows), q(*queries), draw(st.sampled_from(["1s", "5s", "10s"])), draw(st.sampled_from(["0s", "1s", "5s", "20s"]))


@settings(max_examples=200, deadline=None)
@given(cases())
def test_hypothesis_matches_oracle(case):
    db, queries, duration, tolerance = case
    check(db, queries, duration, tolerance)
    full = run(db, queries, duration, tolerance)
    pruned = run(db, queries, duration, tolerance, filter_by_query_dates=True)
    assert_rows_close(pruned.to_dicts(), full.to_dicts(), rel=0)


def test_pruning_keeps_stale_marks_from_days_before():
    db = pl.DataFrame(
        {
            "symbol": ["A", "A", "B"],
            "date": [date(2024, 12, 25), date(2025, 1, 1), date(2025, 1, 1)],
            "last_trade_time": [datetime(2024, 12, 25, 10), datetime(2025, 1, 1, 13), datetime(2025, 1, 1, 11)],
            "vwap_total_by_base": [1.0, 2.0, 3.0],
        }
    )
    queries = q(("A", 0), ("B", 0))
    full = run(db, queries, "1800s", "3600s")
    pruned = run(db, queries, "1800s", "3600s", filter_by_query_dates=True)
    assert full.equals(pruned)
    assert full["max_tick_to_query_lag"][0] == datetime(2025, 1, 1, 12, 30) - datetime(2024, 12, 25, 10)


def realdata_grid(interval="1s"):
    files = sorted((REALDATA / "spot/trades").glob("*-2024-08-0[89].partial.csv"))
    return last_trade_grid(pl.concat([read_trades_file(p, "spot") for p in files]), interval)


def test_realdata_queries_match_oracle():
    grid = realdata_grid("1s")
    times = [datetime(2024, 8, 8, 23, 54) + timedelta(seconds=7 * i, microseconds=123 * i) for i in range(0, 150)]
    queries = pl.DataFrame({"symbol": ["BTC", "ETH", "XRP"] * 50, "t": times})
    got = ReturnsEngine(grid).query(queries, pl.col("t"), "30s", "2s").collect()
    want = returns_oracle(
        queries.to_dicts(), grid.with_columns(pl.col("symbol").cast(pl.String)).to_dicts(), "t", timedelta(seconds=30), timedelta(seconds=2)
    )
    assert_rows_close(got.with_columns(pl.col("symbol").cast(pl.String)).to_dicts(), want)
    assert got["return"].drop_nulls().len() > 50


def gridded_oracle(grid: pl.DataFrame, days: list[date], step: timedelta) -> list[dict]:
    rows = grid.with_columns(pl.col("symbol").cast(pl.String)).to_dicts()
    universe = sorted({(r["symbol"], r["date"]) for r in rows if r["date"] in days})
    queries = []
    for sym, d in universe:
        s = datetime(d.year, d.month, d.day)
        while s < datetime(d.year, d.month, d.day) + timedelta(days=1):
            queries.append({"symbol": sym, "date": d, "returns_grid_time": s})
            s += step
    return returns_oracle(queries, rows, "returns_grid_time", step, step)


def test_gridded_returns_match_oracle_across_midnight():
    grid = realdata_grid("5s")
    got = gridded_returns(grid, date(2024, 8, 8), date(2024, 8, 10), "1m")
    want = gridded_oracle(grid, [date(2024, 8, 8), date(2024, 8, 9)], timedelta(minutes=1))
    assert got.columns == ["symbol", "date", "returns_grid_time", "max_tick_to_query_lag", "return"]
    assert got.height == 2 * 2 * 1440
    assert_rows_close(got.with_columns(pl.col("symbol").cast(pl.String)).to_dicts(), want)
    # the last minute of 2024-08-08 reaches into 2024-08-09 for its t1 mark
    last = got.filter((pl.col("symbol") == "BTC") & (pl.col("returns_grid_time") == datetime(2024, 8, 8, 23, 59)))
    assert last["return"][0] is not None


def multi_day_grid() -> pl.DataFrame:
    """Four days; C trades on day 1 and from 06:00 on day 4 only; D lists on day 3 at noon."""
    rows = []
    for day in range(1, 5):
        for sym, every in (("A", 7), ("B", 13), ("C", 11), ("D", 17)):
            if sym == "C" and day in (2, 3):
                continue
            for k in range(0, 24 * 60, every):
                t = datetime(2025, 1, day) + timedelta(minutes=k, seconds=(k * 37) % 60)
                if sym == "D" and (day < 3 or (day == 3 and t.hour < 12)):
                    continue
                if sym == "C" and day == 4 and t.hour < 6:
                    continue
                rows.append({"symbol": sym, "date": t.date(), "last_trade_time": t, "vwap_total_by_base": 100 + (k * 31 % 17) + day})
    return pl.DataFrame(rows)


def test_one_partition_equals_a_single_computation_over_all_days():
    grid = multi_day_grid()
    full = gridded_returns(grid, date(2025, 1, 1), date(2025, 1, 5), "10m")
    for day in (date(2025, 1, d) for d in range(1, 5)):
        window = grid.filter(pl.col("date").is_between(day - timedelta(days=1), day + timedelta(days=1)))
        carry = last_rows_before(grid, datetime(day.year, day.month, day.day) - timedelta(days=1))
        carry_rows = grid.join(
            carry.collect().select(pl.col("symbol").cast(pl.String), pl.col("__mnemo_mark_time").alias("last_trade_time")),
            on=["symbol", "last_trade_time"],
        )
        part = gridded_returns(window, day, day + timedelta(days=1), "10m", carry_in=carry_rows)
        assert_rows_close(part.to_dicts(), full.filter(pl.col("date") == day).to_dicts(), rel=0)
    # C on day 4 before its first trade: the mark is three days old, stale but with its lag
    c = full.filter((pl.col("symbol") == "C") & (pl.col("returns_grid_time") == datetime(2025, 1, 4)))
    assert c["max_tick_to_query_lag"][0] > timedelta(days=2) and c["return"][0] is None
    assert full.filter(pl.col("date") == date(2025, 1, 3)).group_by("symbol").len().sort("symbol")["len"].to_list() == [144, 144, 144]


@pytest.mark.parametrize("enum_backend", [True, False])
def test_null_symbols_and_times_keep_their_rows_with_nulls(enum_backend):
    db = backend([("A", 0, 100.0), ("A", 10, 110.0)])
    if enum_backend:
        db = db.with_columns(pl.col("symbol").cast(pl.Enum(["A"])))
    queries = pl.DataFrame(
        {"symbol": ["A", None, "A", None], "t": [T0, T0, None, None], "tag": [0, 1, 2, 3]},
        schema={"symbol": pl.String, "t": pl.Datetime("us"), "tag": pl.Int64},
    )
    got = run(db, queries, "10s", "5s")
    assert got["tag"].to_list() == [0, 1, 2, 3]
    assert got["return"][0] == pytest.approx(0.1)
    assert got["return"].to_list()[1:] == [None, None, None]
    assert got["max_tick_to_query_lag"].to_list()[1:] == [None, None, None]
