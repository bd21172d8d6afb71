"""The last-trade grid of a symbol-clustered trades file, in one streaming pass.

The trades asset writes each day symbol-clustered: pairs in ``(symbol, peg_symbol)`` order, each
pair's trades sorted by ``(time, trade_id)``, every row group holding one pair (its parquet
statistics say ``min == max`` for ``symbol`` and ``peg_symbol``). :func:`grid_from_parquet`
exploits that layout:

* the pairs and their row ranges come from the footer alone (``symbol`` and ``peg_symbol`` are
  never decoded), so a peg's pairs are read and the others skipped;
* the six value columns are read in slices of at most ``batch_rows`` rows (bounded memory, a
  reader thread decoding the next slice while this one is aggregated);
* in a pair sorted by ``(time, trade_id)`` a bucket is a run of consecutive rows, so the grid is
  a segmented reduction without hashing or sorting: open/close are the first/last price of the
  run, last_trade_time its last time, high/low ``fmax``/``fmin`` (NaN skipped unless all NaN, as
  polars' ``max``/``min``), and every sum is accumulated row by row in ``(time, trade_id)`` order
  (``np.bincount``: one sequential ``+=`` per row, starting at 0.0, which is also how the
  general path's ``when(...).then(x).otherwise(0.0).sum()`` is defined).

The order is **verified**, never assumed: a pair whose rows are not strictly increasing in
``(time, trade_id)``, or that holds a null, is computed by the general
:func:`~mnemo_assets.grids.last_trade_grid`; a file whose row groups do not each hold one pair
(or whose pairs are scattered) is computed by it as a whole. The rows, their order, dtypes and
every non-sum value equal the general path's; sums are the sequential sums in trade order
(the general path's hash aggregation adds partial sums of its morsels, which may differ from
them in the last bit: SPEC.md, "Incremental equals full").
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from mnemo_assets.grids import GRID_SCHEMA, grid_columns, last_trade_grid
from mnemo_assets.intervals import day_interval, to_micros

#: rows decoded per slice (a slice and its temporaries take ~25 × this many bytes)
BATCH_ROWS = 2_000_000
_VALUE_COLUMNS = ["trade_id", "price", "qty", "quote_qty", "time", "is_buyer_maker"]
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Pair:
    """One ``(symbol, peg_symbol)`` of a clustered file and its rows ``[start, stop)``."""

    symbol: str
    peg: str
    start: int
    stop: int


def clustered_pairs(path: str) -> list[Pair] | None:
    """The pairs of a symbol-clustered parquet file and their row ranges, from its footer; ``None``
    when the layout does not allow it (a row group mixing pairs, a null or missing statistic, a
    pair in two places)."""
    md = pq.ParquetFile(path).metadata
    names = [md.schema.column(j).path for j in range(md.num_columns)]
    if "symbol" not in names or "peg_symbol" not in names:
        return None
    js, jp = names.index("symbol"), names.index("peg_symbol")
    pairs: list[Pair] = []
    offset = 0
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        n = rg.num_rows
        if n == 0:
            continue
        keys = []
        for j in (js, jp):
            st = rg.column(j).statistics
            if st is None or not st.has_min_max or st.null_count != 0 or st.min != st.max:
                return None
            value = st.min
            keys.append(value.decode() if isinstance(value, bytes) else value)
        symbol, peg = keys
        if pairs and (pairs[-1].symbol, pairs[-1].peg) == (symbol, peg) and pairs[-1].stop == offset:
            pairs[-1] = Pair(symbol, peg, pairs[-1].start, offset + n)
        else:
            pairs.append(Pair(symbol, peg, offset, offset + n))
        offset += n
    if len({(p.symbol, p.peg) for p in pairs}) != len(pairs):
        return None  # a pair in two places
    return pairs


def _micros(t: datetime | None) -> int | None:
    return None if t is None else (t - _EPOCH) // timedelta(microseconds=1)


# ----------------------------------------------------------------------------- segmented kernel
def _segments(t: np.ndarray, pair_id: np.ndarray, interval_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Run starts of equal (pair, bucket) and the bucket of every row."""
    bucket = t // interval_us  # floor division, as polars' // on Int64
    change = np.empty(len(t), dtype=bool)
    change[0] = True
    np.not_equal(bucket[1:], bucket[:-1], out=change[1:])
    change[1:] |= pair_id[1:] != pair_id[:-1]
    return np.flatnonzero(change), bucket


