"""Rolling metadata: pure polars, no Dagster.

For grid times ``G = D + kΔm`` the metadata of a symbol are the spec's aggregations over its
grid rows with ``last_trade_time ∈ [G − W, G)`` (index metrics) and over its gridded returns
with ``returns_grid_time ∈ [G − W, G − Δr]`` (returns metrics), then cross-sectional quantiles
at each ``G``. See SPEC.md "Rolling metadata".

**The vocabulary.** A spec is written with :func:`col`, :func:`lit`, :func:`n_rows` and
:func:`when` (see :mod:`mnemo_assets.metadata_expr`): sums, counts, means, variances and
standard deviations of elementwise expressions, with arithmetic and elementwise functions on
top. Those the project owns: it computes them from per-hour partials and its spec hash is a
description it writes itself. Any other polars aggregation (``max``, ``median``, a
``filter`` ...) works too and is evaluated exactly on the raw rows of each window.

>>> from datetime import timedelta
>>> from mnemo_assets.metadata import MetadataSpec, col, compile_plan
>>> liquidity = col("volume_quote").sum()
>>> spec = MetadataSpec(
...     index={"1d": [liquidity.alias("liq_1d"), liquidity.sqrt().alias("sqrtliq_1d"),
...                   ((col("close") - col("open")) / col("open")).abs().mean().alias("mean_abs_move_1d")]},
...     returns={"7d": [(col("return").std() * 144**0.5).alias("vol_7d"), col("return").count().alias("n_7d")]},
...     quantiles=["liq_1d", "vol_7d"],
... )
>>> print(spec.description)
mnemo-metadata-spec/1
interval 1h
returns_interval 10m
index 1d liq_1d = col("volume_quote").sum()
index 1d sqrtliq_1d = col("volume_quote").sum().sqrt()
index 1d mean_abs_move_1d = ((col("close") - col("open")) / col("open")).abs().mean()
returns 7d vol_7d = (col("return").std(ddof=1) * 12.0)
returns 7d n_7d = col("return").count()
quantiles liq_1d, vol_7d
>>> compile_plan(spec.index).generic  # every metric from per-hour partials
False

**Why it is cheap whatever the lookback.** Each aggregation's elementwise input ``X`` is
reduced once per hour (:func:`partials`: row count, non-null count, sum and, for variances,
the centred sum of squares). A window ``[G − W, G)`` is then cut at fixed, epoch-aligned blocks
of length ``P`` (one day for windows of a day or more): the hours of ``G``'s block before ``G``
(a prefix), whole blocks in between, and the hours of ``G − W``'s block from ``G − W`` on (a
suffix). Prefix and suffix sums are running sums inside a block, whole blocks are summed
directly, and the three are added in that fixed order: every window value is a sum of its own
hours only (never a difference of running totals), so exact inputs give exact outputs (all-zero
returns have a volatility of exactly 0, identical symbols get identical values and quantiles),
a non-finite value reaches only the windows holding it, and the error does not grow with the
history. Variances merge (count, mean, centred sum of squares) of the pieces with Chan's
formula, each piece's centred sum computed in two passes. The work per daily partition is
about the hours read plus a day of prefix/suffix pairs per window, whatever ``W`` is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from mnemo_assets.grids import GRID_SCHEMA
from mnemo_assets.intervals import (
    ONE_DAY,
    day_interval,
    day_start,
    interval_name,
    to_micros,
    to_timedelta,
)
from mnemo_assets.metadata_expr import (
    MetricExpr,
    Node,
    _describe,
    _render,
    col,
    from_polars,
    level,
    lit,
    n_rows,
    unalias,
    when,
)
from mnemo_assets.returns import RETURNS_SCHEMA

__all__ = [
    "MetadataSpec", "MetricExpr", "Plan", "col", "compile_plan", "compute_metadata", "default_metadata", "grid_times",
    "lit", "metadata_from_partials", "metadata_schema", "metadata_violations", "n_rows", "partials", "when",
]

HOUR = "__hour"
ROWS = "__rows"
LTT = "__ltt"
BLOCK = "__block"
SPEC_FORMAT = "mnemo-metadata-spec/1"
_DAY_US = 86_400_000_000


# --------------------------------------------------------------------------------- the spec
def _quantile_selection(value: Any) -> pl.Expr | None:
    if value is None:
        return None
    if isinstance(value, str):
        return pl.col(value)
    if isinstance(value, pl.Expr):
        if not value.meta.is_column_selection(allow_aliasing=False):
            raise ValueError(f"quantiles must select columns (names, a regex, a selector), got {value}")
        return value
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return pl.col(list(value))
    raise TypeError(f"quantiles must be column names or a column selection, got {type(value).__name__}")


@dataclass(frozen=True)
class MetadataSpec:
    """What the metadata hold: windows → aggregations, and quantiles.

    ``index`` aggregates grid rows, ``returns`` aggregates gridded returns; windows are
    timedeltas or duration strings, each output needs a unique name (``.alias``). Outputs are
    expressions of the vocabulary (:func:`col` ...: computed from per-hour partials) or any
    polars aggregation expression (computed on the raw rows of each window). ``quantiles``
    selects the columns that get a ``_q`` cross-sectional quantile (names, or a polars column
    selection such as ``pl.col("^liq.*$")``). ``interval`` (Δm, default 1h) is the spacing of
    grid times, ``returns_interval`` (Δr) that of the gridded returns. Windows must be
    multiples of Δm.

    For the seed's code, ``spec["by_symbol_index"]`` and ``spec["accum_returns"]`` work; their
    values are ``pl.Expr`` that polars evaluates as they are.
    """

    index: Mapping[timedelta, Sequence[pl.Expr]]
    returns: Mapping[timedelta, Sequence[pl.Expr]]
    quantiles: pl.Expr | None = None
    interval: timedelta = timedelta(hours=1)
    returns_interval: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        object.__setattr__(self, "interval", day_interval(self.interval, "metadata interval"))
        object.__setattr__(self, "returns_interval", day_interval(self.returns_interval, "returns interval"))
        object.__setattr__(self, "quantiles", _quantile_selection(self.quantiles))
        for name in ("index", "returns"):
            windows = {to_timedelta(w): list(exprs) for w, exprs in getattr(self, name).items()}
            for w, exprs in windows.items():
                if to_micros(w) % to_micros(self.interval):
                    raise ValueError(f"{name} window {interval_name(w)} is not a multiple of the metadata interval {interval_name(self.interval)}")
                for e in exprs:
                    if not isinstance(e, pl.Expr):
                        raise TypeError(f"{name} window {interval_name(w)}: {e!r} is not an expression")
                    if isinstance(e, MetricExpr) and level(e._node) == 0:
                        raise ValueError(f"{name} metric {e.meta.output_name()} is not an aggregation: {_describe(e._node)}")
            object.__setattr__(self, name, windows)
        if to_micros(self.interval) % to_micros(self.returns_interval):
            raise ValueError(
                f"the metadata interval {interval_name(self.interval)} must be a multiple of the returns interval {interval_name(self.returns_interval)}"
            )
        if not self.index:
            raise ValueError("the spec needs at least one index window (it defines the row set)")
        names = self.index_columns + self.returns_columns
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metadata columns must have unique names; repeated: {dupes}")
        reserved = {"symbol", "grid_time", "last_trade_time"} & set(names)
        if reserved:
            raise ValueError(f"metadata columns cannot be named {sorted(reserved)}")
        self.quantile_columns  # noqa: B018 - resolve now: a bad selection fails here, not in a run

    def __getitem__(self, key: str) -> Mapping[timedelta, Sequence[pl.Expr]]:
        return {"by_symbol_index": self.index, "accum_returns": self.returns}[key]

    @property
    def index_columns(self) -> list[str]:
        return [e.meta.output_name() for exprs in self.index.values() for e in exprs]

    @property
    def returns_columns(self) -> list[str]:
        return [e.meta.output_name() for exprs in self.returns.values() for e in exprs]

    @property
    def max_index_window(self) -> timedelta:
        return max(self.index)

    @property
    def max_returns_window(self) -> timedelta:
        return max(self.returns) if self.returns else timedelta(0)

    @cached_property
    def quantile_columns(self) -> list[str]:
        """The metric columns that get a ``_q`` quantile, in output order."""
        if self.quantiles is None:
            return []
        schema = _metric_schema(self, GRID_SCHEMA, RETURNS_SCHEMA, strict=False)
        try:
            return pl.DataFrame(schema=schema).select(self.quantiles).columns
        except pl.exceptions.PolarsError as exc:
            raise ValueError(f"quantiles {self.quantiles} do not select metadata columns {list(schema)}: {exc}") from exc

    @cached_property
    def description(self) -> str:
        """What determines the values, as text this project writes (never polars' serialized
        expressions): vocabulary metrics by their canonical form; plain polars expressions
        that are not simple sums/counts/means/vars/stds by polars' display text."""
        lines = [SPEC_FORMAT, f"interval {interval_name(self.interval)}", f"returns_interval {interval_name(self.returns_interval)}"]
        for side in ("index", "returns"):
            for w, exprs in getattr(self, side).items():
                for e in exprs:
                    owned = from_polars(e)
                    text = _describe(unalias(owned._node)) if owned is not None else f"polars {e}"
                    lines.append(f"{side} {interval_name(w)} {e.meta.output_name()} = {text}")
        lines.append("quantiles " + ", ".join(self.quantile_columns))
        return "\n".join(lines)

    @property
    def version(self) -> str:
        """A short hash of :attr:`description` (the metadata asset's code version)."""
        return hashlib.sha256(self.description.encode()).hexdigest()[:16]


