"""The sorted lookup of query_marks (Enum backends: binary search over symbol code × span + time)
against the as-of join path (String backends) and the oracle; the sort a sorted backend skips."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemo_assets import returns as R
from mnemo_assets.engines import ReturnsEngine
from mnemo_assets.returns import MARK_FAIR, MARK_TIME, _sort_unless_sorted, prepare_backend
from mnemo_assets_tests.oracles import assert_rows_close, returns_oracle

T0 = datetime(2025, 1, 1, 12)
S = timedelta(seconds=1)


def run(db, queries, duration, tolerance, **kw):
    return ReturnsEngine(db).query(queries.lazy(), pl.col("t"), duration, tolerance, **kw).collect()


def as_enum(db: pl.DataFrame, extra=()) -> pl.DataFrame:
    cats = sorted(set(db["symbol"].drop_nulls().to_list()) | set(extra))
    return db.with_columns(pl.col("symbol").cast(pl.Enum(cats)))


@st.composite
def cases(draw):
    n = draw(st.integers(0, 40))
    rows = [
        (
            draw(st.one_of(st.sampled_from("ABC"), st.none())),
            draw(st.one_of(st.integers(0, 60), st.none())),
            draw(st.one_of(st.none(), st.floats(0.5, 200), st.just(float("nan")))),
        )
        for _ in range(n)
    ]
    if draw(st.booleans()):  # a stored grid: already sorted by (symbol, time)
        rows.sort(key=lambda r: (r[0] is not None, r[0] or "", r[1] is not None, r[1] or 0))
    db = pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "last_trade_time": [None if r[1] is None else T0 + r[1] * S for r in rows],
            "vwap_total_by_base": [r[2] for r in rows],
        },
        schema={"symbol": pl.String, "last_trade_time": pl.Datetime("us"), "vwap_total_by_base": pl.Float64},
    )
    m = draw(st.integers(0, 25))
    qs = [(draw(st.one_of(st.sampled_from("ABCD"), st.none())), draw(st.one_of(st.integers(-5, 70), st.none()))) for _ in range(m)]
    queries = pl.DataFrame(
        {"symbol": [x[0] for x in qs], "t": [None if x[1] is None else T0 + x[1] * S for x in qs], "tag": list(range(m))},
        schema={"symbol": pl.String, "t": pl.Datetime("us"), "tag": pl.Int64},
    )
    return db, queries, draw(st.sampled_from(["1s", "5s", "10s"])), draw(st.sampled_from(["0s", "1s", "5s", "20s"]))


@settings(max_examples=300, deadline=None)
@given(cases())
def test_sorted_lookup_equals_join_path_and_oracle(case):
    db, queries, duration, tolerance = case
    joined = run(db, queries, duration, tolerance)  # String backend: the as-of join path
    searched = run(as_enum(db), queries, duration, tolerance)  # Enum backend: the sorted lookup
    assert searched.equals(joined), (searched, joined)
    want = returns_oracle(queries.to_dicts(), db.to_dicts(), "t", timedelta(seconds=int(duration[:-1])), timedelta(seconds=int(tolerance[:-1])))
    got = searched.with_columns(pl.col("symbol").cast(pl.String)).to_dicts()
    for row in got:  # the oracle divides Python floats: NaN marks give NaN, nulls give None
        if isinstance(row["return"], float) and row["return"] != row["return"]:
            row["return"] = None
    for row in want:
        if isinstance(row["return"], float) and row["return"] != row["return"]:
            row["return"] = None
    assert_rows_close(got, want)
    assert searched.equals(run(as_enum(db), queries, duration, tolerance, filter_by_query_dates=True))


@pytest.mark.parametrize("n_queries", [1_000, 250_000])
def test_large_random_queries_equal_join_path(n_queries):
    """Enough queries to search in several threads; marks at equal times (ties), unknown symbols,
    null times, far-away query times."""
    rng = np.random.default_rng(5)
    n = 20_000
    syms = np.array([f"S{i:03d}" for i in range(40)])
    t = np.sort(rng.integers(0, 3_600, n)) * 1_000_000 + 1_735_732_800_000_000
    db = pl.DataFrame(
        {"symbol": syms[rng.integers(0, 40, n)], "last_trade_time": pl.Series(t).cast(pl.Datetime("us")), "vwap_total_by_base": rng.random(n) + 1}
    )
    db = db.sort("symbol", "last_trade_time", maintain_order=True)
    qsym = np.concatenate([syms, ["NOPE"]])[rng.integers(0, 41, n_queries)]
    qt = 1_735_732_800_000_000 + rng.integers(-600, 4_200, n_queries) * 1_000_000 + rng.integers(0, 2, n_queries)
    queries = pl.DataFrame({"symbol": qsym, "t": pl.Series(qt).cast(pl.Datetime("us"))})
    i = pl.int_range(pl.len())
    queries = queries.with_columns(
        pl.when(i % 97 == 0)
        .then(None)
        .when(i % 89 == 0)
        .then(datetime(1, 1, 1))
        .when(i % 83 == 0)
        .then(datetime(9999, 1, 1))
        .otherwise(pl.col("t"))
        .alias("t"),
    )
    joined = run(db, queries, "60s", "5s")
    searched = run(as_enum(db), queries, "60s", "5s")
    assert searched.equals(joined)
    assert searched["return"].drop_nulls().len() > n_queries // 10


def test_huge_span_falls_back_to_the_joins(monkeypatch):
    db = as_enum(pl.DataFrame({"symbol": ["A", "A", "B"], "last_trade_time": [T0, T0 + S, T0], "vwap_total_by_base": [1.0, 2.0, 3.0]}))
    queries = pl.DataFrame({"symbol": ["A", "B", "C"], "t": [T0, T0, T0]})
    want = run(db, queries, "1s", "1s")
    monkeypatch.setattr(R, "_KEY_LIMIT", 4)
    assert run(db, queries, "1s", "1s").equals(want)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.sampled_from("ABC"), st.none()), st.integers(0, 5), st.integers(0, 9)), max_size=30), st.booleans())
def test_sort_unless_sorted_is_the_stable_sort(rows, enum):
    frame = pl.DataFrame(
        {"symbol": [r[0] for r in rows], MARK_TIME: [T0 + r[1] * S for r in rows], MARK_FAIR: [float(r[2]) for r in rows]},
        schema={"symbol": pl.String, MARK_TIME: pl.Datetime("us"), MARK_FAIR: pl.Float64},
    )
    if enum:
        frame = frame.with_columns(pl.col("symbol").cast(pl.Enum(["C", "A", "B"])))  # Enum order is not the string order
    want = frame.sort("symbol", MARK_TIME, maintain_order=True)
    got = _sort_unless_sorted(frame)
    assert got.equals(want)
    if not want.get_column("symbol").null_count():
        assert _sort_unless_sorted(want) is want  # already sorted: returned as it is


def test_prepare_backend_keeps_a_sorted_grid_unsorted_one_sorted():
    db = pl.DataFrame({"symbol": ["A", "A", "B", "B"], "last_trade_time": [T0, T0 + S, T0, T0], "vwap_total_by_base": [1.0, 2.0, 3.0, 4.0]})
    got = prepare_backend(db).collect()
    assert got.get_column(MARK_FAIR).to_list() == [1.0, 2.0, 3.0, 4.0]
    got = prepare_backend(db.reverse()).collect()
    assert got.get_column(MARK_FAIR).to_list() == [1.0, 2.0, 4.0, 3.0]  # stable: B's tie keeps backend order