def _sorted_pairs(t: np.ndarray, ids: np.ndarray, pair_id: np.ndarray) -> np.ndarray:
    """Pair ids (of this slice) whose rows are NOT strictly increasing in (time, trade_id)."""
    dt = t[1:] - t[:-1]
    ok = (dt > 0) | ((dt == 0) & (ids[1:] > ids[:-1]))
    ok |= pair_id[1:] != pair_id[:-1]  # a new pair starts: no order between pairs
    if ok.all():
        return np.empty(0, dtype=pair_id.dtype)
    return np.unique(pair_id[1:][~ok])


def _aggregate(cols: dict[str, np.ndarray], pair_id: np.ndarray, interval_us: int) -> dict[str, np.ndarray]:
    """The grid columns of sorted rows (one row per run of equal (pair, bucket))."""
    t, price, qty, quote, sell = cols["time"], cols["price"], cols["qty"], cols["quote_qty"], cols["is_buyer_maker"]
    starts, bucket = _segments(t, pair_id, interval_us)
    n_seg = len(starts)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = len(t)
    last = ends - 1
    seg = np.repeat(np.arange(n_seg, dtype=np.int64), ends - starts)
    side = seg * 2 + sell  # even: taker buy, odd: taker sell
    by_side_quote = np.bincount(side, weights=quote, minlength=2 * n_seg)
    by_side_base = np.bincount(side, weights=qty, minlength=2 * n_seg)
    by_side_n = np.bincount(side, minlength=2 * n_seg)
    return {
        "pair": pair_id[starts],
        "bucket": bucket[starts],
        "open": price[starts],
        "high": np.fmax.reduceat(price, starts),
        "low": np.fmin.reduceat(price, starts),
        "close": price[last],
        "volume_base": np.bincount(seg, weights=qty, minlength=n_seg),
        "volume_quote": np.bincount(seg, weights=quote, minlength=n_seg),
        "trade_count": (ends - starts).astype(np.uint32),
        "last_trade_time": t[last],
        "taker_buy_volume_quote": by_side_quote[0::2],
        "taker_sell_volume_quote": by_side_quote[1::2],
        "taker_buy_volume_base": by_side_base[0::2],
        "taker_sell_volume_base": by_side_base[1::2],
        "_n_buy": by_side_n[0::2],
        "_n_sell": by_side_n[1::2],
    }


