"""Marks and forward returns: pure polars, no Dagster.

The **mark** of a symbol at instant ``t`` is the backend row of that symbol with the largest
time ``T <= t`` (ties: the last row in backend order); its lag is ``t - T``; its fair price
counts only when ``lag <= tolerance``. For a query with start ``t0`` and ``t1 = t0 + d``:
``return = F(mark at t1) / F(mark at t0) - 1`` and ``max_tick_to_query_lag`` is the larger of
the lags that exist. See SPEC.md "Marks and returns" and "Gridded returns".
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import polars as pl

from mnemo_assets.intervals import day_interval, day_start, to_micros

_RID = "__mnemo_rid"
_SYM = "__mnemo_sym"
_T0 = "__mnemo_t0"
_T1 = "__mnemo_t1"
MARK_TIME = "__mnemo_mark_time"
MARK_FAIR = "__mnemo_mark_fair"

RETURNS_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,  # pl.Enum when read back
        "date": pl.Date,
        "returns_grid_time": pl.Datetime("us"),
        "max_tick_to_query_lag": pl.Duration("us"),
        "return": pl.Float64,
    }
)


def key_dtype(dtype: pl.DataType) -> pl.DataType:
    """The join key dtype for a backend symbol dtype: its Enum, else String."""
    return dtype if isinstance(dtype, pl.Enum) else pl.String


def _sort_unless_sorted(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` stably sorted by ``(symbol, mark time)``; returned as it is when it already is
    (a stored grid is: rows by symbol then time), which is what the stable sort would return.
    Verified on the data (one pass), never assumed."""
    if frame.height < 2:
        return frame
    sym, t = pl.col("symbol"), pl.col(MARK_TIME)
    if frame.get_column("symbol").null_count() or frame.get_column(MARK_TIME).null_count():
        return frame.sort("symbol", MARK_TIME, maintain_order=True)
    if isinstance(frame.schema["symbol"], pl.Enum):
        sym = sym.to_physical()  # Enum order is the physical order
    ordered = frame.select(((sym.shift(1) < sym) | ((sym.shift(1) == sym) & (t.shift(1) <= t))).slice(1).all()).item()
    if ordered:
        return frame
    return frame.sort("symbol", MARK_TIME, maintain_order=True)


def sort_marks(lf: pl.LazyFrame) -> pl.LazyFrame:
    """A ``(symbol, mark time, mark fair)`` frame stably sorted by symbol and time, skipping the
    sort when the rows already are in that order (checked when collected)."""
    return lf.map_batches(_sort_unless_sorted, schema=lf.collect_schema())


def prepare_backend(
    backend: pl.LazyFrame | pl.DataFrame,
    fair_expr: pl.Expr = pl.col("vwap_total_by_base"),
    time_expr: pl.Expr = pl.col("last_trade_time"),
) -> pl.LazyFrame:
    """``(symbol, mark time, mark fair)`` of a backend, sorted by symbol and time (stable, so
    rows with equal times keep backend order and the as-of join takes the last of them). A
    backend already in that order (a stored grid) is not sorted again."""
    lf = backend.lazy()
    sym = lf.collect_schema()["symbol"]
    return sort_marks(
        lf.select(
            pl.col("symbol").cast(key_dtype(sym)),
            time_expr.cast(pl.Datetime("us")).alias(MARK_TIME),
            fair_expr.cast(pl.Float64).alias(MARK_FAIR),
        ).filter(pl.col(MARK_TIME).is_not_null())
    )


def query_marks(
    query: pl.LazyFrame | pl.DataFrame,
    prepared: pl.LazyFrame,
    start_time_expr: pl.Expr,
    mark_duration: str | timedelta | pl.Expr,
    tick_lag_tolerance: str | timedelta | pl.Expr,
    append_lag: bool = True,
) -> pl.LazyFrame:
    """Forward returns of every query row against a :func:`prepare_backend` frame.

    Keeps every query row, its columns and its order, then appends ``max_tick_to_query_lag``
    (unless ``append_lag=False``) and ``return``.
    """
    duration_us = to_micros(mark_duration)
    tolerance_us = to_micros(tick_lag_tolerance, allow_zero=True)
    q = query.lazy()
    columns = q.collect_schema().names()
    for reserved in ("max_tick_to_query_lag", "return"):
        if reserved in columns:
            raise ValueError(f"the query already has a {reserved!r} column")
    key = prepared.collect_schema()["symbol"]
    if isinstance(key, pl.Enum):
        schema = q.collect_schema()
        schema.update({"max_tick_to_query_lag": pl.Duration("us"), "return": pl.Float64})
        out = pl.defer(lambda: _query_marks_sorted(q, prepared, start_time_expr, duration_us, tolerance_us), schema=schema)
    else:
        out = _query_marks_join(q, prepared, start_time_expr, duration_us, tolerance_us)
    if not append_lag:
        out = out.drop("max_tick_to_query_lag")
    return out