def default_metadata(returns_interval: str | timedelta = "10m", interval: str | timedelta = "1h") -> MetadataSpec:
    """The seed's ``default_metadata``: 1d/7d liquidity, order-flow imbalance and trade counts,
    7d/30d drift, volatility and sample size of the returns, quantiles of liquidity and vol.

    >>> spec = default_metadata("10m")
    >>> spec.index_columns[:2], spec.returns_columns[-1]
    (['liquidity_1d', 'sqrtliq_1d'], 'vol_ssize_30d_lookback')
    """
    returns_interval = to_timedelta(returns_interval)
    liquidity = col("volume_quote").sum()
    sqrtliq = liquidity.sqrt()
    excess_buy_ratio = (col("taker_buy_volume_base") - col("taker_sell_volume_base")).sum() / col("volume_base").sum()
    trade_count = col("trade_count").sum()
    n = ONE_DAY / returns_interval
    drift = col("return").mean() * n
    vol = col("return").std() * n**0.5
    ssize = col("return").count()
    return MetadataSpec(
        index={
            timedelta(days=d): [
                liquidity.alias(f"liquidity_{d}d"),
                sqrtliq.alias(f"sqrtliq_{d}d"),
                excess_buy_ratio.alias(f"excess_buy_ratio_{d}d"),
                trade_count.alias(f"trade_count_{d}d"),
            ]
            for d in (1, 7)
        },
        returns={
            timedelta(days=d): [
                drift.alias(f"daily_returns_drift_{d}d_lookback"),
                vol.alias(f"daily_vol_{d}d_lookback"),
                ssize.alias(f"vol_ssize_{d}d_lookback"),
            ]
            for d in (7, 30)
        },
        quantiles=pl.col("^daily_vol.*$", "^liquidity.*$"),
        interval=to_timedelta(interval),
        returns_interval=returns_interval,
    )


# ------------------------------------------------------------------------------- the schema
def _exprs(windows: Mapping[timedelta, Sequence[pl.Expr]]) -> list[pl.Expr]:
    return [e for exprs in windows.values() for e in exprs]


def _metric_schema(spec: MetadataSpec, grid_schema: pl.Schema, returns_schema: pl.Schema, strict: bool = True) -> pl.Schema:
    out: dict[str, pl.DataType] = {}
    for windows, schema in ((spec.index, grid_schema), (spec.returns, returns_schema)):
        for e in _exprs(windows):
            try:
                out.update(pl.DataFrame(schema=schema).select(e).schema)
            except pl.exceptions.PolarsError:
                if strict:
                    raise
                out[e.meta.output_name()] = pl.Float64()
    return pl.Schema(out)


