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
suffix). The suffix is summed from its block's end, the whole blocks' totals in block order,
the prefix from its block's start, and the three are added in that order (``(suffix + blocks)
+ prefix``): every window value is a sum of its own hours only, in an order fixed by ``(G, W)``
(never a difference of running totals). So exact inputs give exact outputs (all-zero returns
have a volatility of exactly 0.0), identical symbols get identical values and quantiles, a
non-finite value reaches only the windows holding it, the error does not grow with the history,
and a partition computed alone or in a batch gives the same bits. Variances merge the pieces'
(count, mean, centred sum of squares) with Chan's formula (a prefix or suffix one hour at a
time, the whole blocks in two passes over block moments). The work per daily partition is the
hours read plus, per window, one lookup per grid time and a sum over ``W / P`` block totals per
symbol and day, whatever the history.
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
    "MetadataSpec",
    "MetricExpr",
    "Plan",
    "col",
    "compile_plan",
    "compute_metadata",
    "default_metadata",
    "grid_times",
    "lit",
    "metadata_from_partials",
    "metadata_schema",
    "metadata_violations",
    "n_rows",
    "partials",
    "when",
]

HOUR = "__hour"
ROWS = "__rows"
LTT = "__ltt"
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
    """Output dtypes of the metrics, as polars resolves them over the source schemas (schema
    resolution only: nothing is evaluated)."""
    out: dict[str, pl.DataType] = {}
    for windows, schema in ((spec.index, grid_schema), (spec.returns, returns_schema)):
        exprs = _exprs(windows)
        try:
            out.update(pl.LazyFrame(schema=schema).select(exprs).collect_schema())
        except pl.exceptions.PolarsError:
            if strict:
                raise
            for e in exprs:
                try:
                    out.update(pl.LazyFrame(schema=schema).select(e).collect_schema())
                except pl.exceptions.PolarsError:
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
    quantiles = pl.LazyFrame(schema=metrics).select(_quantile_exprs(spec)).collect_schema()
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

    @property
    def sums(self) -> list[str]:
        """The per-hour sums the aggregates read: rows (len), non-null counts (count, mean,
        var, std) and sums (sum, mean, var, std) of the inputs."""
        needed: set[str] = set()
        for kind, x, _ in self.aggs.values():
            if kind == "len":
                needed.add(ROWS)
            if kind in ("count", "mean", "var", "std"):
                needed.add(f"__x{x}_n")
            if kind in ("sum", "mean", "var", "std"):
                needed.add(f"__x{x}_s")
        return [c for c in [ROWS, *[f"__x{i}_{k}" for i in range(len(self.inputs)) for k in ("n", "s")]] if c in needed]


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
    """Per ``(symbol, hour)``: the row count, and per input ``X_i`` its non-null count ``n``,
    sum ``s`` and centred sum of squares ``q``, each only where an aggregate needs it
    (:attr:`Plan.sums`; ``q`` for variances), plus the latest ``time_col`` when ``last_time``.
    Hours are ``time_col`` floored to ``interval``.

    Computed eagerly with polars' in-memory engine (and returned as a ``LazyFrame``): it sums
    each hour's rows as one slice in row order, so the same rows always give the same bits
    (the streaming engine splits a group across morsels and threads, and two runs, or two
    symbols with identical rows, could differ in the last bit)."""
    sums = plan.sums
    aggs = [pl.len().alias(ROWS)] if ROWS in sums else []
    if last_time:
        aggs.append(pl.col(time_col).max().alias(LTT))
    for i in range(len(plan.inputs)):
        x = plan.input_expr(i)
        if f"__x{i}_n" in sums:
            aggs.append(x.count().alias(f"__x{i}_n"))
        if f"__x{i}_s" in sums:
            aggs.append(x.sum().alias(f"__x{i}_s"))
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