def _query_marks_join(q: pl.LazyFrame, prepared: pl.LazyFrame, start_time_expr: pl.Expr, duration_us: int, tolerance_us: int) -> pl.LazyFrame:
    """:func:`query_marks` by two as-of joins (any symbol dtype)."""
    key = prepared.collect_schema()["symbol"]
    keys = (
        q.with_row_index(_RID)
        .select(
            _RID,
            pl.col("symbol").cast(pl.String).cast(key, strict=False).alias(_SYM),
            start_time_expr.cast(pl.Datetime("us")).alias(_T0),
        )
        .with_columns((pl.col(_T0) + pl.duration(microseconds=duration_us)).alias(_T1))
    )
    # t1 = t0 + constant: one sort by (symbol, t0) orders both lookups. With an Enum key that is
    # one Int128 (physical index < 2^32, t0 an Int64), far faster than a two-column sort. Rows
    # without a known symbol or a time sort first and find no mark.
    if isinstance(key, pl.Enum):
        keys = keys.sort(pl.col(_SYM).to_physical().cast(pl.Int128) * (2**64) + pl.col(_T0).cast(pl.Int64).cast(pl.Int128))
    else:
        keys = keys.sort(_SYM, _T0)
    right = prepared.filter(pl.col("symbol").is_not_null()).rename({"symbol": _SYM})
    tol = pl.duration(microseconds=tolerance_us)

    def lookup(on: str, suffix: str) -> list[pl.Expr]:
        lag = pl.col(on) - pl.col(MARK_TIME)
        return [lag.alias(f"lag{suffix}"), pl.when(lag <= tol).then(pl.col(MARK_FAIR)).alias(f"fair{suffix}")]

    lag1 = pl.col(_T1) - pl.col(MARK_TIME)
    marks = (
        keys.join_asof(right, left_on=_T0, right_on=MARK_TIME, by=_SYM, strategy="backward", check_sortedness=False)
        .select(_RID, _SYM, _T1, *lookup(_T0, "0"))
        .join_asof(right, left_on=_T1, right_on=MARK_TIME, by=_SYM, strategy="backward", check_sortedness=False)
        .select(
            _RID,
            # the larger of the lags that exist (max_horizontal skips nulls)
            pl.max_horizontal("lag0", lag1).alias("max_tick_to_query_lag"),
            (pl.when(lag1 <= tol).then(pl.col(MARK_FAIR)) / pl.col("fair0") - 1.0).alias("return"),
        )
    )
    # every query row went through the lookups: back in query order by sorting on the row index
    return pl.concat([q, marks.sort(_RID).drop(_RID)], how="horizontal")


#: a lookup key ``symbol code × span + time`` must stay below this
_KEY_LIMIT = 2**62


def _lookup_part(b_code, b_key, b_time, b_fair, b_fair_ok, code, t, k0, k1, duration_us, tolerance_us):
    """Both marks of a part of the queries, computed in the order of their sorted keys (the
    searches merge through the backend and the marks are gathered in backend order); returns
    ``(order, lag, lag_ok, ret, ret_ok)`` in that order."""
    order = np.argsort(k0)
    code_s = code[order]
    t0 = t[order]
    out = []
    for keys, at in ((k0[order], t0), (k1[order], t0 + duration_us)):
        found = np.searchsorted(b_key, keys, side="right") - 1
        ok = found >= 0
        np.maximum(found, 0, out=found)
        ok &= b_code[found] == code_s  # no row of this symbol at or before the time: no mark
        lag = at - b_time[found]
        fresh = ok & (lag <= tolerance_us)
        out.append((ok, lag, fresh & b_fair_ok[found], b_fair[found]))
    (ok0, lag0, use0, f0), (ok1, lag1, use1, f1) = out
    lag = np.where(ok0 & ok1, np.maximum(lag0, lag1), np.where(ok0, lag0, lag1))
    with np.errstate(all="ignore"):
        ret = f1 / f0 - 1.0
    return order, lag, ok0 | ok1, ret, use0 & use1