def _quantile_exprs(spec: MetadataSpec) -> list[pl.Expr]:
    return [(pl.col(c).rank("average") / pl.col(c).count()).alias(f"{c}_q") for c in spec.quantile_columns]


def metadata_schema(
    spec: MetadataSpec,
    symbol: pl.DataType = pl.String(),
    *,
    grid_schema: pl.Schema = GRID_SCHEMA,
    returns_schema: pl.Schema = RETURNS_SCHEMA,
) -> pl.Schema:
    """The columns and dtypes of every metadata frame of ``spec``, with rows or without:
    ``symbol`` (``symbol``: String as stored; the pure functions return a ``pl.Enum``, pass it
    to compare), ``grid_time``, ``last_trade_time``, index metrics, returns metrics, quantiles.
    Metric dtypes are what polars gives for each expression over the source schema.

    >>> list(metadata_schema(default_metadata()).items())[:4]
    [('symbol', String), ('grid_time', Datetime(time_unit='us', time_zone=None)), ('last_trade_time', Datetime(time_unit='us', time_zone=None)), ('liquidity_1d', Float64)]
    >>> metadata_schema(default_metadata())["trade_count_7d"], metadata_schema(default_metadata()).names()[-1]
    (UInt32, 'daily_vol_30d_lookback_q')
    """
    metrics = _metric_schema(spec, grid_schema, returns_schema)
    quantiles = pl.DataFrame(schema=metrics).select(_quantile_exprs(spec)).schema
    return pl.Schema({"symbol": symbol, "grid_time": pl.Datetime("us"), "last_trade_time": pl.Datetime("us"), **metrics, **quantiles})


# ------------------------------------------------------------------ decomposing expressions
@dataclass
class _Output:
    name: str
    window: timedelta
    original: pl.Expr
    rebuilt: pl.Expr | None  # over window aggregate columns; None → evaluated on raw rows
    node: Node | None = None  # the vocabulary tree (unaliased) when owned
    aggs: tuple[str, ...] = ()  # aggregate columns ``rebuilt`` reads

    @property
    def counts_rows(self) -> bool:
        """Whether the output is a bare count of rows or of non-null values."""
        return self.node is not None and (self.node[0] == "len" or (self.node[0] == "agg" and self.node[1] == "count"))


@dataclass
class Plan:
    """How a spec side (index or returns) is computed: elementwise inputs ``X_i``, the window
    aggregates of them, and every output over those aggregates (or over raw rows)."""

    inputs: list[Node] = field(default_factory=list)  # vocabulary trees of the inputs X_i
    needs_m2: set[int] = field(default_factory=set)
    aggs: dict[str, tuple[str, int | None, int]] = field(default_factory=dict)  # col → (kind, x, ddof)
    agg_nodes: dict[str, Node] = field(default_factory=dict)
    outputs: list[_Output] = field(default_factory=list)

    @property
    def generic(self) -> bool:
        """Whether some output needs raw rows (it is not in the vocabulary)."""
        return any(o.rebuilt is None for o in self.outputs)

    @property
    def fast(self) -> bool:
        """Whether every output is computed from per-hour partials."""
        return not self.generic

    def input_expr(self, i: int) -> pl.Expr:
        return _render(self.inputs[i])


def compile_plan(windows: Mapping[timedelta, Sequence[pl.Expr]]) -> Plan:
    """Map every output to aggregates of per-hour partials where it is in the vocabulary
    (:class:`MetricExpr`, or a plain ``pl.col(c).sum()``-like expression, recognised without
    polars' serialized format); other outputs are evaluated on raw rows."""
    plan = Plan()
    keys: dict[str, int] = {}

    def agg_column(node: Node) -> str:
        if node[0] == "len":
            key: tuple[str, int | None, int] = ("len", None, 0)
        else:
            _, how, child, ddof = node
            text = _describe(child)
            if text not in keys:
                keys[text] = len(plan.inputs)
                plan.inputs.append(child)
            x = keys[text]
            key = (how, x, ddof if how in ("var", "std") else 0)
            if how in ("var", "std"):
                plan.needs_m2.add(x)
        for name, k in plan.aggs.items():
            if k == key:
                return name
        name = f"__agg{len(plan.aggs)}"
        plan.aggs[name] = key
        plan.agg_nodes[name] = node
        return name

    for window, exprs in windows.items():
        for expr in exprs:
            name = expr.meta.output_name()
            owned = from_polars(expr)
            if owned is None:
                plan.outputs.append(_Output(name, window, expr, None))
                continue
            node = unalias(owned._node)
            used: list[str] = []

            def column(n: Node, used=used) -> pl.Expr:
                used.append(agg_column(n))
                return pl.col(used[-1])

            rebuilt = _render(node, agg=column)
            plan.outputs.append(_Output(name, window, expr, rebuilt, node, tuple(dict.fromkeys(used))))
    return plan


