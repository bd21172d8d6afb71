"""The notebook API of the seed notebooks, thin over the pure functions.

>>> from mnemo_assets.engines import ReturnsEngine  # was: from mnemosyne.engines import ReturnsEngine
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from mnemo_assets.intervals import to_micros
from mnemo_assets.returns import prepare_backend, pruned_backend, query_marks


class ReturnsEngine:
    """Forward returns at arbitrary query times against a backend frame (a grid).

    ``backend_fair_expr`` gives the fair price of a backend row (default
    ``vwap_total_by_base``), ``backend_time_expr`` its time (default ``last_trade_time``).

    >>> re = ReturnsEngine(grid_lf)  # doctest: +SKIP
    >>> re.query(query_lf, start_time_expr=pl.col("times"), mark_duration="10m",
    ...          tick_lag_tolerance="30s").collect()  # doctest: +SKIP
    """

    def __init__(
        self,
        backend_db: pl.LazyFrame | pl.DataFrame,
        backend_fair_expr: pl.Expr = pl.col("vwap_total_by_base"),
        backend_time_expr: pl.Expr = pl.col("last_trade_time"),
    ):
        self.backend_db = backend_db.lazy()
        self.backend_fair_expr = backend_fair_expr
        self.backend_time_expr = backend_time_expr
        schema = self.backend_db.collect_schema()
        if "symbol" not in schema:
            raise ValueError("the backend needs a 'symbol' column")

    def query(
        self,
        query_lf: pl.LazyFrame | pl.DataFrame,
        start_time_expr: pl.Expr,
        mark_duration: str | timedelta | pl.Expr,
        tick_lag_tolerance: str | timedelta | pl.Expr,
        append_lag: bool = True,
        filter_by_query_dates: bool = False,
    ) -> pl.LazyFrame:
        """Every query row, its columns and order, then ``max_tick_to_query_lag`` (unless
        ``append_lag=False``) and ``return = F(mark at t0 + mark_duration) / F(mark at t0) − 1``.

        ``start_time_expr`` evaluates to ``t0`` on the query; durations are strings
        (``"10m"``), timedeltas or ``pl.lit("10m")``. Marks count only within
        ``tick_lag_tolerance`` of the query time. Symbols the backend never saw get nulls.
        ``filter_by_query_dates=True`` scans only the backend days the queries need (same
        results; it reads the query's time range first).
        """
        query = query_lf.lazy()
        if filter_by_query_dates:
            duration_us = to_micros(mark_duration)
            bounds = query.select(start_time_expr.cast(pl.Datetime("us")).alias("t")).select(
                pl.col("t").min().alias("lo"), pl.col("t").max().alias("hi")
            ).collect()
            lo, hi = bounds.row(0)
            if lo is None:
                backend = prepare_backend(self.backend_db.head(0), self.backend_fair_expr, self.backend_time_expr)
            else:
                backend = pruned_backend(
                    self.backend_db, lo, hi + timedelta(microseconds=duration_us), self.backend_fair_expr, self.backend_time_expr
                )
        else:
            backend = prepare_backend(self.backend_db, self.backend_fair_expr, self.backend_time_expr)
        return query_marks(query, backend, start_time_expr, mark_duration, tick_lag_tolerance, append_lag)