def _chan(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """(n, s, m2) of the union of two disjoint sets, merged with Chan et al.'s formula
    ``m2 = m2a + m2b + δ²·na·nb/n`` (every term ≥ 0: no cancellation); n int64, s and m2
    float64. An empty side leaves the other as it is."""
    (na, sa, ma), (nb, sb, mb) = a, b
    with np.errstate(all="ignore"):
        delta = sb / nb - sa / na
        m2 = ma + mb + delta * delta * (na.astype(np.float64) * nb / (na + nb))
        s = sa + sb
    return na + nb, s, np.where(na == 0, mb, np.where(nb == 0, ma, m2))


def _running(grid: np.ndarray, reverse: bool) -> np.ndarray:
    """Running sums down the position axis of a (position, run) grid, added one position at
    a time (from the last position when ``reverse``): sequential, never a difference."""
    with np.errstate(all="ignore"):  # inf + -inf is NaN, as in a polars sum
        if reverse:
            return np.add.accumulate(grid[::-1], axis=0)[::-1]
        return np.add.accumulate(grid, axis=0)


def _column_sums(grid: np.ndarray) -> np.ndarray:
    """Per column of a (position, column) grid: its values added top to bottom, one position
    at a time (a fixed order, whatever the memory layout)."""
    acc = grid[0].copy() if grid.shape[0] else np.zeros(grid.shape[1], dtype=grid.dtype)
    with np.errstate(all="ignore"):
        for j in range(1, grid.shape[0]):
            acc += grid[j]
    return acc


def _running_moments(n: np.ndarray, s: np.ndarray, q: np.ndarray, reverse: bool) -> tuple[np.ndarray, ...]:
    """Running (n, s, m2) down the position axis, one hour merged at a time with
    :func:`_chan` (each state covers exactly its own hours, so a non-finite hour reaches only
    the states that hold it)."""
    out = tuple(np.empty_like(g) for g in (n, s, q))
    order = range(n.shape[0] - 1, -1, -1) if reverse else range(n.shape[0])
    state = None
    for j in order:
        cell = (n[j], s[j], q[j])
        state = cell if state is None else _chan(state, cell)
        for o, v in zip(out, state, strict=True):
            o[j] = v
    return out


class _Layout:
    """One side's per-hour partials on a grid per block length ``P``: a column per run (a
    (symbol, block) with rows), a row per hour offset in the block (``P / Δm`` of them), zeros
    where an hour has no row. A block's total is its column summed top to bottom."""

    def __init__(self, side: _Side, p: int):
        self.p, self.length = p, p // side.step
        hour = side.t // side.step
        blk = hour // self.length
        off = hour - blk * self.length
        key = blk * side.ncat + side.sym
        step = np.diff(key)
        # rows are usually block-major already (per-day partials read day after day): then a
        # (symbol, block)'s hours are contiguous and strictly ascending, hence distinct
        if not np.all((step > 0) | ((step == 0) & (np.diff(off) > 0))):
            order = np.lexsort((off, key))
            key, off = key[order], off[order]
            step = np.diff(key)
            if np.any((step == 0) & (np.diff(off) == 0)):
                raise ValueError("per-hour partials hold the same (symbol, hour) more than once")
        else:
            order = None
        starts = np.flatnonzero(np.r_[True, step != 0]) if len(key) else np.zeros(0, dtype=np.int64)
        self.keys = key[starts]
        self.runs = len(starts)
        self.grids: dict[str, np.ndarray] = {}
        if order is None and len(key) == self.runs * self.length:
            # every (symbol, block) has every hour (gridded returns always do): the rows
            # already are the grid, transposed
            for c, values in side.values.items():
                self.grids[c] = values.reshape(self.runs, self.length).T
        else:
            run = np.repeat(np.arange(self.runs), np.diff(np.append(starts, len(key))))
            cell = off * self.runs + run
            for c, values in side.values.items():
                g = np.zeros(self.length * self.runs, dtype=values.dtype)
                g[cell] = values if order is None else values[order]
                self.grids[c] = g.reshape(self.length, self.runs)
        self.totals = {c: _column_sums(self.grids[c]) for c in side.sums}
        for i in side.xs:  # a block's m2 in two passes: hour q + n·(hour mean − block mean)²
            n, s, q = (self.grids[f"__x{i}_{k}"] for k in ("n", "s", "q"))
            with np.errstate(all="ignore"):
                mean = self.totals[f"__x{i}_s"] / self.totals[f"__x{i}_n"]
                spread = np.where(n > 0, n * (s / n - mean) ** 2, 0.0) + q
            self.totals[f"__x{i}_q"] = _column_sums(spread)

    def find(self, blk: np.ndarray, sym: np.ndarray, ncat: int) -> tuple[np.ndarray, np.ndarray]:
        """(run index, whether the run exists) of (block index, symbol code) pairs."""
        key = blk * ncat + sym
        at = np.minimum(np.searchsorted(self.keys, key), max(self.runs - 1, 0))
        found = (self.runs > 0) & (sym >= 0) & (self.keys[at] == key) if self.runs else np.zeros(len(key), dtype=bool)
        return at, found


class _Side:
    """Window aggregates of one side's per-hour partials at fixed probes (see the module
    docstring).

    Every window value is the sum of the hours it holds, in a fixed order that depends on
    ``(G, W)`` only: the suffix of ``G − W``'s block (its hours from ``G − W`` on, summed from
    the block's end), then the whole blocks between (their totals, in block order), then the
    prefix of ``G``'s block (its hours before ``G``, summed from the block's start). Variances
    merge the three pieces' (n, s, m2) with Chan's formula: a prefix's or suffix's (n, s, m2)
    merges its hours one at a time, the whole blocks' m2 comes in two passes over block
    moments. Everything is numpy on a (position, run) grid per block length (:class:`_Layout`).
    """

    def __init__(self, parts: pl.DataFrame, plan: Plan, interval: timedelta, probes: pl.DataFrame):
        self.plan = plan
        self.step = to_micros(interval)
        self.xs = sorted(plan.needs_m2)
        self.sums = plan.sums
        self.values: dict[str, np.ndarray] = {}
        for c in [*self.sums, *[f"__x{i}_q" for i in self.xs]]:
            column = parts[c] if not parts[c].null_count() else parts[c].fill_null(0)
            integer = c == ROWS or c.endswith("_n") or (c.endswith("_s") and parts.schema[c].is_integer())
            self.values[c] = column.to_numpy().astype(np.int64 if integer else np.float64, copy=False)
        self.sym = parts["symbol"].to_physical().to_numpy().astype(np.int64)
        symbol = parts.schema["symbol"]
        self.ncat = max(len(symbol.categories) if isinstance(symbol, pl.Enum) else 0, int(self.sym.max(initial=-1)) + 1)
        self.t = parts[HOUR].to_physical().to_numpy()
        self.psym = probes["symbol"].to_physical().cast(pl.Int64).fill_null(-1).to_numpy()
        self.pt = probes["grid_time"].to_physical().to_numpy()
        self._layouts: dict[int, _Layout] = {}
        self._prefix: dict[int, dict[str, np.ndarray]] = {}

    def layout(self, p: int) -> _Layout:
        if p not in self._layouts:
            self._layouts[p] = _Layout(self, p)
        return self._layouts[p]

    def _piece(self, lay: _Layout, blk: np.ndarray, off: np.ndarray, reverse: bool) -> dict[str, np.ndarray]:
        """Per probe: running values of run (symbol, ``blk``) at hour offset ``off`` —
        inclusive from the block's end (a suffix, ``reverse``), or up to ``off − 1`` from its
        start (a prefix: hours before the probe); zeros where there is no such run or hour.
        Running values are computed only for the runs looked up."""
        run, found = lay.find(blk, self.psym, self.ncat)
        if not reverse:
            off = off - 1
            found = found & (off >= 0)
        cols, col = np.unique(run[found], return_inverse=True)
        if not len(cols):
            zeros = {c: np.zeros(len(run), dtype=lay.grids[c].dtype) for c in self.sums}
            return zeros | {f"__x{i}_{k}2": np.zeros(len(run), dtype=lay.grids[f"__x{i}_{k}"].dtype) for i in self.xs for k in ("n", "s", "q")}
        at = (np.clip(off[found], 0, lay.length - 1), col)
        out: dict[str, np.ndarray] = {}
        for c in self.sums:
            out[c] = np.zeros(len(run), dtype=lay.grids[c].dtype)
            out[c][found] = _running(lay.grids[c][:, cols], reverse)[at]
        for i in self.xs:
            states = _running_moments(*(lay.grids[f"__x{i}_{k}"][:, cols] for k in ("n", "s", "q")), reverse=reverse)
            for k, g in zip(("n", "s", "q"), states, strict=True):
                out[f"__x{i}_{k}2"] = np.zeros(len(run), dtype=g.dtype)
                out[f"__x{i}_{k}2"][found] = g[at]
        return out

    def _middle(self, lay: _Layout, ba: np.ndarray, bg: np.ndarray) -> dict[str, np.ndarray]:
        """Per probe: the totals of the blocks strictly between ``ba`` and ``bg`` (block
        indices), added in block order; m2 in two passes over the blocks' (n, s, m2)."""
        if not len(ba) or not lay.runs:
            return {c: np.zeros(len(ba), dtype=lay.totals[c].dtype) for c in lay.totals}
        # probes sharing (symbol, ba, bg) share the middle: computed once per triple
        lo, gap = bg.min(), bg - ba
        key = (self.psym * (bg.max() - lo + 1) + (bg - lo)) * (gap.max() + 1) + gap
        _, first, back = np.unique(key, return_index=True, return_inverse=True)
        sym, start, span = self.psym[first], ba[first], gap[first] - 1
        j = np.arange(1, int(span.max(initial=0)) + 1)
        out: dict[str, np.ndarray] = {}
        if not len(j):
            return {c: np.zeros(len(ba), dtype=lay.totals[c].dtype) for c in lay.totals}
        run, found = lay.find((start[:, None] + j).reshape(-1), np.repeat(sym, len(j)), self.ncat)
        run, ok = run.reshape(-1, len(j)), (found.reshape(-1, len(j)) & (j <= span[:, None]))
        with np.errstate(all="ignore"):
            for c in self.sums:
                out[c] = _column_sums(np.where(ok, lay.totals[c][run], 0).T)
            for i in self.xs:
                mean = out[f"__x{i}_s"] / out[f"__x{i}_n"]
                nb, sb, qb = (lay.totals[f"__x{i}_{k}"][run] for k in ("n", "s", "q"))
                out[f"__x{i}_q"] = _column_sums(np.where(ok & (nb > 0), qb + nb * (sb / nb - mean[:, None]) ** 2, 0.0).T)
        return {c: v[back] for c, v in out.items()}

    def aggregates(self, window: timedelta, aggs: Sequence[str]) -> pl.DataFrame:
        """Per probe (row-aligned with the probes): the plan's aggregate columns ``aggs`` over
        the hours in ``[G − W, G)``."""
        plan = self.plan
        p, w = block_length(window, timedelta(microseconds=self.step)), to_micros(window)
        lay = self.layout(p)
        g, a = self.pt, self.pt - w
        bg, ba = g // p, a // p
        if p not in self._prefix:
            self._prefix[p] = self._piece(lay, bg, (g % p) // self.step, reverse=False)
        pre = self._prefix[p]
        suf = self._piece(lay, ba, (a % p) // self.step, reverse=True)
        if w > p:
            mid = self._middle(lay, ba, bg)
        else:  # no whole block between
            mid = {c: np.zeros(len(g), dtype=self.values[c].dtype) for c in [*self.sums, *[f"__x{i}_q" for i in self.xs]]}
        with np.errstate(all="ignore"):
            total = {c: (suf[c] + mid[c]) + pre[c] for c in self.sums}
            out: dict[str, np.ndarray] = {}
            for name in aggs:
                kind, x, ddof = plan.aggs[name]
                if kind == "len":
                    out[name] = total[ROWS]
                    continue
                n, s = total.get(f"__x{x}_n"), total.get(f"__x{x}_s")
                if kind == "sum":
                    out[name] = s
                elif kind == "count":
                    out[name] = n
                elif kind == "mean":
                    out[name] = np.where(n > 0, s / n, np.nan)
                else:
                    piece = lambda d, x=x: tuple(d[f"__x{x}_{k}2"] for k in ("n", "s", "q"))
                    middle = tuple(mid[f"__x{x}_{k}"] for k in ("n", "s", "q"))
                    nn, _, m2 = _chan(_chan(piece(suf), middle), piece(pre))
                    var = np.where(nn > ddof, m2 / (nn - ddof), np.nan)
                    out[name] = np.sqrt(var) if kind == "std" else var
        frame = pl.DataFrame({k: pl.Series(k, v) for k, v in out.items()})
        # "no value" (an empty mean or variance) is null, as polars gives it; NaN from data stays NaN
        empty = {
            name: (total[f"__x{plan.aggs[name][1]}_n"] <= (plan.aggs[name][2] if plan.aggs[name][0] in ("var", "std") else 0))
            for name in aggs
            if plan.aggs[name][0] in ("mean", "var", "std")
        }
        return frame.with_columns(pl.when(pl.Series(v)).then(None).otherwise(pl.col(k)).alias(k) for k, v in empty.items())


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
    side: _Side | None,
    probes: pl.DataFrame,
    plan: Plan,
    source_schema: pl.Schema,
    raw: pl.LazyFrame | None,
    time_col: str,
) -> pl.DataFrame:
    """Every output of a plan at every probe; windows with no rows get polars' zero-row values."""
    slow_outputs = [o for o in plan.outputs if o.rebuilt is None]
    zero = _zero_row_values(source_schema, slow_outputs) if slow_outputs else pl.DataFrame()
    dtypes = pl.LazyFrame(schema=source_schema).select(o.original for o in plan.outputs).collect_schema()
    # aggregate columns in the dtypes polars gives them, so that the arithmetic on top matches
    agg_dtypes = pl.LazyFrame(schema=source_schema).select(_render(n).alias(c) for c, n in plan.agg_nodes.items()).collect_schema()
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
            pl.col(o.name).fill_null(zero[o.name][0]).cast(dtypes[o.name])
            if o.rebuilt is None and zero[o.name][0] is not None
            else pl.col(o.name).cast(dtypes[o.name])
            for o in outputs
        )
    return result.select("symbol", "grid_time", *[o.name for o in plan.outputs])


# ----------------------------------------------------------------------------- the result
def grid_times(start_date: date, end_date: date, interval: timedelta) -> pl.Series:
    return pl.datetime_range(
        day_start(start_date), day_start(end_date), interval=f"{to_micros(interval)}us", closed="left", eager=True, time_unit="us"
    ).alias("grid_time")


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
        iparts.select("symbol", HOUR, LTT),
        left_on="grid_time",
        right_on=HOUR,
        by="symbol",
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
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

    >>> from datetime import date, datetime
    >>> grid = pl.DataFrame({"symbol": ["BTC", "BTC", "ETH"],
    ...     "last_trade_time": [datetime(2025, 1, 1, 0, 9), datetime(2025, 1, 1, 0, 19), datetime(2025, 1, 1, 0, 15)],
    ...     "volume_quote": [1000.0, 3000.0, 500.0]})
    >>> spec = MetadataSpec(index={"1h": [col("volume_quote").sum().alias("liq_1h")]}, returns={},
    ...                     quantiles=["liq_1h"], interval="1h", returns_interval="10m")
    >>> out = compute_metadata(grid, None, spec, date(2025, 1, 1), date(2025, 1, 2))
    >>> out.columns
    ['symbol', 'grid_time', 'last_trade_time', 'liq_1h', 'liq_1h_q']
    >>> out.select("symbol", pl.col("grid_time").dt.hour(), "liq_1h", "liq_1h_q").rows()
    [('BTC', 1, 4000.0, 1.0), ('ETH', 1, 500.0, 0.5)]

    With SPEC.md's metadata: ``compute_metadata(grid_lf, returns_lf, default_metadata("10m"), start, end)``.
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
    r = returns.filter((pl.col("returns_grid_time") >= start - spec.max_returns_window) & (pl.col("returns_grid_time") < end))
    rparts = partials(r, returns_plan, "returns_grid_time", spec.interval)
    return metadata_from_partials(
        iparts,
        rparts,
        spec,
        start_date,
        end_date,
        grid_schema=grid_schema,
        returns_schema=returns_schema,
        raw_grid=g if index_plan.generic else None,
        raw_returns=r if returns_plan.generic else None,
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