# ------------------------------------------------------------------------------ partials
def _hour(time_col: str, interval: timedelta) -> pl.Expr:
    step = to_micros(interval)
    return ((pl.col(time_col).cast(pl.Int64) // step) * step).cast(pl.Datetime("us")).alias(HOUR)


def partials(frame: pl.LazyFrame | pl.DataFrame, plan: Plan, time_col: str, interval: timedelta, last_time: bool = False) -> pl.LazyFrame:
    """Per ``(symbol, hour)``: row count, and per input ``X_i`` its non-null count ``n``, sum
    ``s`` and, where a variance needs it, centred sum of squares ``q`` (plus the latest
    ``time_col`` when ``last_time``). Hours are ``time_col`` floored to ``interval``.

    Computed eagerly with polars' in-memory engine (and returned as a ``LazyFrame``): it sums
    each hour's rows as one slice in row order, so the same rows always give the same bits
    (the streaming engine splits a group across morsels and threads, and two runs, or two
    symbols with identical rows, could differ in the last bit)."""
    aggs = [pl.len().alias(ROWS)]
    if last_time:
        aggs.append(pl.col(time_col).max().alias(LTT))
    for i in range(len(plan.inputs)):
        x = plan.input_expr(i)
        aggs += [x.count().alias(f"__x{i}_n"), x.sum().alias(f"__x{i}_s")]
        if i in plan.needs_m2:
            aggs.append((x.cast(pl.Float64) - x.cast(pl.Float64).mean()).pow(2).sum().alias(f"__x{i}_q"))
    out = frame.lazy().group_by("symbol", _hour(time_col, interval)).agg(aggs).sort("symbol", HOUR)
    return out.collect(engine="in-memory").lazy()


# ------------------------------------------------------------------------------ windows
def block_length(window: timedelta, interval: timedelta) -> int:
    """``P`` in µs: the longest divisor of a day, a multiple of Δm, not longer than the window
    (one day for windows of a day or more). Blocks ``[kP, (k+1)P)`` are epoch-aligned, so a
    window value depends on its grid time and window only (not on the run's days)."""
    w, step = to_micros(window), to_micros(interval)
    per_day = _DAY_US // step
    return max(d * step for d in range(1, per_day + 1) if per_day % d == 0 and d * step <= w)


def _block_major(frame: pl.DataFrame, time_col: str, p: int) -> pl.DataFrame:
    """``frame`` sorted by (block of ``time_col``, symbol, ``time_col``), blocks of ``p`` µs;
    unchanged when it already is (per-day partials read day after day are, for blocks of a
    day). Within a symbol, times then ascend; the rows of a (symbol, block) are contiguous."""
    if frame.height < 2:
        return frame
    t = pl.col(time_col).cast(pl.Int64)
    block = t // p
    # one integer key (block, symbol, second in block); a collision only means "sort"
    key = ((block - block.min()) * (1 << 40)) + pl.col("symbol").to_physical().cast(pl.Int64) * (1 << 17) + (t % p) // 1_000_000
    if frame.select(key.diff().slice(1).min() > 0).item() is not False:
        return frame
    return frame.sort(t // p, pl.col("symbol").to_physical(), t)


def _floor(e: pl.Expr, p: int) -> pl.Expr:
    return ((e.cast(pl.Int64) // p) * p).cast(pl.Datetime("us"))


def _mean(s: pl.Expr, n: pl.Expr) -> pl.Expr:
    return s.cast(pl.Float64) / n.cast(pl.Float64)


def _chan(a: tuple[pl.Expr, pl.Expr, pl.Expr], b: tuple[pl.Expr, pl.Expr, pl.Expr]) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(n, s, m2) of the union of two disjoint sets (Chan et al.'s parallel merge: every term
    ≥ 0, so no cancellation)."""
    (na, sa, ma), (nb, sb, mb) = a, b
    n = na + nb
    delta = _mean(sb, nb) - _mean(sa, na)
    m2 = (
        pl.when(na == 0).then(mb).when(nb == 0).then(ma)
        .otherwise(ma + mb + delta.pow(2) * (na.cast(pl.Float64) * nb.cast(pl.Float64) / n.cast(pl.Float64)))
    )
    return n, sa + sb, m2


def _chan_np(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """:func:`_chan` on numpy arrays (n as int64, s and m2 as float64)."""
    (na, sa, ma), (nb, sb, mb) = a, b
    n = na + nb
    with np.errstate(all="ignore"):
        delta = sb / nb - sa / na
        m2 = ma + mb + delta * delta * (na.astype(np.float64) * nb / n)
        s = sa + sb
    return n, s, np.where(na == 0, mb, np.where(nb == 0, ma, m2))


class _Runs:
    """Runs of consecutive equal ids (a frame's (symbol, block) groups, hours ascending),
    laid out as a zero-padded (position, run) grid so that a run is folded one row at a time,
    in its own order, vectorised across runs: every run's arithmetic depends only on its own
    values and their order (no SIMD reassociation inside a run, no differences)."""

    def __init__(self, starts: np.ndarray, rows: int):
        lengths = np.diff(np.r_[starts, rows]).astype(np.int64)
        self.runs, self.longest = len(starts), int(lengths.max()) if rows else 0
        self.rid = np.repeat(np.arange(self.runs), lengths)
        pos = np.arange(rows) - np.repeat(starts, lengths)
        self.cells = {False: pos * self.runs + self.rid, True: (np.repeat(lengths, lengths) - 1 - pos) * self.runs + self.rid}
        self.last = starts + lengths - 1

    @classmethod
    def of(cls, frame: pl.DataFrame, p: int) -> tuple[pl.DataFrame, _Runs]:
        """``frame`` block-major (sorted by block of ``HOUR`` (``p`` µs), symbol, hour; left
        as it is when it already is, as per-day partials read day after day are), with its
        ``BLOCK`` column, and its (symbol, block) runs."""
        t = frame[HOUR].to_physical().to_numpy()
        sym = frame["symbol"].to_physical().to_numpy()
        blk = t // p
        if len(t) > 1:
            d_blk, d_sym = blk[1:] - blk[:-1], sym[1:].astype(np.int64) - sym[:-1]
            if not np.all((d_blk > 0) | ((d_blk == 0) & ((d_sym > 0) | ((d_sym == 0) & (t[1:] > t[:-1]))))):
                order = np.lexsort((t, sym, blk))
                frame, t, sym, blk = frame[order], t[order], sym[order], blk[order]
        new = np.r_[True, (blk[1:] != blk[:-1]) | (sym[1:] != sym[:-1])] if len(t) else np.zeros(0, dtype=bool)
        frame = frame.with_columns(pl.Series(BLOCK, blk * p).cast(pl.Datetime("us")))
        return frame, cls(np.flatnonzero(new), len(t))

    def grid(self, values: np.ndarray, reverse: bool) -> np.ndarray:
        g = np.zeros(self.longest * self.runs, dtype=values.dtype)
        g[self.cells[reverse]] = values
        return g.reshape(self.longest, self.runs)

    def rows(self, grid: np.ndarray, reverse: bool) -> np.ndarray:
        return grid.reshape(-1)[self.cells[reverse]]

    def fold_sum(self, values: np.ndarray) -> np.ndarray:
        """Per run: the sum of its values, added in order."""
        g = self.grid(values, False)
        acc = g[0].copy() if self.longest else values[:0]
        with np.errstate(all="ignore"):  # inf + -inf is NaN, as polars sums it
            for j in range(1, self.longest):
                acc += g[j]
        return acc

    def fold_moments(self, n: np.ndarray, s: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per run: (n, s, m2) of its hours merged in order with Chan's formula."""
        if not self.longest:
            return n[:0], s[:0], q[:0]
        grids = [self.grid(v, False) for v in (n, s, q)]
        state = tuple(g[0] for g in grids)
        for j in range(1, self.longest):
            state = _chan_np(state, tuple(g[j] for g in grids))
        return state

    def running_sum(self, values: np.ndarray, reverse: bool) -> np.ndarray:
        """Per row: the sum of its run's values up to it (from it on when ``reverse``), added
        left to right (right to left)."""
        with np.errstate(all="ignore"):
            return self.rows(np.add.accumulate(self.grid(values, reverse), axis=0), reverse)

    def running_moments(self, n: np.ndarray, s: np.ndarray, q: np.ndarray, reverse: bool) -> tuple[np.ndarray, ...]:
        """Per row: (n, s, m2) of its run's hours up to it (from it on when ``reverse``),
        merged one hour at a time with Chan's formula (each state covers exactly its range,
        so a non-finite hour reaches only the states that hold it)."""
        if not self.longest:
            return n[:0], s[:0], q[:0]
        grids = [self.grid(v, reverse) for v in (n, s, q)]
        out = [np.empty_like(g) for g in grids]
        state = tuple(g[0] for g in grids)
        for j in range(self.longest):
            if j:
                state = _chan_np(state, tuple(g[j] for g in grids))
            for o, v in zip(out, state, strict=True):
                o[j] = v
        return tuple(self.rows(o, reverse) for o in out)


def _moments(frame: pl.DataFrame, keys: Sequence[str], sums: Sequence[str], xs: Sequence[int], tag: str = "") -> pl.DataFrame:
    """Per run of consecutive rows with equal ``keys`` (in order): the sums ``sums`` and, for
    each input ``i`` in ``xs``, the centred sum of squares ``__x{i}_q`` of the run in two passes
    (each row's ``q`` plus ``n·(row mean − run mean)²``: every term ≥ 0). Value columns get
    ``tag`` appended. Used for the whole blocks between the pieces of a window."""
    run = (pl.struct(*keys) if len(keys) > 1 else pl.col(keys[0])).rle_id().alias("__run")
    f = frame.with_columns(run).with_columns(pl.col("__run").set_sorted())
    cols = list(dict.fromkeys([*sums, *[f"__x{i}_{k}" for i in xs for k in ("n", "s")]]))
    runs = f.group_by("__run", maintain_order=True).agg(*[pl.col(k).first() for k in keys], *[pl.col(c).sum() for c in cols])
    if xs:
        at = f["__run"]
        means = runs.select(_mean(pl.col(f"__x{i}_s"), pl.col(f"__x{i}_n")).gather(at).alias(f"__m{i}") for i in xs)
        terms = f.hstack(means.get_columns()).select("__run", *[
            (pl.col(f"__x{i}_q") + pl.when(pl.col(f"__x{i}_n") > 0).then(
                pl.col(f"__x{i}_n").cast(pl.Float64) * (_mean(pl.col(f"__x{i}_s"), pl.col(f"__x{i}_n")) - pl.col(f"__m{i}")).pow(2)
            ).otherwise(0.0)).alias(f"__x{i}_q") for i in xs
        ])
        m2 = terms.group_by("__run", maintain_order=True).agg(pl.col(f"__x{i}_q").sum() for i in xs)
        runs = runs.hstack(m2.drop("__run").get_columns())
        cols += [f"__x{i}_q" for i in xs]
    return runs.drop("__run").rename({c: f"{c}{tag}" for c in cols})


class _Side:
    """Window aggregates of one side's per-hour partials at fixed probes (see the module
    docstring).

    Every window value is the sum of the hours it holds, in a fixed order that depends on
    ``(G, W)`` only: the suffix of ``G − W``'s block, then the whole blocks between, then the
    prefix of ``G``'s block before ``G``. Prefixes and suffixes are running sums inside their
    block (:class:`_Runs`); block totals are a block's last running sum. Variances merge the
    three pieces' (n, s, m2) with Chan's formula; a prefix's or suffix's (n, s, m2) is merged
    hour by hour inside its block, the whole blocks' m2 in two passes over block moments.
    """

    def __init__(self, parts: pl.DataFrame, plan: Plan, interval: timedelta, probes: pl.DataFrame):
        self.plan = plan
        self.interval = interval
        self.probes = probes.select("symbol", "grid_time")
        # only the sums some aggregate reads: rows (len), non-null counts (count, mean, var,
        # std), sums (sum, mean, var, std)
        needed: set[str] = set()
        for kind, x, _ in plan.aggs.values():
            if kind == "len":
                needed.add(ROWS)
            if kind in ("count", "mean", "var", "std"):
                needed.add(f"__x{x}_n")
            if kind in ("sum", "mean", "var", "std"):
                needed.add(f"__x{x}_s")
        cols: dict[str, pl.Expr] = {}
        if ROWS in needed:
            cols[ROWS] = pl.col(ROWS).cast(pl.Int64)
        for i in range(len(plan.inputs)):
            n, s = f"__x{i}_n", f"__x{i}_s"
            if n in needed:
                cols[n] = pl.col(n).cast(pl.Int64)
            if s in needed:
                cols[s] = pl.col(s).cast(pl.Float64 if parts.schema[s].is_float() else pl.Int64)
        self.sums = list(cols)
        self.xs = sorted(plan.needs_m2)
        qs = [pl.col(f"__x{i}_q").cast(pl.Float64) for i in self.xs]
        self.rows = parts.select("symbol", HOUR, *[e.alias(c) for c, e in cols.items()], *qs)
        self._per_block: dict[int, dict[str, pl.DataFrame]] = {}

    def _running(self, rows: pl.DataFrame, p: int, xs: Sequence[int], reverse: bool, tag: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """``rows`` block-major, and row-aligned with it: running sums (``{c}{tag}``) and running
        (n, s, m2) of ``xs`` (``__x{i}_{n,s,q}{tag}2``) inside each (symbol, block)."""
        rows, runs = _Runs.of(rows.drop(BLOCK, strict=False), p)
        out = {f"{c}{tag}": runs.running_sum(rows[c].to_numpy(), reverse) for c in self.sums}
        for i in xs:
            n, s, q = (rows[f"__x{i}_{k}"].cast(pl.Int64 if k == "n" else pl.Float64).to_numpy() for k in ("n", "s", "q"))
            for k, v in zip(("n", "s", "q"), runs.running_moments(n, s, q, reverse), strict=True):
                out[f"__x{i}_{k}{tag}2"] = v
        return rows, pl.DataFrame(out, schema={c: pl.Int64 if v.dtype == np.int64 else pl.Float64 for c, v in out.items()})

    def _block(self, p: int) -> dict[str, Any]:
        """Per block length: the rows (block-major), block totals, and every probe's prefix."""
        if p not in self._per_block:
            rows, runs = _Runs.of(self.rows, p)
            last = pl.Series(runs.last, dtype=pl.Int64)
            totals = {c: pl.Series(c, runs.fold_sum(rows[c].to_numpy()), dtype=pl.Int64 if rows.schema[c].is_integer() else pl.Float64) for c in self.sums}
            for i in self.xs:  # m2 of each block in two passes: hour q + n·(hour mean − block mean)²
                n, s, q = (rows[f"__x{i}_{k}"].cast(pl.Int64 if k == "n" else pl.Float64).to_numpy() for k in ("n", "s", "q"))
                with np.errstate(all="ignore"):
                    mean = (runs.fold_sum(s) / runs.fold_sum(n))[runs.rid]
                    spread = np.where(n > 0, n * (s / n - mean) ** 2, 0.0)
                totals[f"__x{i}_q"] = pl.Series(f"__x{i}_q", runs.fold_sum(q + spread), dtype=pl.Float64)
            totals_frame = rows.select("symbol", BLOCK)[last].hstack(list(totals.values()))
            keys = self.probes.with_columns(_floor(pl.col("grid_time"), p).alias("__bg"))
            sub = rows.filter(pl.col(BLOCK).is_in(keys["__bg"].unique().implode()))
            sub, running = self._running(sub, p, self.xs, reverse=False, tag="__pre")
            prefix = self._lookup(sub, running, keys, "__bg", "grid_time", "__pre", self.xs)
            self._per_block[p] = {"rows": rows, "totals": totals_frame, "prefix": prefix}
        return self._per_block[p]

    def _lookup(self, rows: pl.DataFrame, running: pl.DataFrame, keys: pl.DataFrame, block: str, at: str, tag: str, xs: Sequence[int]) -> pl.DataFrame:
        """Row-aligned with ``keys``: the running values of block ``keys[block]`` at its last
        hour before ``keys[at]`` (a prefix, tag "__pre") or its first hour from ``keys[at]`` on
        (a suffix, tag "__suf"); zeros when the block holds no such hour."""
        prefix = tag == "__pre"
        values = [f"{c}{tag}" for c in self.sums] + [f"__x{i}_{k}{tag}2" for i in xs for k in ("n", "s", "q")]
        table = rows.select("symbol", HOUR, pl.col(BLOCK).alias("__b")).hstack(running.select(values).get_columns())
        found = keys.join_asof(table, left_on=at, right_on=HOUR, by="symbol", strategy="backward" if prefix else "forward",
                               allow_exact_matches=not prefix, check_sortedness=False)
        inside = pl.col("__b") == pl.col(block)
        return found.select(pl.when(inside).then(pl.col(c)).otherwise(0).alias(c) for c in values)

    def aggregates(self, window: timedelta, aggs: Sequence[str]) -> pl.DataFrame:
        """Per probe (row-aligned with the probes): the plan's aggregate columns ``aggs`` over
        the hours in ``[G − W, G)``."""
        plan = self.plan
        p, w = block_length(window, self.interval), to_micros(window)
        b = self._block(p)
        a = pl.col("grid_time") - pl.duration(microseconds=w)
        keys = self.probes.with_columns(_floor(pl.col("grid_time"), p).alias("__bg"), a.alias("__a"), _floor(a, p).alias("__ba"))
        xs = sorted({plan.aggs[c][1] for c in aggs if plan.aggs[c][0] in ("var", "std")})
        # suffix: the hours of (G − W)'s block from G − W on (running sums from the block's end)
        sub = b["rows"].filter(pl.col(BLOCK).is_in(keys["__ba"].unique().implode()))
        sub, running = self._running(sub, p, xs, reverse=True, tag="__suf")
        frame = keys.hstack(b["prefix"].get_columns()).hstack(self._lookup(sub, running, keys, "__ba", "__a", "__suf", xs).get_columns())
        # whole blocks strictly between (G − W)'s block and G's block
        mid_cols = [*self.sums, *[f"__x{i}_q" for i in self.xs]]
        if w > p:
            spans = keys.select("symbol", "__ba", "__bg").unique(maintain_order=True)
            blocks = (
                spans.join(b["totals"], on="symbol")
                .filter((pl.col(BLOCK) > pl.col("__ba")) & (pl.col(BLOCK) < pl.col("__bg")))
                .sort("symbol", "__ba", "__bg", BLOCK)
            )
            mid = _moments(blocks, ["symbol", "__ba", "__bg"], self.sums, self.xs, "__mid")
            frame = frame.join(mid, on=["symbol", "__ba", "__bg"], how="left", maintain_order="left")
            frame = frame.with_columns(pl.col(f"{c}__mid").fill_null(0) for c in mid_cols)
        else:
            frame = frame.with_columns(pl.lit(0, dtype=self.rows.schema[c]).alias(f"{c}__mid") for c in mid_cols)

        def total(c: str) -> pl.Expr:
            return (pl.col(f"{c}__suf") + pl.col(f"{c}__mid")) + pl.col(f"{c}__pre")

        out: list[pl.Expr] = []
        for name in aggs:
            kind, x, ddof = plan.aggs[name]
            if kind == "len":
                out.append(total(ROWS).alias(name))
                continue
            n, s = total(f"__x{x}_n"), total(f"__x{x}_s")
            if kind == "sum":
                out.append(s.alias(name))
            elif kind == "count":
                out.append(n.alias(name))
            elif kind == "mean":
                out.append(pl.when(n > 0).then(_mean(s, n)).alias(name))
            else:
                piece = lambda tag, x=x: tuple(pl.col(f"__x{x}_{k}{tag}") for k in ("n", "s", "q"))  # noqa: E731
                nn, _, m2 = _chan(_chan(piece("__suf2"), piece("__mid")), piece("__pre2"))
                var = pl.when(nn > ddof).then(m2 / (nn - ddof).cast(pl.Float64))
                out.append((var.sqrt() if kind == "std" else var).alias(name))
        return frame.select(out)


def _generic(raw: pl.LazyFrame, probes: pl.DataFrame, outputs: list[_Output], time_col: str, window: timedelta) -> pl.DataFrame:
    """Exact evaluation of non-decomposable outputs over the raw rows of each window."""
    us = to_micros(window)
    keys = probes.select("symbol", "grid_time").lazy()
    rows = raw.lazy().with_columns(pl.col("symbol").cast(pl.String).cast(probes.schema["symbol"], strict=False))
    lo = probes["grid_time"].min() - window
    hi = probes["grid_time"].max()
    rows = rows.filter((pl.col(time_col) >= lo) & (pl.col(time_col) < hi))
    joined = keys.join(rows, on="symbol").filter(
        (pl.col(time_col) >= pl.col("grid_time") - pl.duration(microseconds=us)) & (pl.col(time_col) < pl.col("grid_time"))
    )
    return joined.group_by("symbol", "grid_time").agg([o.original for o in outputs]).collect()


def _zero_row_values(schema: pl.Schema, outputs: list[_Output]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema).select([o.original for o in outputs])


def evaluate_side(
    side: _Side | None, probes: pl.DataFrame, plan: Plan, source_schema: pl.Schema, raw: pl.LazyFrame | None, time_col: str,
) -> pl.DataFrame:
    """Every output of a plan at every probe; windows with no rows get polars' zero-row values."""
    zero = _zero_row_values(source_schema, plan.outputs)
    # aggregate columns in the dtypes polars gives them, so that the arithmetic on top matches
    agg_dtypes = pl.DataFrame(schema=source_schema).select(_render(n).alias(c) for c, n in plan.agg_nodes.items()).schema
    result = probes.select("symbol", "grid_time")
    for window in dict.fromkeys(o.window for o in plan.outputs):
        outputs = [o for o in plan.outputs if o.window == window]
        fast = [o for o in outputs if o.rebuilt is not None]
        slow = [o for o in outputs if o.rebuilt is None]
        if fast:
            used = list(dict.fromkeys(c for o in fast for c in o.aggs))
            aggs = side.aggregates(window, used).with_columns(pl.col(c).cast(agg_dtypes[c]) for c in used) if used else probes
            result = result.hstack(aggs.with_columns(o.rebuilt.alias(o.name) for o in fast).select(o.name for o in fast).get_columns())
        if slow:
            if raw is None:
                raise ValueError(f"metadata {[o.name for o in slow]} are not in the vocabulary and need the raw rows")
            if probes.height:
                result = result.join(_generic(raw, probes, slow, time_col, window), on=["symbol", "grid_time"], how="left", maintain_order="left")
            else:  # no rows at all (no raw rows to look at either): the dtypes only
                result = result.with_columns(pl.lit(None).alias(o.name) for o in slow)
        # no rows in the window (generic group absent): polars' value on zero rows
        result = result.with_columns(
            pl.col(o.name).fill_null(zero[o.name][0]).cast(zero.schema[o.name])
            if o.rebuilt is None and zero[o.name][0] is not None
            else pl.col(o.name).cast(zero.schema[o.name])
            for o in outputs
        )
    return result.select("symbol", "grid_time", *[o.name for o in plan.outputs])


# ----------------------------------------------------------------------------- the result
def grid_times(start_date: date, end_date: date, interval: timedelta) -> pl.Series:
    return pl.datetime_range(day_start(start_date), day_start(end_date), interval=f"{to_micros(interval)}us", closed="left", eager=True, time_unit="us").alias("grid_time")


def metadata_from_partials(
    index_parts: pl.LazyFrame | pl.DataFrame,
    returns_parts: pl.LazyFrame | pl.DataFrame | None,
    spec: MetadataSpec,
    start_date: date,
    end_date: date,
    *,
    grid_schema: pl.Schema,
    returns_schema: pl.Schema,
    raw_grid: pl.LazyFrame | None = None,
    raw_returns: pl.LazyFrame | None = None,
) -> pl.DataFrame:
    """Metadata for grid times in ``[start_date, end_date)`` from per-hour partials (see
    :func:`partials`); raw rows are needed only for aggregations outside the vocabulary.
    The result has exactly :func:`metadata_schema` (``symbol`` as a ``pl.Enum``), rows or not."""
    index_plan, returns_plan = compile_plan(spec.index), compile_plan(spec.returns)
    iparts = index_parts.lazy().collect()
    enum = iparts.schema["symbol"]
    if not isinstance(enum, pl.Enum):
        enum = pl.Enum(sorted(iparts["symbol"].cast(pl.String).unique().drop_nulls().to_list()))
        iparts = iparts.with_columns(pl.col("symbol").cast(pl.String).cast(enum))
    schema = metadata_schema(spec, enum, grid_schema=grid_schema, returns_schema=returns_schema)
    iparts = _block_major(iparts, HOUR, _DAY_US)
    times = grid_times(start_date, end_date, spec.interval)
    # row set: the symbol has a grid row with last_trade_time in [G − W_max, G); last_trade_time:
    # its latest before G (held by its latest hour before G)
    candidates = pl.DataFrame({"symbol": pl.Series(enum.categories, dtype=enum)}).join(times.to_frame(), how="cross").sort("symbol", "grid_time")
    latest = candidates.join_asof(
        iparts.select("symbol", HOUR, LTT), left_on="grid_time", right_on=HOUR, by="symbol",
        strategy="backward", allow_exact_matches=False, check_sortedness=False,
    )
    w_max = pl.duration(microseconds=to_micros(spec.max_index_window))
    probes = latest.filter(pl.col(LTT) >= pl.col("grid_time") - w_max).select("symbol", "grid_time", pl.col(LTT).alias("last_trade_time"))
    iside = _Side(iparts, index_plan, spec.interval, probes)
    result = probes.hstack(evaluate_side(iside, probes, index_plan, grid_schema, raw_grid, "last_trade_time").drop("symbol", "grid_time"))
    if spec.returns:
        if returns_parts is None:
            returns_parts = partials(pl.LazyFrame(schema=returns_schema), returns_plan, "returns_grid_time", spec.interval)
        rparts = returns_parts.lazy().collect()
        # the probes in the returns partials' symbol dtype (a cast of a few thousand probes, not
        # of every hourly row); a symbol without returns matches no row
        rdtype = rparts.schema["symbol"]
        if not isinstance(rdtype, pl.Enum):
            rparts, rdtype = rparts.with_columns(pl.col("symbol").cast(pl.String).cast(enum, strict=False)), enum
        rprobes = probes if rdtype == enum else probes.with_columns(pl.col("symbol").cast(pl.String).cast(rdtype, strict=False))
        rside = _Side(rparts.filter(pl.col("symbol").is_not_null()), returns_plan, spec.interval, rprobes)
        rraw = None
        if raw_returns is not None:
            rraw = raw_returns.lazy().with_columns(pl.col("symbol").cast(pl.String))
        returns = evaluate_side(rside, rprobes, returns_plan, returns_schema, rraw, "returns_grid_time")
        result = result.hstack(returns.drop("symbol", "grid_time"))
    result = result.with_columns(pl.col(c).fill_nan(None) for c, t in result.schema.items() if t.is_float())
    if spec.quantile_columns:
        result = result.with_columns(e.over("grid_time") for e in _quantile_exprs(spec))
    return result.sort("symbol", "grid_time").select(pl.col(c).cast(t) for c, t in schema.items())


def compute_metadata(
    grid: pl.LazyFrame | pl.DataFrame,
    returns: pl.LazyFrame | pl.DataFrame | None,
    spec: MetadataSpec,
    start_date: date,
    end_date: date,
) -> pl.DataFrame:
    """SPEC.md's metadata for grid times in ``[start_date, end_date)``.

    ``grid`` must hold the days the index windows reach (``start_date − W_max`` on) and
    ``returns`` those the returns windows reach; what is not there counts as no rows.
    Columns: ``symbol, grid_time, last_trade_time``, index metrics, returns metrics,
    quantiles (exactly :func:`metadata_schema` for the inputs' schemas, ``symbol`` as a
    ``pl.Enum``); rows sorted by ``(symbol, grid_time)``.

    >>> compute_metadata(grid_lf, returns_lf, default_metadata("10m"), date(2025, 1, 1), date(2025, 2, 1))  # doctest: +SKIP
    """
    index_plan, returns_plan = compile_plan(spec.index), compile_plan(spec.returns)
    grid = grid.lazy()
    start, end = day_start(start_date), day_start(end_date)
    grid_schema = grid.collect_schema()
    g = grid.filter((pl.col("last_trade_time") >= start - spec.max_index_window) & (pl.col("last_trade_time") < end))
    iparts = partials(g, index_plan, "last_trade_time", spec.interval, last_time=True)
    if returns is None:
        returns = pl.LazyFrame(schema=RETURNS_SCHEMA)
    returns = returns.lazy()
    returns_schema = returns.collect_schema()
    r = returns.filter(
        (pl.col("returns_grid_time") >= start - spec.max_returns_window) & (pl.col("returns_grid_time") < end)
    )
    rparts = partials(r, returns_plan, "returns_grid_time", spec.interval)
    return metadata_from_partials(
        iparts, rparts, spec, start_date, end_date, grid_schema=grid_schema, returns_schema=returns_schema,
        raw_grid=g if index_plan.generic else None, raw_returns=r if returns_plan.generic else None,
    )


# ------------------------------------------------------------------------------- checks
METADATA_CHECKS = {
    "quantiles_in_unit_interval": "every quantile column lies in (0, 1]",
    "sample_sizes_bounded": "a count of returns never exceeds window / returns interval",
    "unique_symbol_grid_time": "one row per (symbol, grid_time)",
}


def metadata_violations(frame: pl.DataFrame, spec: MetadataSpec) -> dict[str, int]:
    """Rows breaking the metadata invariants of :data:`METADATA_CHECKS` (0 everywhere when valid)."""
    q_cols = [f"{c}_q" for c in spec.quantile_columns if f"{c}_q" in frame.columns]
    bad_q = frame.select(pl.sum_horizontal([((pl.col(c) <= 0) | (pl.col(c) > 1)).fill_null(False) for c in q_cols]).sum()).item() if q_cols else 0
    bad_n = 0
    for out in compile_plan(spec.returns).outputs:
        if out.counts_rows and out.name in frame.columns:
            limit = to_micros(out.window) // to_micros(spec.returns_interval)
            bad_n += frame.filter(pl.col(out.name) > limit).height
    dupes = frame.height - frame.select(pl.struct("symbol", "grid_time").n_unique()).item()
    return {"quantiles_in_unit_interval": int(bad_q or 0), "sample_sizes_bounded": bad_n, "unique_symbol_grid_time": dupes}