def _tail_start(t: np.ndarray, pair_id: np.ndarray, interval_us: int) -> int:
    """Index of the first row of the trailing run of rows in the last row's (pair, bucket)."""
    n = len(t)
    b_last, p_last = t[-1] // interval_us, pair_id[-1]
    width = 256
    while True:
        lo = max(0, n - width)
        same = (pair_id[lo:] == p_last) & (t[lo:] // interval_us == b_last)
        if not same.all():
            return lo + int(np.flatnonzero(~same)[-1]) + 1
        if lo == 0:
            return 0
        width *= 4


# ----------------------------------------------------------------------------- reading
def _slices(pairs: Sequence[Pair], batch_rows: int) -> Iterator[tuple[int, int, list[tuple[int, int, int]]]]:
    """``(start, stop, [(pair index, first row, stop row) in the slice])`` covering the selected
    pairs' rows in file order, each slice at most ``batch_rows`` rows of one contiguous range."""
    k = 0
    while k < len(pairs):
        # a contiguous range of selected pairs
        j = k
        while j + 1 < len(pairs) and pairs[j + 1].start == pairs[j].stop:
            j += 1
        lo, hi = pairs[k].start, pairs[j].stop
        pos = lo
        while pos < hi:
            stop = min(pos + batch_rows, hi)
            members = [
                (i, max(pairs[i].start, pos), min(pairs[i].stop, stop)) for i in range(k, j + 1) if pairs[i].start < stop and pairs[i].stop > pos
            ]
            yield pos, stop, members
            pos = stop
        k = j + 1


def _read(lf: pl.LazyFrame, start: int, stop: int) -> pl.DataFrame:
    return lf.slice(start, stop - start).collect()


def _prefetch(items: list, fn, depth: int = 1) -> Iterator:
    """``fn(item)`` for each item in order, computed one ahead in a thread (decode overlaps the
    caller's work on the previous result)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((item, fn(item), None))
        except BaseException as exc:
            q.put((None, None, exc))
            return
        q.put(None)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        while True:
            got = q.get()
            if got is None:
                return
            item, value, exc = got
            if exc is not None:
                raise exc
            yield item, value
    finally:
        stop.set()
        while th.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.01)


# ----------------------------------------------------------------------------- the grid
def _frame(parts: list[dict[str, np.ndarray]], pairs: Sequence[Pair], enum: pl.Enum, interval_us: int) -> pl.DataFrame:
    if not parts:
        return pl.DataFrame(schema=GRID_SCHEMA).with_columns(pl.col("symbol").cast(enum))
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    pair = cols["pair"]
    sym_of_pair = pl.Series([p.symbol for p in pairs], dtype=pl.String).cast(enum)
    peg_of_pair = pl.Series([p.peg for p in pairs], dtype=pl.String)
    idx = pl.Series(pair, dtype=pl.UInt32)
    time = pl.Series(cols["bucket"] * interval_us, dtype=pl.Int64).cast(pl.Datetime("us"))
    frame = pl.DataFrame(
        {
            "symbol": sym_of_pair.gather(idx),
            "time": time,
            "peg_symbol": peg_of_pair.gather(idx),
            **{c: pl.Series(cols[c], dtype=pl.Float64) for c in ("open", "high", "low", "close", "volume_base", "volume_quote")},
            "trade_count": pl.Series(cols["trade_count"], dtype=pl.UInt32),
            "last_trade_time": pl.Series(cols["last_trade_time"], dtype=pl.Int64).cast(pl.Datetime("us")),
            **{
                c: pl.Series(cols[c], dtype=pl.Float64)
                for c in ("taker_buy_volume_quote", "taker_sell_volume_quote", "taker_buy_volume_base", "taker_sell_volume_base")
            },
            "_n_buy": pl.Series(cols["_n_buy"], dtype=pl.Int64),
            "_n_sell": pl.Series(cols["_n_sell"], dtype=pl.Int64),
        }
    )
    return frame.select(grid_columns())


def _general(
    path: str, interval: str | timedelta, peg: str | None, start: datetime | None, end: datetime | None, enum: pl.Enum | None
) -> pl.DataFrame:
    lf = pl.scan_parquet(path)
    if peg is not None:
        lf = lf.filter(pl.col("peg_symbol") == peg)
    if start is not None:
        lf = lf.filter(pl.col("time") >= start)
    if end is not None:
        lf = lf.filter(pl.col("time") < end)
    if enum is not None:
        lf = lf.with_columns(pl.col("symbol").cast(pl.String).cast(enum))
    return last_trade_grid(lf, interval).collect()


def grid_from_parquet(
    path: str,
    grid_interval: str | timedelta,
    *,
    peg: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    enum: pl.Enum | None = None,
    batch_rows: int = BATCH_ROWS,
    report: dict | None = None,
) -> pl.DataFrame:
    """The last-trade grid of the trades in one parquet file (a stored trades partition), the
    rows of ``peg`` only and ``start <= time < end`` when given.

    Equal to ``last_trade_grid(scan.filter(...), grid_interval).collect()`` (``symbol`` the
    ``enum`` if given, else the Enum over the sorted symbols that have rows): same rows, order,
    dtypes and values, sums accumulated in ``(time, trade_id)`` order (see the module doc).
    Symbol-clustered files take the streaming path, anything else the general one.
    ``report``, when given, receives ``layout`` ("clustered" or "general") and the number of
    pairs computed by the segmented path (``sorted_pairs``) and by the general one
    (``general_pairs``).
    """
    report = {} if report is None else report
    interval_us = to_micros(day_interval(grid_interval, "grid interval"))
    path = str(path)
    schema = pl.scan_parquet(path).collect_schema()
    missing = [c for c in ("symbol", "peg_symbol", *_VALUE_COLUMNS) if c not in schema]
    pairs = None if missing else clustered_pairs(path)
    report.update(layout="general" if pairs is None else "clustered", sorted_pairs=0, general_pairs=0)
    if pairs is None:
        return _general(path, grid_interval, peg, start, end, enum)
    selected = [p for p in pairs if peg is None or p.peg == peg]
    lo, hi = _micros(start), _micros(end)
    # output order: (symbol, peg) as the grid sorts them (Enum order, then the String peg)
    symbols = sorted({p.symbol for p in selected})
    if enum is not None:
        rank = {s: i for i, s in enumerate(enum.categories.to_list())}
        if any(s not in rank for s in symbols):
            report["layout"] = "general"
            return _general(path, grid_interval, peg, start, end, enum)  # the general path raises as the cast does
    else:
        rank = {s: i for i, s in enumerate(symbols)}

    lf = pl.scan_parquet(path).select(
        pl.col("trade_id").cast(pl.Int64),
        pl.col("price").cast(pl.Float64),
        pl.col("qty").cast(pl.Float64),
        pl.col("quote_qty").cast(pl.Float64),
        pl.col("time").cast(pl.Datetime("us")).cast(pl.Int64),
        pl.col("is_buyer_maker").cast(pl.Boolean),
    )
    parts: list[dict[str, np.ndarray]] = []
    bad: set[int] = set()
    seen: set[int] = set()  # pairs with rows inside [start, end)
    carry: dict[str, np.ndarray] | None = None  # rows of the last (maybe unfinished) bucket
    carry_pair: np.ndarray | None = None
    slices = list(_slices(selected, batch_rows))
    for n, ((_s0, _s1, members), frame) in enumerate(_prefetch(slices, lambda sl: _read(lf, sl[0], sl[1]))):
        pair_id = np.concatenate([np.full(b - a, i, dtype=np.int64) for i, a, b in members])
        if frame.null_count().sum_horizontal().item():
            nulls = frame.select(pl.any_horizontal(pl.all().is_null())).to_series().to_numpy()
            bad.update(np.unique(pair_id[nulls]).tolist())
            frame = frame.fill_null(0)
        cols = {c: frame.get_column(c).to_numpy() for c in _VALUE_COLUMNS}
        del frame
        if lo is not None or hi is not None:
            t = cols["time"]
            keep = np.ones(len(t), dtype=bool)
            if lo is not None:
                keep &= t >= lo
            if hi is not None:
                keep &= t < hi
            if not keep.all():
                cols = {c: v[keep] for c, v in cols.items()}
                pair_id = pair_id[keep]
        if carry is not None:
            cols = {c: np.concatenate([carry[c], cols[c]]) for c in _VALUE_COLUMNS}
            pair_id = np.concatenate([carry_pair, pair_id])
            carry = carry_pair = None
        if len(pair_id) == 0:
            continue
        seen.update(np.unique(pair_id).tolist())
        bad.update(_sorted_pairs(cols["time"], cols["trade_id"], pair_id).tolist())
        if n + 1 < len(slices):
            # the last bucket may go on in the next slice: carry its rows over
            cut = _tail_start(cols["time"], pair_id, interval_us)
            carry = {c: v[cut:] for c, v in cols.items()}
            carry_pair = pair_id[cut:]
            cols = {c: v[:cut] for c, v in cols.items()}
            pair_id = pair_id[:cut]
            if cut == 0:
                continue
        parts.append(_aggregate(cols, pair_id, interval_us))
        del cols

    order = sorted(range(len(selected)), key=lambda i: (rank[selected[i].symbol], selected[i].peg))
    if enum is None:
        enum = pl.Enum(sorted({selected[i].symbol for i in seen}))
    report.update(sorted_pairs=len(seen - bad), general_pairs=len(bad))
    grid = _frame(parts, selected, enum, interval_us)
    needs_sort = order != list(range(len(selected)))
    if bad:
        grid = grid.filter(~pl.Series(np.isin(np.concatenate([p["pair"] for p in parts]) if parts else np.empty(0), list(bad))))
        general = []
        for i in sorted(bad):
            p = selected[i]
            lf_pair = pl.scan_parquet(path).slice(p.start, p.stop - p.start)
            if lo is not None:
                lf_pair = lf_pair.filter(pl.col("time") >= start)
            if hi is not None:
                lf_pair = lf_pair.filter(pl.col("time") < end)
            general.append(last_trade_grid(lf_pair.with_columns(pl.col("symbol").cast(pl.String).cast(enum)), grid_interval).collect())
        grid = pl.concat([grid, *general])
        needs_sort = True
    if needs_sort:
        grid = grid.sort("symbol", "peg_symbol", "time", maintain_order=True)
    return grid.select(list(GRID_SCHEMA))
