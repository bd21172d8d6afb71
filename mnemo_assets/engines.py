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

    >>> from datetime import datetime
    >>> grid_lf = pl.LazyFrame({"symbol": ["BTC", "BTC"], "vwap_total_by_base": [100.0, 101.0],
    ...     "last_trade_time": [datetime(2025, 1, 1, 0, 9, 58), datetime(2025, 1, 1, 0, 19, 30)]})
    >>> query_lf = pl.LazyFrame({"symbol": ["BTC", "ETH"], "times": [datetime(2025, 1, 1, 0, 10)] * 2})
    >>> re = ReturnsEngine(grid_lf)
    >>> out = re.query(query_lf, start_time_expr=pl.col("times"), mark_duration="10m",
    ...                tick_lag_tolerance="30s").collect()
    >>> out.select("symbol", pl.col("max_tick_to_query_lag").dt.total_seconds(), pl.col("return").round(9)).rows()
    [('BTC', 30, 0.01), ('ETH', None, None)]
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
        # a backend already in memory is sorted once and reused by every query
        self._in_memory = isinstance(backend_db, pl.DataFrame)
        self._prepared: pl.DataFrame | None = None

    def _prepared_backend(self) -> pl.LazyFrame:
        if not self._in_memory:
            return prepare_backend(self.backend_db, self.backend_fair_expr, self.backend_time_expr)
        if self._prepared is None:
            self._prepared = prepare_backend(self.backend_db, self.backend_fair_expr, self.backend_time_expr).collect()
        return self._prepared.lazy()

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
            bounds = (
                query.select(start_time_expr.cast(pl.Datetime("us")).alias("t"))
                .select(pl.col("t").min().alias("lo"), pl.col("t").max().alias("hi"))
                .collect()
            )
            lo, hi = bounds.row(0)
            if lo is None:
                backend = prepare_backend(self.backend_db.head(0), self.backend_fair_expr, self.backend_time_expr)
            else:
                backend = pruned_backend(
                    self.backend_db, lo, hi + timedelta(microseconds=duration_us), self.backend_fair_expr, self.backend_time_expr
                )
        else:
            backend = self._prepared_backend()
        return query_marks(query, backend, start_time_expr, mark_duration, tick_lag_tolerance, append_lag)