def _query_marks_sorted(q: pl.LazyFrame, prepared: pl.LazyFrame, start_time_expr: pl.Expr, duration_us: int, tolerance_us: int) -> pl.DataFrame:
    """:func:`query_marks` for an Enum-keyed backend. Each mark is the result of a binary search
    of ``symbol code × span + time`` over the sorted backend: the last row with a key <= the
    query's, i.e. the as-of rule with ties to the last backend row. The queries are sorted by
    that key in one part per thread (numpy sorts and searches release the GIL), so searches
    and gathers walk the backend in order; the lag and return arithmetic is polars' own
    (``t − T``, ``F1 / F0 − 1`` in float64), nulls where a mark is missing, stale or null."""
    query = q.collect()
    back = prepared.collect()
    key = back.schema["symbol"]
    keys = query.select(
        pl.col("symbol").cast(pl.String).cast(key, strict=False).to_physical().cast(pl.Int64).alias(_SYM),
        start_time_expr.cast(pl.Datetime("us")).cast(pl.Int64).alias(_T0),
    )
    back = _sort_unless_sorted(back.filter(pl.col("symbol").is_not_null()))  # a no-op for prepare_backend's frames
    n = query.height
    lag_all = np.zeros(n, dtype=np.int64)
    lag_ok = np.zeros(n, dtype=bool)
    ret_all = np.zeros(n, dtype=np.float64)
    ret_ok = np.zeros(n, dtype=bool)
    if back.height and n:
        b_code = back.get_column("symbol").to_physical().cast(pl.Int64).to_numpy()
        b_time = back.get_column(MARK_TIME).cast(pl.Int64).to_numpy()
        fair = back.get_column(MARK_FAIR)
        b_fair_ok = fair.is_not_null().to_numpy()
        b_fair = fair.fill_null(0.0).to_numpy()
        t_min, t_max = int(b_time.min()), int(b_time.max())
        span = t_max - t_min + 2  # clipped times map to [-1, span - 2]
        if (int(b_code.max()) + 2) * span >= _KEY_LIMIT:  # ~10^4 symbols over ~10 years: the joins
            return _query_marks_join(query.lazy(), back.lazy(), start_time_expr, duration_us, tolerance_us).collect()
        b_key = b_code * span + (b_time - t_min)
        q_code = keys.get_column(_SYM).fill_null(-1).to_numpy()
        t0 = keys.get_column(_T0)
        rows = np.flatnonzero((q_code >= 0) & t0.is_not_null().to_numpy())
        code = q_code[rows]
        t = t0.fill_null(0).to_numpy()[rows]
        # clipping keeps every answer (a time before the first mark finds none, one after the
        # last finds the symbol's last row) and keeps far-away times from overflowing
        c0 = np.clip(t, t_min - 1 - duration_us, t_max)
        k0 = code * span + (np.clip(c0, t_min - 1, t_max) - t_min)
        k1 = code * span + (np.clip(c0 + duration_us, t_min - 1, t_max) - t_min)
        parts = max(1, min(pl.thread_pool_size(), len(rows) // 200_000))
        bounds = np.linspace(0, len(rows), parts + 1).astype(np.int64)

        def part(i: int) -> None:
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            order, lag, lok, ret, rok = _lookup_part(
                b_code,
                b_key,
                b_time,
                b_fair,
                b_fair_ok,
                code[lo:hi],
                t[lo:hi],
                k0[lo:hi],
                k1[lo:hi],
                duration_us,
                tolerance_us,
            )
            where = rows[lo:hi][order]
            lag_all[where], lag_ok[where], ret_all[where], ret_ok[where] = lag, lok, ret, rok

        if parts == 1:
            part(0)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(parts) as pool:
                list(pool.map(part, range(parts)))
    result = pl.DataFrame({"lag": pl.Series(lag_all).cast(pl.Duration("us")), "lag_ok": lag_ok, "ret": ret_all, "ret_ok": ret_ok}).select(
        pl.when("lag_ok").then(pl.col("lag")).alias("max_tick_to_query_lag"),
        pl.when("ret_ok").then(pl.col("ret")).alias("return"),
    )
    return pl.concat([query, result], how="horizontal")


def returns_grid(universe: pl.LazyFrame | pl.DataFrame, returns_interval: str | timedelta) -> pl.LazyFrame:
    """Query times: every ``(symbol, date)`` of a universe × ``{date + kΔr : 0 <= k < 1d/Δr}``."""
    step_us = to_micros(day_interval(returns_interval, "returns interval"))
    return (
        universe.lazy()
        .select("symbol", "date")
        .with_columns(
            pl.datetime_ranges(
                pl.col("date").cast(pl.Datetime("us")),
                pl.col("date").cast(pl.Datetime("us")) + pl.duration(days=1),
                interval=f"{step_us}us",
                closed="left",
            ).alias("returns_grid_time")
        )
        .explode("returns_grid_time")
    )


def gridded_returns(
    grid: pl.LazyFrame | pl.DataFrame,
    start_date: date,
    end_date: date,
    returns_interval: str | timedelta = "10m",
    tick_lag_tolerance: str | timedelta | None = None,
    carry_in: pl.LazyFrame | pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Gridded forward returns for the days in ``[start_date, end_date)`` (SPEC.md).

    One row per symbol of the universe of each day (symbols with a grid row that day) and
    every ``s = D + kΔr``; marks from ``grid`` at ``s`` and ``s + Δr`` with tolerance
    ``tick_lag_tolerance`` (default ``Δr``). Rows sorted by ``(symbol, returns_grid_time)``.
    For results equal to one computation over all days, ``grid`` must hold the days
    ``start_date − 1`` to ``end_date``; ``carry_in`` may add, per symbol, its last grid row
    from before those days (what a stale mark's lag needs).

    >>> from datetime import date, datetime
    >>> grid = pl.DataFrame({"symbol": ["BTC"] * 3, "date": [date(2025, 1, 1)] * 3,
    ...     "last_trade_time": [datetime(2025, 1, 1, 0, 9, 58), datetime(2025, 1, 1, 0, 19, 30), datetime(2025, 1, 1, 0, 29)],
    ...     "vwap_total_by_base": [100.0, 101.0, 99.99]})
    >>> out = gridded_returns(grid, date(2025, 1, 1), date(2025, 1, 2), "10m")
    >>> out.height  # one row per symbol of the day's universe and 10 minutes
    144
    >>> out.head(4).select(pl.col("returns_grid_time").dt.strftime("%H:%M"), pl.col("return").round(9)).rows()
    [('00:00', None), ('00:10', 0.01), ('00:20', -0.01), ('00:30', None)]
    """
    interval = day_interval(returns_interval, "returns interval")
    tolerance = interval if tick_lag_tolerance is None else tick_lag_tolerance
    lf = grid.lazy()
    start, end = day_start(start_date), day_start(end_date)
    sym = lf.collect_schema()["symbol"]
    universe = lf.filter((pl.col("date") >= start_date) & (pl.col("date") < end_date)).select(pl.col("symbol"), pl.col("date")).unique()
    queries = returns_grid(universe, interval).filter((pl.col("returns_grid_time") >= start) & (pl.col("returns_grid_time") < end))
    backend = lf
    if carry_in is not None:
        cols = backend.collect_schema().names()
        extra = carry_in.lazy().select(cols).with_columns(pl.col("symbol").cast(sym))
        backend = pl.concat([extra, backend], how="vertical")
    prepared = prepare_backend(backend)
    result = query_marks(queries, prepared, pl.col("returns_grid_time"), interval, tolerance, append_lag=True)
    return result.select("symbol", "date", "returns_grid_time", "max_tick_to_query_lag", "return").sort("symbol", "returns_grid_time").collect()


def last_rows_before(
    backend: pl.LazyFrame | pl.DataFrame,
    before: datetime,
    fair_expr: pl.Expr = pl.col("vwap_total_by_base"),
    time_expr: pl.Expr = pl.col("last_trade_time"),
) -> pl.LazyFrame:
    """Per symbol, the mark row (time, fair) with the largest time ``< before``; ties: the last
    row in backend order. A streaming aggregation over three columns."""
    lf = backend.lazy()
    sym = lf.collect_schema()["symbol"]
    rows = lf.select(
        pl.col("symbol").cast(key_dtype(sym)),
        time_expr.cast(pl.Datetime("us")).alias(MARK_TIME),
        fair_expr.cast(pl.Float64).alias(MARK_FAIR),
    ).with_row_index(_RID)
    key = pl.col(MARK_TIME).cast(pl.Int64).cast(pl.Int128) * (2**64) + pl.col(_RID).cast(pl.Int128)
    return rows.filter(pl.col(MARK_TIME) < before).group_by("symbol").agg(pl.col(MARK_TIME).max(), pl.col(MARK_FAIR).max_by(key))


def pruned_backend(
    backend: pl.LazyFrame | pl.DataFrame,
    start: datetime,
    end: datetime,
    fair_expr: pl.Expr = pl.col("vwap_total_by_base"),
    time_expr: pl.Expr = pl.col("last_trade_time"),
) -> pl.LazyFrame:
    """A :func:`prepare_backend` frame holding only what marks in ``[start, end]`` can use: the
    rows with time in ``[start, end]`` (days pruned through the ``date`` column when there is
    one) and, per symbol, its last row before ``start``. Marks are identical to the full
    backend's."""
    lf = backend.lazy()
    window = lf
    if "date" in lf.collect_schema():
        window = window.filter((pl.col("date") >= (start - timedelta(days=1)).date()) & (pl.col("date") <= (end + timedelta(days=1)).date()))
    t = time_expr.cast(pl.Datetime("us"))
    window = window.filter((t >= start) & (t <= end))
    carry = last_rows_before(lf, start, fair_expr, time_expr)
    return sort_marks(pl.concat([carry, prepare_backend(window, fair_expr, time_expr)]))


def returns_violations(
    returns: pl.DataFrame, grid: pl.LazyFrame | pl.DataFrame, returns_interval: str | timedelta, tolerance_us: int | None = None
) -> dict[str, int]:
    """Rows of gridded returns breaking their invariants (0 everywhere when valid).

    ``null_iff_mark_missing_or_stale``: a non-null return needs both marks within tolerance; a
    null return with every existing lag within tolerance must have a missing mark or a null
    fair price, recomputed here independently by a plain join on the grid.
    """
    step_us = to_micros(returns_interval)
    tol = pl.duration(microseconds=step_us if tolerance_us is None else tolerance_us)
    lag = pl.col("max_tick_to_query_lag")
    counts = {
        "lags_non_negative": int(returns.select((lag < pl.duration(microseconds=0)).sum()).item() or 0),
    }
    fresh_but_null = returns.filter(pl.col("return").is_null() & (lag <= tol))
    bad_non_null = returns.filter(pl.col("return").is_not_null() & (lag.is_null() | (lag > tol))).height
    unexplained = 0
    if fresh_but_null.height:
        q = fresh_but_null.select(
            pl.col("symbol").cast(pl.String),
            pl.col("returns_grid_time").alias("t0"),
            (pl.col("returns_grid_time") + pl.duration(microseconds=step_us)).alias("t1"),
        ).with_row_index("row")
        marks = (
            grid.lazy()
            .select(pl.col("symbol").cast(pl.String), pl.col("last_trade_time").alias("T"), pl.col("vwap_total_by_base").alias("F"))
            .with_row_index("order")
        )
        found = []
        for t in ("t0", "t1"):
            m = (
                q.lazy()
                .join(marks, on="symbol")
                .filter(pl.col("T") <= pl.col(t))
                .sort("T", "order")
                .group_by("row")
                .agg(pl.col("F").last().alias(f"F_{t}"))
            )
            found.append(m)
        joined = q.lazy().join(found[0], on="row", how="left").join(found[1], on="row", how="left").collect()
        unexplained = joined.filter(pl.col("F_t0").is_not_null() & pl.col("F_t1").is_not_null()).height
    counts["null_iff_mark_missing_or_stale"] = bad_non_null + unexplained
    return counts


#: what valid gridded returns satisfy (checked on every partition before it is published)
RETURNS_INVARIANTS = {
    "row_count": "rows = |universe(D)| × (1 day / interval)",
    "lags_non_negative": "max_tick_to_query_lag >= 0",
    "null_iff_mark_missing_or_stale": "a return is null exactly when a mark is missing or stale (or its fair price is null)",
}
#: the returns' asset check (blocking)
RETURNS_CHECKS = {"invariants": "; ".join(RETURNS_INVARIANTS.values())}

#: SPEC.md's definition of every gridded-returns column (shown in the Dagster UI)
RETURNS_DESCRIPTIONS = {
    "symbol": "base asset; every symbol of the universe of the day (a grid row that day)",
    "date": "the partition's day",
    "returns_grid_time": "query start s = D + kΔr",
    "max_tick_to_query_lag": "the larger of the two marks' lags (t − T) that exist; null when neither exists",
    "return": "F(mark at s + Δr) / F(mark at s) − 1, F = vwap_total_by_base; null if a mark is missing or older than Δr",
}
