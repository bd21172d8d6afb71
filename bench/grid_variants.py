"""Candidate rewrites of ``mnemo_assets.grids.last_trade_grid``, for the grid benchmark only.

Each knob is one independent idea (see bench/README.md for what each measured: at most ~4 %
faster, several slower). All variants return the same frame as the library function (columns,
dtypes, row order, open/close/high/low/counts/times bit for bit; float sums up to the summation
order, which the streaming engine does not fix either: two runs of the library differ by ~1e-15).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mnemo_assets.grids import _TRADE_COLUMNS  # noqa: E402
from mnemo_assets.intervals import day_interval, to_micros  # noqa: E402


def last_trade_grid_variant(
    trades: pl.LazyFrame | pl.DataFrame,
    grid_interval: str | timedelta,
    *,
    one_prepass: bool = True,  # symbols AND pegs in the one pre-pass the Enum already needs
    group_raw: bool = True,  # group by the raw String columns, cast to Enum after the aggregation
    n_sell_from_len: bool = True,  # _n_sell = len - _n_buy (exact integers) instead of another sum
    key_sort: bool = True,  # sort by one Int128 key (symbol idx, peg idx, bucket) instead of 3 columns
    final_sort: bool = True,
    order_key: str = "i128",  # "i128": the library's key; "i128_signed": t·2^64 + trade_id (same order);
    # (profiling only) final_sort=False leaves the rows unsorted: NOT the contract
    # "i64_fit": an Int64 key (offset in bucket) · span + (trade_id − min id) when Δ·span < 2^63
    # (span = max id − min id + 1, from the pre-pass), else the library's Int128 key
) -> pl.LazyFrame | pl.DataFrame:
    interval_us = to_micros(day_interval(grid_interval, "grid interval"))
    eager = isinstance(trades, pl.DataFrame)
    lf = trades.lazy()
    schema = lf.collect_schema()
    missing = [c for c in _TRADE_COLUMNS if c not in schema]
    if missing:
        raise ValueError(f"last_trade_grid: trades lack columns {missing}")

    # --- the pre-pass (the library already does one for the symbol Enum)
    need_ids = order_key == "i64_fit"
    if isinstance(schema["symbol"], pl.Enum) and not key_sort and not need_ids:
        enum, pegs = schema["symbol"], None
    elif one_prepass or key_sort or need_ids:
        extra = [pl.col("trade_id").cast(pl.Int64).min().alias("lo"), pl.col("trade_id").cast(pl.Int64).max().alias("hi")]
        pre = lf.select(
            pl.col("symbol").cast(pl.String).unique().implode(),
            pl.col("peg_symbol").cast(pl.String).unique().implode(),
            *(extra if order_key == "i64_fit" else []),
        ).collect()
        enum = schema["symbol"] if isinstance(schema["symbol"], pl.Enum) else pl.Enum(
            sorted(s for s in pre["symbol"][0] if s is not None))
        pegs = pl.Enum(sorted(s for s in pre["peg_symbol"][0] if s is not None))
        if order_key == "i64_fit":
            lo, hi = pre["lo"][0], pre["hi"][0]
            span = 1 if lo is None else hi - lo + 1
            if interval_us * span >= 2**63:
                order_key = "i128"
    else:
        symbols = lf.select(pl.col("symbol").cast(pl.String).unique()).collect().to_series()
        enum, pegs = pl.Enum(sorted(symbols.drop_nulls().to_list())), None

    time_us = pl.col("time").cast(pl.Datetime("us"))
    sym = pl.col("symbol").cast(pl.String) if group_raw else pl.col("symbol").cast(pl.String).cast(enum)
    lf = lf.select(
        sym,
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
    if order_key == "i128":
        key = pl.col("time").cast(pl.Int64).cast(pl.Int128) * (2**64) + (pl.col("trade_id").cast(pl.Int128) + 2**63)
    elif order_key == "i128_signed":  # trade_id in [-2^63, 2^63): t·2^64 + id is still lexicographic
        key = pl.col("time").cast(pl.Int64).cast(pl.Int128) * (2**64) + pl.col("trade_id").cast(pl.Int128)
    elif order_key == "i64_fit":  # within one bucket, (offset, trade_id) orders like (time, trade_id)
        t = pl.col("time").cast(pl.Int64)
        key = (t - (t // interval_us) * interval_us) * span + (pl.col("trade_id") - lo)
    else:
        raise ValueError(order_key)
    aggs = [
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
    ]
    n_sell = pl.col("trade_count").cast(pl.Int64) - pl.col("_n_buy").cast(pl.Int64)
    if not n_sell_from_len:
        aggs.append(sell.sum().alias("_n_sell"))
        n_sell = pl.col("_n_sell")
    grid = lf.group_by("symbol", "peg_symbol", bucket).agg(aggs)
    if group_raw:
        grid = grid.with_columns(pl.col("symbol").cast(enum))
    if not final_sort:
        pass
    elif key_sort:
        n_pegs = len(pegs.categories)
        sort_key = (
            (pl.col("symbol").to_physical().cast(pl.Int128) * n_pegs
             + pl.col("peg_symbol").cast(pegs).to_physical().cast(pl.Int128)) * (2**64)
            + pl.col("time").cast(pl.Int64).cast(pl.Int128)
        )
        grid = grid.sort(sort_key)
    else:
        grid = grid.sort("symbol", "peg_symbol", "time")
    grid = grid.select(
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
        pl.when(pl.col("_n_buy") > 0)
        .then(pl.col("taker_buy_volume_quote") / pl.col("taker_buy_volume_base"))
        .alias("vwap_taker_buy"),
        pl.when(n_sell > 0)
        .then(pl.col("taker_sell_volume_quote") / pl.col("taker_sell_volume_base"))
        .alias("vwap_taker_sell"),
        (pl.col("volume_quote") / pl.col("volume_base")).alias("vwap_total_by_base"),
        "taker_buy_volume_base",
        "taker_sell_volume_base",
    )
    return grid.collect() if eager else grid


def last_trade_grid_fast(trades, grid_interval):
    """Every knob on (NOT faster in the interleaved A/B: see bench/README.md)."""
    return last_trade_grid_variant(trades, grid_interval)


def last_trade_grid_lib_equivalent(trades, grid_interval):
    """Every knob off: the library's plan, rebuilt here (sanity check of the knobs)."""
    return last_trade_grid_variant(trades, grid_interval, one_prepass=False, group_raw=False,
                                   n_sell_from_len=False, key_sort=False)


VARIANTS = {
    "lib_equivalent": dict(one_prepass=False, group_raw=False, n_sell_from_len=False, key_sort=False),
    "fast": {},
    "fast-but-enum-group": dict(group_raw=False),
    "fast-but-n_sell-sum": dict(n_sell_from_len=False),
    "fast-but-3col-sort": dict(key_sort=False),
    "fast+signed-key": dict(order_key="i128_signed"),
    "fast+i64-key": dict(order_key="i64_fit"),
    "only-i64-key": dict(one_prepass=False, group_raw=False, n_sell_from_len=False, key_sort=False, order_key="i64_fit"),
    "only-key-sort": dict(one_prepass=True, group_raw=False, n_sell_from_len=False, key_sort=True),
    "only-group-raw": dict(one_prepass=False, group_raw=True, n_sell_from_len=False, key_sort=False),
    "profile:lib-without-sort": dict(one_prepass=False, group_raw=False, n_sell_from_len=False, key_sort=False,
                                     final_sort=False),
    "group-raw+n_sell": dict(one_prepass=False, group_raw=True, n_sell_from_len=True, key_sort=False),
}