class MetadataEngine:
    """Rolling metadata over a grid dataset, in notebooks (the seed's ``MetadataEngine``).

    ``compute(recompute=False, days_per_batch=30)`` materializes the metadata asset of the
    dataset's market and peg (and whatever it needs that is missing) through Dagster, recorded
    in ``$DAGSTER_HOME``; :meth:`compute_range` computes a range directly from the store
    without writing anything. ``path``, when given, is the store root.

    >>> me = MetadataEngine(backend_dataset=BinanceLastTradesGrid("USDT", "5s"))  # doctest: +SKIP
    >>> me.compute(recompute=False, days_per_batch=30)  # doctest: +SKIP
    >>> me.lazyframe().collect()  # doctest: +SKIP
    """

    def __init__(
        self,
        backend_dataset,
        path: str | None = None,
        num_workers: int = 1,
        spec=None,
        returns_interval: str | timedelta = "10m",
        interval: str | timedelta = "1h",
        settings=None,
    ):
        from mnemo_assets.config import load_settings
        from mnemo_assets.intervals import interval_name

        self.backend_dataset = backend_dataset
        self.settings = settings or load_settings()
        if path is not None:
            self.settings = self.settings.model_copy(update={"data_root": str(path)})
        self.root = str(path) if path is not None else str(backend_dataset.root)
        self.num_workers = num_workers
        self.interval = interval_name(interval)
        self.returns_interval = interval_name(returns_interval)
        self.spec = spec if spec is not None else self.settings.metadata.load_spec(self.interval)
        self.market = backend_dataset.dataset_type.market
        self.peg = backend_dataset.peg_symbol

    def _dataset(self, kind: str):
        from mnemo_assets.binance.datasets import ParquetDataset
        from mnemo_assets.storage.layout import metadata_dataset, returns_dataset

        path = (
            metadata_dataset(self.market, self.interval, self.peg)
            if kind == "metadata"
            else returns_dataset(self.market, self.returns_interval, self.peg)
        )
        return ParquetDataset(path, self.root)

    @property
    def partitions(self) -> list:
        """Days with stored metadata."""
        return self._dataset("metadata").partitions

    def lazyframe(self) -> pl.LazyFrame:
        """Every stored day of metadata, ``symbol`` as one Enum."""
        return self._dataset("metadata").lazyframe()

    def __getitem__(self, partitions) -> pl.LazyFrame:
        return self._dataset("metadata")[partitions]

    def compute_range(self, start_date, end_date) -> pl.DataFrame:
        """Metadata for grid times in ``[start_date, end_date)`` from the stored grid; returns
        are read from the store where stored, else computed from the grid."""
        from mnemo_assets.metadata import compute_metadata
        from mnemo_assets.returns import gridded_returns

        back = max(self.spec.max_index_window, self.spec.max_returns_window) + timedelta(days=1)
        grid = self.backend_dataset.lazyframe(start_date - back, end_date + timedelta(days=1))
        stored = self._dataset("returns")
        days = [d for d in stored.partitions if start_date - back <= d < end_date]
        if stored.partitions and days:
            returns = stored[days]
        else:
            returns = gridded_returns(grid, start_date - back, end_date, self.returns_interval).lazy()
        return compute_metadata(grid, returns, self.spec, start_date, end_date)

    def compute(self, recompute: bool = False, days_per_batch: int = 30, start=None, end=None, progress: bool = True, instance=None):
        """Materialize the metadata for ``[start, end]`` (default: every day of the grid) through
        Dagster, skipping stored days unless ``recompute``; what the metadata need upstream runs
        only where missing. The same planner and runs as ``mnemo backfill`` (one asset backfill,
        run in this process, recorded in ``$DAGSTER_HOME``). Returns the run summary (per asset:
        planned, materialized, waiting with the reason, failed); raises if anything planned
        failed."""
        from mnemo_assets.definitions import build_definitions
        from mnemo_assets.defs.execution import Request, run_request
        from mnemo_assets.defs.keys import metadata_key, partials_key
        from mnemo_assets.defs.planning import upstream_closure

        settings = self.settings.model_copy(update={"backfill": self.settings.backfill.model_copy(update={"days_per_batch": days_per_batch})})
        graph = build_definitions(settings).resolve_asset_graph()
        key = metadata_key(self.market, self.peg, self.interval)
        if not graph.has(key):
            raise ValueError(f"{key.to_user_string()} is not in the configured asset graph (check markets, pegs, metadata.intervals)")
        from mnemo_assets.storage.parquet import existing_days

        grid_days = existing_days(self.backend_dataset.root, self.backend_dataset.dataset)
        if not grid_days and start is None:
            raise ValueError(f"{self.backend_dataset} holds no grid days yet; pass start and end")
        start = start or grid_days[0]
        end = end or grid_days[-1]
        days = [start + timedelta(days=k) for k in range((end - start).days + 1)]
        keys = sorted(upstream_closure(graph, [key]), key=lambda k: k.to_user_string())
        # recompute: the metadata (and its partials) again; upstream only where missing
        derived = [metadata_key(self.market, self.peg, self.interval)] + [
            partials_key(self.market, self.peg, self.interval, source) for source in ("index", "returns")
        ]
        missing_only = set(keys) - set(derived) if recompute else set(keys)
        echo = print if progress else (lambda _m: None)
        summary = run_request(
            settings,
            Request(keys, days, missing_only, f"MetadataEngine.compute {start}..{end}"),
            progress=progress,
            echo=echo,
            instance=instance,
        )
        if summary is not None and progress:
            for line in summary.lines():
                print(f"mnemo: {line}")
        if summary is not None and not summary.ok:
            raise RuntimeError("metadata backfill incomplete:\n" + "\n".join(summary.lines()))
        return summary
