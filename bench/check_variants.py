"""Equivalence checks of the bench-local rewrites against the library, on edge cases.

* ``returns_variants.query_marks_variant`` vs ``ReturnsEngine.query``: null query times, null and
  unknown symbols, String / Categorical / Enum (other order) query symbols, Enum and String
  backends, backend rows with null times, many equal backend times (ties), ``append_lag=False``,
  zero tolerance, a shifted start expression — ``DataFrame.equals`` (bit for bit, same order).
* ``grid_variants.last_trade_grid_variant`` (every knob set) vs ``last_trade_grid``: shuffled
  trades with many equal times, trade ids over the whole Int64 range (Int128 fallback of the
  Int64 key) and small ones (Int64 key), three pegs, several intervals.

    .venv/bin/python bench/check_variants.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grid_variants import VARIANTS, last_trade_grid_variant  # noqa: E402
from returns_variants import engine_query_variant  # noqa: E402

from mnemo_assets.engines import ReturnsEngine  # noqa: E402
from mnemo_assets.grids import last_trade_grid  # noqa: E402

DAY_US = 1_736_899_200_000_000  # 2025-01-15


def check_returns() -> int:
    rng = np.random.default_rng(1)
    n, m = 50_000, 20_000
    times = DAY_US + np.sort(rng.integers(0, 3_600_000_000, m)) // 1_000_000 * 1_000_000  # many ties
    g = pl.DataFrame({
        "symbol": rng.choice(["A", "B", "C"], m),
        "last_trade_time": pl.Series(times).cast(pl.Datetime("us")),
        "vwap_total_by_base": rng.random(m) + 1,
    }).with_columns(pl.col("symbol").cast(pl.Enum(["A", "B", "C"])))
    g = g.with_columns(pl.when(pl.int_range(pl.len()) % 997 == 0).then(None).otherwise(pl.col("last_trade_time"))
                       .alias("last_trade_time"))
    t = pl.Series(DAY_US + rng.integers(-60_000_000, 3_700_000_000, n)).cast(pl.Datetime("us"))
    q = pl.DataFrame({"x": np.arange(n), "symbol": rng.choice(["A", "B", "C", "Z"], n), "t": t}).with_columns(
        pl.when(pl.col("x") % 101 == 0).then(None).otherwise(pl.col("t")).alias("t"),
        pl.when(pl.col("x") % 103 == 0).then(None).otherwise(pl.col("symbol")).alias("symbol"),
    )
    cases = 0
    for backend in (g, g.with_columns(pl.col("symbol").cast(pl.String))):
        for query in (q, q.with_columns(pl.col("symbol").cast(pl.Categorical)),
                      q.with_columns(pl.col("symbol").cast(pl.Enum(["Z", "C", "B", "A"])))):
            for kw in ({}, {"restore": "join"}, {"sort_key": "columns"}):
                for start, dur, tol, lag in ((pl.col("t"), "10m", "30s", True),
                                             (pl.col("t") + pl.duration(seconds=1), "1m", "0s", False)):
                    a = ReturnsEngine(backend.lazy()).query(query.lazy(), start, dur, tol, append_lag=lag).collect()
                    b = engine_query_variant(backend, query, start, dur, tol, append_lag=lag, **kw).collect()
                    assert a.equals(b), (kw, dur, tol)
                    cases += 1
    return cases


def check_grid() -> int:
    rng = np.random.default_rng(0)
    n = 300_000
    cases = 0
    for ids in (rng.integers(-(2**62), 2**62, n), rng.permutation(n) - 1000):
        df = pl.DataFrame({
            "symbol": rng.choice(["A", "BB", "C", "DDDD"], n), "peg_symbol": rng.choice(["USDT", "USDC", "FDUSD"], n),
            "trade_id": ids, "price": rng.random(n), "qty": rng.random(n), "quote_qty": rng.random(n),
            "time": pl.Series(DAY_US + rng.integers(0, 60_000_000, n) // 1000 * 1000).cast(pl.Datetime("us")),
            "is_buyer_maker": rng.random(n) < 0.5,
        })
        for interval in ("5s", "1ms", "1d"):
            ref = last_trade_grid(df.lazy(), interval).collect()
            for name, kw in VARIANTS.items():
                if name.startswith("profile:"):
                    continue
                out = last_trade_grid_variant(df.lazy(), interval, **kw).collect()
                assert out.schema == ref.schema, name
                exact = ["symbol", "date", "time", "peg_symbol", "open", "high", "low", "close", "trade_count",
                         "last_trade_time"]
                assert out.select(exact).equals(ref.select(exact)), (name, interval)
                for c in out.columns:
                    assert (out[c].is_null() == ref[c].is_null()).all(), (name, c)
                    if out[c].dtype == pl.Float64:
                        d = ((out[c] - ref[c]).abs() / ref[c].abs().clip(lower_bound=1e-300)).max()
                        assert (d or 0.0) <= 1e-12, (name, c, d)
                cases += 1
    return cases


def main() -> None:
    print(f"returns: {check_returns()} cases equal (DataFrame.equals) to ReturnsEngine.query")
    print(f"grid: {check_grid()} cases equal to last_trade_grid (exact columns bit for bit, sums within 1e-12)")


if __name__ == "__main__":
    main()
