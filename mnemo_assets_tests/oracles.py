"""Independent, slow, obvious implementations of SPEC.md used as test oracles (plain Python loops)."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta

EPOCH = datetime(1970, 1, 1)


def to_us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def grid_oracle(trades: list[dict], interval_us: int) -> list[dict]:
    """SPEC.md's last-trade grid, one trade at a time. Rows sorted by (symbol, peg, time)."""
    buckets: dict[tuple, list[dict]] = defaultdict(list)
    for tr in trades:
        b = to_us(tr["time"]) // interval_us * interval_us
        buckets[(tr["symbol"], tr["peg_symbol"], b)].append(tr)
    rows = []
    for (symbol, peg, b), group in sorted(buckets.items()):
        ordered = sorted(group, key=lambda tr: (tr["time"], tr["trade_id"]))
        buy = [tr for tr in group if not tr["is_buyer_maker"]]
        sell = [tr for tr in group if tr["is_buyer_maker"]]
        vb = sum(tr["qty"] for tr in group)
        vq = sum(tr["quote_qty"] for tr in group)
        bq = sum(tr["quote_qty"] for tr in buy)
        sq = sum(tr["quote_qty"] for tr in sell)
        bb = sum(tr["qty"] for tr in buy)
        sb = sum(tr["qty"] for tr in sell)
        start = from_us(b)
        rows.append(
            {
                "symbol": symbol,
                "date": start.date(),
                "time": start,
                "peg_symbol": peg,
                "open": ordered[0]["price"],
                "high": max(tr["price"] for tr in group),
                "low": min(tr["price"] for tr in group),
                "close": ordered[-1]["price"],
                "volume_base": vb,
                "volume_quote": vq,
                "trade_count": len(group),
                "last_trade_time": max(tr["time"] for tr in group),
                "taker_buy_volume_quote": bq,
                "taker_sell_volume_quote": sq,
                "vwap_taker_buy": bq / bb if buy else None,
                "vwap_taker_sell": sq / sb if sell else None,
                "vwap_total_by_base": vq / vb,
                "taker_buy_volume_base": bb,
                "taker_sell_volume_base": sb,
            }
        )
    return rows


def assert_rows_close(actual: list[dict], expected: list[dict], rel: float = 1e-9) -> None:
    """Row-by-row equality; floats within ``rel`` (sums may differ in the last bits)."""
    assert len(actual) == len(expected), f"{len(actual)} rows, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert list(a) == list(e), f"row {i}: columns {list(a)} != {list(e)}"
        for col in e:
            av, ev = a[col], e[col]
            if isinstance(ev, float) and av is not None and ev is not None:
                if math.isnan(ev):
                    assert math.isnan(av), f"row {i} {col}: {av} != NaN"
                else:
                    assert math.isclose(av, ev, rel_tol=rel, abs_tol=1e-12), f"row {i} {col}: {av} != {ev}"
            else:
                assert av == ev, f"row {i} {col}: {av!r} != {ev!r}"


def mark_oracle(backend: list[dict], symbol: str, t: datetime, fair: str, time: str):
    """(mark time, mark fair) of ``symbol`` at ``t``: largest time <= t, ties: last in backend order."""
    best = None
    for row in backend:
        if row["symbol"] == symbol and row[time] is not None and row[time] <= t and (best is None or row[time] >= best[time]):
            best = row
    return None if best is None else (best[time], best[fair])


def returns_oracle(
    queries: list[dict],
    backend: list[dict],
    start: str,
    duration: timedelta,
    tolerance: timedelta,
    fair: str = "vwap_total_by_base",
    time: str = "last_trade_time",
) -> list[dict]:
    """SPEC.md's ReturnsEngine.query, one query row at a time."""
    out = []
    for q in queries:
        t0 = q[start]
        row = dict(q)
        if t0 is None or q["symbol"] is None:
            row["max_tick_to_query_lag"], row["return"] = None, None
            out.append(row)
            continue
        t1 = t0 + duration
        m0 = mark_oracle(backend, q["symbol"], t0, fair, time)
        m1 = mark_oracle(backend, q["symbol"], t1, fair, time)
        lags = [t - m[0] for t, m in ((t0, m0), (t1, m1)) if m is not None]
        f0 = m0[1] if m0 is not None and t0 - m0[0] <= tolerance else None
        f1 = m1[1] if m1 is not None and t1 - m1[0] <= tolerance else None
        row["max_tick_to_query_lag"] = max(lags) if lags else None
        row["return"] = f1 / f0 - 1 if f0 is not None and f1 is not None else None
        out.append(row)
    return out


def _window(frame, lo, hi, time_col, closed_hi=False):
    import polars as pl

    upper = pl.col(time_col) <= hi if closed_hi else pl.col(time_col) < hi
    return frame.filter((pl.col(time_col) >= lo) & upper)


def metadata_oracle(grid, returns, spec, start_date, end_date) -> list[dict]:
    """SPEC.md's metadata by brute force: for every grid time and symbol, filter the exact
    window rows and evaluate the spec's expressions on them; quantiles by counting."""
    import math

    import polars as pl

    g = grid.with_columns(pl.col("symbol").cast(pl.String))
    r = returns.with_columns(pl.col("symbol").cast(pl.String)) if returns is not None else None
    by_sym = {s: g.filter(pl.col("symbol") == s).sort("last_trade_time") for s in sorted(set(g["symbol"].to_list()))}
    r_by_sym = {s: r.filter(pl.col("symbol") == s) for s in by_sym} if r is not None else {}
    rows = []
    step = spec.interval
    t = datetime(start_date.year, start_date.month, start_date.day)
    end = datetime(end_date.year, end_date.month, end_date.day)
    while t < end:
        for sym, frame in by_sym.items():
            recent = _window(frame, t - spec.max_index_window, t, "last_trade_time")
            if recent.height == 0:
                continue
            row = {"symbol": sym, "grid_time": t, "last_trade_time": recent["last_trade_time"].max()}
            for w, exprs in spec.index.items():
                row.update(_window(frame, t - w, t, "last_trade_time").select(exprs).row(0, named=True))
            for w, exprs in spec.returns.items():
                src = r_by_sym.get(sym, r.head(0) if r is not None else None)
                row.update(_window(src, t - w, t - spec.returns_interval, "returns_grid_time", closed_hi=True).select(exprs).row(0, named=True))
            for k, v in row.items():
                if isinstance(v, float) and math.isnan(v):
                    row[k] = None
            rows.append(row)
        t += step
    if spec.quantiles is not None and rows:
        cols = pl.DataFrame(rows[:1]).select(spec.quantiles).columns
        by_time: dict = defaultdict(list)
        for row in rows:
            by_time[row["grid_time"]].append(row)
        for group in by_time.values():
            for c in cols:
                values = [x[c] for x in group if x[c] is not None]
                for x in group:
                    v = x[c]
                    if v is None:
                        x[c + "_q"] = None
                    else:
                        less = sum(1 for u in values if u < v)
                        equal = sum(1 for u in values if u == v)
                        x[c + "_q"] = (less + (equal + 1) / 2) / len(values)
    return sorted(rows, key=lambda x: (x["symbol"], x["grid_time"]))
