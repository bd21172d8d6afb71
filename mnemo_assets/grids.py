"""Last-trade grids: pure polars, no Dagster.

One row per ``(symbol, peg_symbol, bucket)`` for every bucket ``[b, b+Δ)`` holding at least one
trade, ``b`` the trade time floored to Δ (epoch-aligned). See SPEC.md "Last-trade grid".
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from mnemo_assets.intervals import day_interval, to_micros

#: the seed's 17 grid columns, in order, then the extra columns
GRID_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,  # pl.Enum when read back; see SPEC.md "Symbols"
        "date": pl.Date,
        "time": pl.Datetime("us"),
        "peg_symbol": pl.String,
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume_base": pl.Float64,
        "volume_quote": pl.Float64,
        "trade_count": pl.UInt32,
        "last_trade_time": pl.Datetime("us"),
        "taker_buy_volume_quote": pl.Float64,
        "taker_sell_volume_quote": pl.Float64,
        "vwap_taker_buy": pl.Float64,
        "vwap_taker_sell": pl.Float64,
        "vwap_total_by_base": pl.Float64,
        "taker_buy_volume_base": pl.Float64,
        "taker_sell_volume_base": pl.Float64,
    }
)
GRID_COLUMNS: list[str] = list(GRID_SCHEMA)

_TRADE_COLUMNS = ["symbol", "peg_symbol", "trade_id", "price", "qty", "quote_qty", "time", "is_buyer_maker"]


def _order_key() -> pl.Expr:
    """A single Int128 key ordering trades by ``(time, trade_id)`` (for exact open/close)."""
    return pl.col("time").cast(pl.Int64).cast(pl.Int128) * (2**64) + (pl.col("trade_id").cast(pl.Int128) + 2**63)


def symbol_enum_of(frame: pl.LazyFrame | pl.DataFrame) -> pl.Enum:
    """The ``pl.Enum`` over the sorted symbols of a frame (an Enum column is kept as it is)."""
    dtype = frame.collect_schema()["symbol"]
    if isinstance(dtype, pl.Enum):
        return dtype
    symbols = frame.lazy().select(pl.col("symbol").cast(pl.String).unique()).collect().to_series()
    return pl.Enum(sorted(symbols.drop_nulls().to_list()))


def last_trade_grid(trades: pl.LazyFrame | pl.DataFrame, grid_interval: str | timedelta) -> pl.LazyFrame | pl.DataFrame:
    """The last-trade grid of normalised trades at ``grid_interval``.

    Returns a ``LazyFrame`` for a ``LazyFrame`` input and a ``DataFrame`` for a ``DataFrame``;
    rows sorted by ``(symbol, time)``; ``symbol`` as ``pl.Enum`` (the input's Enum, or one over
    its sorted symbols).

    >>> from datetime import datetime
    >>> trades = pl.DataFrame({
    ...     "symbol": ["BTC", "BTC"], "peg_symbol": ["USDT", "USDT"], "trade_id": [1, 2],
    ...     "price": [100.0, 101.0], "qty": [1.0, 3.0], "quote_qty": [100.0, 303.0],
    ...     "time": [datetime(2024, 1, 1, 0, 0, 1), datetime(2024, 1, 1, 0, 0, 4)],
    ...     "is_buyer_maker": [True, False]})
    >>> last_trade_grid(trades, "5s").select("time", "open", "close", "vwap_total_by_base").row(0)
    (datetime.datetime(2024, 1, 1, 0, 0), 100.0, 101.0, 100.75)
    """
    interval_us = to_micros(day_interval(grid_interval, "grid interval"))
    eager = isinstance(trades, pl.DataFrame)
    lf = trades.lazy()
    schema = lf.collect_schema()
    missing = [c for c in _TRADE_COLUMNS if c not in schema]
    if missing:
        raise ValueError(f"last_trade_grid: trades lack columns {missing} (normalised trades have {_TRADE_COLUMNS})")
    enum = symbol_enum_of(lf)
    time_us = pl.col("time").cast(pl.Datetime("us"))
    lf = lf.select(
        pl.col("symbol").cast(pl.String).cast(enum),
        pl.col("peg_symbol").cast(pl.String),
        pl.col("trade_id").cast(pl.Int64),
        pl.col("price").cast(pl.Float64),
        pl.col("qty").cast(pl.Float64),
        pl.col("quote_qty").cast(pl.Float64),
        time_us.alias("time"),
        pl.col("is_buyer_maker").cast(pl.Boolean),
    )
    bucket = ((pl.col("time").cast(pl.Int64) // interval_us) * interval_us).cast(pl.Datetime("us")).alias("time")
    buy = ~pl.col("is_buyer_maker")
    sell = pl.col("is_buyer_maker")
    key = _order_key()
    grid = (
        lf.group_by("symbol", "peg_symbol", bucket)
        .agg(
            pl.col("price").min_by(key).alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").max_by(key).alias("close"),
            pl.col("qty").sum().alias("volume_base"),
            pl.col("quote_qty").sum().alias("volume_quote"),
            pl.len().cast(pl.UInt32).alias("trade_count"),
            pl.col("time").max().alias("last_trade_time"),
            pl.when(buy).then(pl.col("quote_qty")).otherwise(0.0).sum().alias("taker_buy_volume_quote"),
            pl.when(sell).then(pl.col("quote_qty")).otherwise(0.0).sum().alias("taker_sell_volume_quote"),
            pl.when(buy).then(pl.col("qty")).otherwise(0.0).sum().alias("taker_buy_volume_base"),
            pl.when(sell).then(pl.col("qty")).otherwise(0.0).sum().alias("taker_sell_volume_base"),
            buy.sum().alias("_n_buy"),
            sell.sum().alias("_n_sell"),
        )
        .select(grid_columns())
        .sort("symbol", "peg_symbol", "time")
    )
    return grid.collect() if eager else grid


def grid_columns() -> list[pl.Expr | str]:
    """The grid's columns in :data:`GRID_SCHEMA` order, from per-bucket aggregates (``time`` the
    bucket start, the sums, and ``_n_buy``/``_n_sell`` the taker-side trade counts): ``date`` and
    the three vwaps derived here, for every grid implementation (``last_trade_grid``,
    ``clustered.grid_from_parquet``)."""
    return [
        "symbol",
        pl.col("time").dt.date().alias("date"),
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
        pl.when(pl.col("_n_buy") > 0).then(pl.col("taker_buy_volume_quote") / pl.col("taker_buy_volume_base")).alias("vwap_taker_buy"),
        pl.when(pl.col("_n_sell") > 0).then(pl.col("taker_sell_volume_quote") / pl.col("taker_sell_volume_base")).alias("vwap_taker_sell"),
        (pl.col("volume_quote") / pl.col("volume_base")).alias("vwap_total_by_base"),
        "taker_buy_volume_base",
        "taker_sell_volume_base",
    ]


#: the grid's float columns (prices, volumes, vwaps): finite or null, never NaN or ±inf
_FINITE_COLUMNS = tuple(c for c, t in GRID_SCHEMA.items() if t == pl.Float64)


def grid_violations(grid: pl.LazyFrame | pl.DataFrame, grid_interval: str | timedelta) -> dict[str, int]:
    """Rows breaking each grid invariant (0 everywhere for a valid grid).

    Prices: ``low <= open, close, vwap_* <= high`` up to the archive's rounding of quote (spot,
    USD-M) and base (COIN-M) quantities to 8 decimals per trade: a vwap may lie outside
    ``[low, high]`` by ``n·5e-9 / volume · (1 + high)`` (``n`` trades), plus ``1e-9·high``.

    ``finite_values`` counts rows with a NaN or ±inf price, volume or vwap (nulls, e.g. the vwap
    of a side without trades, are fine): comparisons with NaN are false and ``high = inf``
    bounds everything, so the other price checks cannot see them.
    """
    interval_us = to_micros(day_interval(grid_interval, "grid interval"))
    g = grid.lazy()

    def outside(col: str, volume: str) -> pl.Expr:
        rounding = pl.col("trade_count").cast(pl.Float64) * 5e-9 / pl.col(volume)
        s = 1e-9 * pl.col("high").abs() + rounding * (1.0 + pl.col("high").abs())
        return ((pl.col(col) < pl.col("low") - s) | (pl.col(col) > pl.col("high") + s)).fill_null(False)

    counts = g.select(
        (pl.len() - pl.struct("symbol", "peg_symbol", "time").n_unique()).alias("unique_symbol_time"),
        (
            (pl.col("open") < pl.col("low"))
            | (pl.col("open") > pl.col("high"))
            | (pl.col("close") < pl.col("low"))
            | (pl.col("close") > pl.col("high"))
            | outside("vwap_total_by_base", "volume_base")
            | outside("vwap_taker_buy", "taker_buy_volume_base")
            | outside("vwap_taker_sell", "taker_sell_volume_base")
        )
        .sum()
        .alias("price_bounds"),
        pl.any_horizontal(
            pl.col(c) < 0
            for c in (
                "volume_base",
                "volume_quote",
                "taker_buy_volume_quote",
                "taker_sell_volume_quote",
                "taker_buy_volume_base",
                "taker_sell_volume_base",
            )
        )
        .sum()
        .alias("non_negative_volumes"),
        (pl.col("trade_count") < 1).sum().alias("trade_count_positive"),
        (
            (pl.col("last_trade_time") < pl.col("time"))
            | (pl.col("last_trade_time") >= pl.col("time") + pl.duration(microseconds=interval_us))
            | (pl.col("time").cast(pl.Int64) % interval_us != 0)
        )
        .sum()
        .alias("last_trade_time_in_bucket"),
        (pl.col("date") != pl.col("time").dt.date()).sum().alias("date_matches_time"),
        pl.any_horizontal((~pl.col(c).is_finite()).fill_null(False) for c in _FINITE_COLUMNS).sum().alias("finite_values"),
    ).collect()
    return {k: int(v or 0) for k, v in counts.row(0, named=True).items()}


def trade_totals(trades: pl.LazyFrame | pl.DataFrame) -> tuple[int, float]:
    """``(trade count, Σ qty)`` of trades: what a grid of them must add up to."""
    row = trades.lazy().select(pl.len(), pl.col("qty").sum()).collect().row(0)
    return int(row[0]), float(row[1] or 0.0)


#: what a valid grid satisfies (checked on every partition before it is published)
GRID_INVARIANTS: dict[str, str] = {
    "unique_symbol_time": "one row per (symbol, time)",
    "price_bounds": "low <= open, close and every vwap <= high",
    "non_negative_volumes": "every volume >= 0",
    "finite_values": "prices, volumes and vwaps are finite (no NaN or inf)",
    "trade_count_positive": "trade_count >= 1",
    "last_trade_time_in_bucket": "time <= last_trade_time < time + interval",
    "date_matches_time": "date is the date of time",
}

#: the grid's asset checks (both blocking): the invariants, and the reconciliation with the trades
GRID_CHECKS: dict[str, str] = {
    "invariants": "; ".join(GRID_INVARIANTS.values()),
    "nothing_lost": "Σ trade_count and Σ volume_base equal the trades' totals",
}


def grid_checks(grid: pl.DataFrame, trades: pl.LazyFrame | pl.DataFrame, grid_interval: str | timedelta) -> dict[str, int]:
    """Every invariant of :data:`GRID_INVARIANTS` (failing rows) and ``nothing_lost`` (0 or 1)
    for a grid and the trades it was built from; 0 everywhere for a valid grid."""
    counts = grid_violations(grid, grid_interval)
    n_trades, volume = trade_totals(trades)
    total_count = int(grid.get_column("trade_count").sum() or 0)
    total_volume = float(grid.get_column("volume_base").sum() or 0.0)
    counts["nothing_lost"] = int(total_count != n_trades or not abs(total_volume - volume) <= 1e-9 * max(abs(volume), 1.0))
    return counts


#: SPEC.md's definition of every grid column (shown in the Dagster UI's column tables)
GRID_DESCRIPTIONS: dict[str, str] = {
    "symbol": "base asset (BTC); pl.Enum over the dataset's symbols when read",
    "date": "date of the bucket start",
    "time": "bucket start b (time floored to the interval, epoch-aligned)",
    "peg_symbol": "quote asset (USDT)",
    "open": "price of the first trade in the bucket, ordered by (time, trade_id)",
    "high": "max price",
    "low": "min price",
    "close": "price of the last trade in the bucket, ordered by (time, trade_id)",
    "volume_base": "Σ qty (base units)",
    "volume_quote": "Σ quote_qty (quote units)",
    "trade_count": "number of trades",
    "last_trade_time": "max trade time in the bucket",
    "taker_buy_volume_quote": "Σ quote_qty where the taker bought (is_buyer_maker false)",
    "taker_sell_volume_quote": "Σ quote_qty where the taker sold (is_buyer_maker true)",
    "vwap_taker_buy": "taker_buy_volume_quote / Σ qty of taker buys; null when there were none",
    "vwap_taker_sell": "taker_sell_volume_quote / Σ qty of taker sells; null when there were none",
    "vwap_total_by_base": "volume_quote / volume_base",
    "taker_buy_volume_base": "Σ qty where the taker bought",
    "taker_sell_volume_base": "Σ qty where the taker sold",
}
