"""Rolling metadata: pure polars, no Dagster.

For grid times ``G = D + kΔm`` the metadata of a symbol are the spec's aggregations over its
grid rows with ``last_trade_time ∈ [G − W, G)`` (index metrics) and over its gridded returns
with ``returns_grid_time ∈ [G − W, G − Δr]`` (returns metrics), then cross-sectional quantiles
at each ``G``. See SPEC.md "Rolling metadata".

**Why it is cheap whatever the lookback.** Every aggregation of the spec whose input is an
elementwise expression ``X`` of the source columns and whose kind is ``sum``, ``count``,
``len``, ``mean``, ``var`` or ``std`` is computed from per-hour moments of ``X`` (row count,
non-null count, sum, centred sum of squares): :func:`partials`. A window is then a difference
of cumulative sums at ``G`` and ``G − W`` (O(rows), independent of ``W``), and the rest of the
expression (``sqrt``, ratios, scaling) is evaluated on the window aggregates. The per-hour
partials of a day are their own assets, so a daily partition reads 7 days of hourly rows, not
7 days of 5-second grids. Any other aggregation (``max``, ``median``, ``quantile``, a
``filter`` ...) is evaluated exactly on the raw rows of each window instead (slower, same
results).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from mnemo_assets.intervals import (
    ONE_DAY,
    day_interval,
    day_start,
    interval_name,
    to_micros,
    to_timedelta,
)
from mnemo_assets.returns import RETURNS_SCHEMA

HOUR = "__hour"
ROWS = "__rows"
LTT = "__ltt"

_DECOMPOSABLE = {"Sum", "Mean", "Std", "Var", "Count"}
# elementwise function names (serialized polars expressions) an aggregation input may use
_ELEMENTWISE_FUNCTIONS = {
    "Abs", "Pow", "Log", "Log1p", "Exp", "Negate", "Sign", "Round", "Clip", "FillNull", "Boolean",
    "Trigonometry", "Sqrt", "Cbrt", "Floor", "Ceil", "IsNan", "IsFinite", "IsInfinite", "FillNan",
}
_ELEMENTWISE_NODES = {"Column", "Literal", "BinaryExpr", "Cast", "Ternary", "Alias"}


# --------------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class MetadataSpec:
    """What the metadata hold: windows → polars aggregation expressions, and quantiles.

    ``index`` aggregates grid rows, ``returns`` aggregates gridded returns; each output must
    have a unique name (``.alias``). ``quantiles`` selects the columns that get a ``_q``
    cross-sectional quantile. ``interval`` (Δm, default 1h) is the spacing of grid times,
    ``returns_interval`` (Δr) that of the gridded returns. Windows must be multiples of Δm.

    For the seed's code, ``spec["by_symbol_index"]`` and ``spec["accum_returns"]`` work.
    """

    index: Mapping[timedelta, Sequence[pl.Expr]]
    returns: Mapping[timedelta, Sequence[pl.Expr]]
    quantiles: pl.Expr | None = None
    interval: timedelta = timedelta(hours=1)
    returns_interval: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        object.__setattr__(self, "interval", day_interval(self.interval, "metadata interval"))
        object.__setattr__(self, "returns_interval", day_interval(self.returns_interval, "returns interval"))
        for name in ("index", "returns"):
            windows = {to_timedelta(w): list(exprs) for w, exprs in getattr(self, name).items()}
            for w in windows:
                if to_micros(w) % to_micros(self.interval):
                    raise ValueError(f"{name} window {interval_name(w)} is not a multiple of the metadata interval {interval_name(self.interval)}")
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

    @property
    def version(self) -> str:
        """A short hash of everything that determines the values (the asset's code version)."""
        parts = [interval_name(self.interval), interval_name(self.returns_interval)]
        for name in ("index", "returns"):
            for w, exprs in getattr(self, name).items():
                parts.append(f"{name}:{interval_name(w)}")
                parts += [e.meta.serialize(format="json") for e in exprs]
        parts.append(self.quantiles.meta.serialize(format="json") if self.quantiles is not None else "-")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def default_metadata(returns_interval: str | timedelta = "10m", interval: str | timedelta = "1h") -> MetadataSpec:
    """The seed's ``default_metadata``: 1d/7d liquidity, order-flow imbalance and trade counts,
    7d/30d drift, volatility and sample size of the returns, quantiles of liquidity and vol.

    >>> spec = default_metadata("10m")
    >>> spec.index_columns[:2], spec.returns_columns[-1]
    (['liquidity_1d', 'sqrtliq_1d'], 'vol_ssize_30d_lookback')
    """
    returns_interval = to_timedelta(returns_interval)
    liquidity = pl.col("volume_quote").sum()
    sqrtliq = liquidity.pow(0.5)
    excess_buy_ratio = (pl.col("taker_buy_volume_base") - pl.col("taker_sell_volume_base")).sum() / pl.col("volume_base").sum()
    trade_count = pl.col("trade_count").sum()
    n = ONE_DAY / returns_interval
    drift = pl.col("return").mean() * n
    vol = pl.col("return").std() * n**0.5
    ssize = pl.col("return").count()
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


# ------------------------------------------------------------------ decomposing expressions
@dataclass
class _Output:
    name: str
    window: timedelta
    original: pl.Expr
    rebuilt: pl.Expr | None  # over window aggregate columns; None → evaluated on raw rows


@dataclass
class Plan:
    """How a spec side (index or returns) is computed."""

    inputs: list[str] = field(default_factory=list)  # serialized elementwise inputs X_i
    needs_m2: set[int] = field(default_factory=set)
    aggs: dict[str, tuple[str, int | None, int]] = field(default_factory=dict)  # col → (kind, x, ddof)
    outputs: list[_Output] = field(default_factory=list)

    @property
    def generic(self) -> bool:
        """Whether some output needs raw rows (it is not decomposable)."""
        return any(o.rebuilt is None for o in self.outputs)

    def input_expr(self, i: int) -> pl.Expr:
        return pl.Expr.deserialize(io.StringIO(self.inputs[i]), format="json")


def _elementwise(node: Any) -> bool:
    if not isinstance(node, dict) or len(node) != 1:
        return isinstance(node, (str, int, float, bool)) or node is None
    (kind, body), = node.items()
    if kind == "Function":
        fn = body.get("function")
        name = fn if isinstance(fn, str) else next(iter(fn)) if isinstance(fn, dict) else None
        return name in _ELEMENTWISE_FUNCTIONS and all(_elementwise(i) for i in body.get("input", []))
    if kind not in _ELEMENTWISE_NODES:
        return False
    if kind in ("Column", "Literal"):
        return True
    if kind == "BinaryExpr":
        return _elementwise(body["left"]) and _elementwise(body["right"])
    if kind == "Cast":
        return _elementwise(body["expr"])
    if kind == "Ternary":
        return all(_elementwise(body[k]) for k in ("predicate", "truthy", "falsy"))
    if kind == "Alias":
        return _elementwise(body[0])
    return False  # pragma: no cover


def compile_plan(windows: Mapping[timedelta, Sequence[pl.Expr]]) -> Plan:
    """Decompose every aggregation into per-hour moments where possible."""
    plan = Plan()

    def x_index(node: Any) -> int:
        text = json.dumps(node, sort_keys=True)
        if text not in plan.inputs:
            plan.inputs.append(text)
        return plan.inputs.index(text)

    def agg_column(kind: str, x: int | None, ddof: int) -> str:
        key = (kind, x, ddof)
        for col, k in plan.aggs.items():
            if k == key:
                return col
        col = f"__agg{len(plan.aggs)}"
        plan.aggs[col] = key
        if kind in ("Std", "Var") and x is not None:
            plan.needs_m2.add(x)
        return col

    def rewrite(node: Any) -> tuple[Any, bool]:
        """(node with aggregations replaced by columns, decomposable?)"""
        if node == "Len" or node == {"Len": None}:
            return {"Column": agg_column("Len", None, 0)}, True
        if isinstance(node, list):
            parts = [rewrite(n) for n in node]
            return [p[0] for p in parts], all(p[1] for p in parts)
        if not isinstance(node, dict):
            return node, True
        if len(node) == 1 and "Agg" in node:
            (kind, body), = node["Agg"].items()
            if kind not in _DECOMPOSABLE:
                return node, False
            if kind in ("Std", "Var"):
                x, ddof = body[0], int(body[1])
            elif kind == "Count":
                x, ddof = body["input"], 0
                if body.get("include_nulls"):
                    kind = "Len" if _elementwise(x) else kind
            else:
                x, ddof = body, 0
            if not _elementwise(x):
                return node, False
            return {"Column": agg_column(kind, None if kind == "Len" else x_index(x), ddof)}, True
        if len(node) == 1 and "Column" in node:
            return node, False  # a bare column outside any aggregation is not an aggregate
        out, ok = {}, True
        for k, v in node.items():
            out[k], sub_ok = rewrite(v)
            ok = ok and sub_ok
        return out, ok

    for window, exprs in windows.items():
        for expr in exprs:
            tree = json.loads(expr.meta.serialize(format="json"))
            rebuilt_tree, ok = rewrite(tree)
            rebuilt = pl.Expr.deserialize(io.StringIO(json.dumps(rebuilt_tree)), format="json") if ok else None
            plan.outputs.append(_Output(expr.meta.output_name(), window, expr, rebuilt))
    return plan


# ------------------------------------------------------------------------------ partials
def _hour(time_col: str, interval: timedelta) -> pl.Expr:
    step = to_micros(interval)
    return ((pl.col(time_col).cast(pl.Int64) // step) * step).cast(pl.Datetime("us")).alias(HOUR)


def partials(frame: pl.LazyFrame | pl.DataFrame, plan: Plan, time_col: str, interval: timedelta, last_time: bool = False) -> pl.LazyFrame:
    """Per ``(symbol, hour)``: row count, and per input ``X_i`` its non-null count ``n``, sum
    ``s`` and, where a variance needs it, centred sum of squares ``q`` (plus the latest
    ``time_col`` when ``last_time``). Hours are ``time_col`` floored to ``interval``."""
    aggs = [pl.len().alias(ROWS)]
    if last_time:
        aggs.append(pl.col(time_col).max().alias(LTT))
    for i in range(len(plan.inputs)):
        x = plan.input_expr(i)
        aggs += [x.count().alias(f"__x{i}_n"), x.sum().alias(f"__x{i}_s")]
        if i in plan.needs_m2:
            aggs.append((x.cast(pl.Float64) - x.cast(pl.Float64).mean()).pow(2).sum().alias(f"__x{i}_q"))
    return frame.lazy().group_by("symbol", _hour(time_col, interval)).agg(aggs).sort("symbol", HOUR)


# ------------------------------------------------------------------------------ windows
class _Cumulative:
    """Per-symbol cumulative sums of one side's partials, for lookups at ``G`` and ``G − W``.

    Only hours in the bands ``[start, end)`` and ``[start − W, end − W)`` (where lookups fall)
    keep hourly resolution; the rows between bands collapse to one row per symbol and segment,
    which leaves every prefix sum at a band hour unchanged and makes the work proportional to
    the hours looked up, not to the lookback. Non-finite sums are counted apart, so they poison
    only the windows that hold them; variances use a per-symbol shift ``K`` (the symbol's mean)
    so that window differences do not cancel catastrophically.
    """

    def __init__(self, parts: pl.DataFrame, plan: Plan, windows: list[timedelta], start: datetime, end: datetime, interval: timedelta):
        self.plan = plan
        sums: list[str] = [ROWS]
        for i in range(len(plan.inputs)):
            sums += [f"__x{i}_n", f"__x{i}_s"]
        cols: dict[str, pl.Expr] = {}
        self.poisoned: set[str] = set()
        for c in sums:
            if parts.schema[c].is_float():
                s = pl.col(c).cast(pl.Float64)
                cols[f"{c}__f"] = pl.when(s.is_finite()).then(s).otherwise(0.0)
                cols[f"{c}__nan"] = s.is_nan().cast(pl.Int64)
                cols[f"{c}__pinf"] = (s == float("inf")).cast(pl.Int64)
                cols[f"{c}__ninf"] = (s == float("-inf")).cast(pl.Int64)
                self.poisoned.add(c)
            else:
                cols[f"{c}__f"] = pl.col(c).cast(pl.Int64)
        keep: dict[str, pl.Expr] = {}
        for i in plan.needs_m2:
            n, s, q = pl.col(f"__x{i}_n"), pl.col(f"__x{i}_s").cast(pl.Float64), pl.col(f"__x{i}_q")
            k = (s.sum() / n.sum()).over("symbol")
            mean_h = pl.when(n > 0).then(s / n).otherwise(0.0)
            ok = q.is_finite() & mean_h.is_finite()
            cols[f"__x{i}_m2__f"] = pl.when(ok).then(q + n * (mean_h - k).pow(2)).otherwise(0.0)
            cols[f"__x{i}_m2__bad"] = (~ok & (n > 0)).cast(pl.Int64)
            keep[f"__x{i}_k"] = k
        self.cum_cols = list(cols)
        self.k_cols = list(keep)
        has_ltt = LTT in parts.columns
        # collapse the hours no lookup resolves
        bands = [(start, end)] + [(start - w, end - w) for w in windows]
        bounds = sorted({t for band in bands for t in band})
        h = pl.col(HOUR)
        in_band = pl.any_horizontal([(h >= a) & (h < b) for a, b in bands])
        segment = pl.lit(bounds[0] - interval, dtype=pl.Datetime("us"))
        for b in bounds:
            segment = pl.when(h >= b).then(pl.lit(b, dtype=pl.Datetime("us"))).otherwise(segment)
        rows = parts.lazy().with_columns(**cols, **keep).with_columns(pl.when(in_band).then(h).otherwise(segment).alias("__at"))
        collapsed = rows.group_by("symbol", "__at").agg(
            *[pl.col(c).sum() for c in self.cum_cols],
            *[pl.col(c).first() for c in self.k_cols],
            *([pl.col(LTT).max()] if has_ltt else []),
        ).sort("symbol", "__at")
        self.acc = collapsed.select(
            "symbol", "__at",
            *[pl.col(c).cum_sum().over("symbol") for c in self.cum_cols],
            *self.k_cols,
            *([pl.col(LTT).cum_max().over("symbol")] if has_ltt else []),
        ).collect()
        self.value_cols = self.cum_cols + self.k_cols + ([LTT] if has_ltt else [])

    def at(self, probes: pl.DataFrame, shift: timedelta, suffix: str) -> pl.DataFrame:
        """Cumulative values strictly before ``grid_time − shift`` (0 where nothing precedes)."""
        key = probes.select("symbol", "grid_time", (pl.col("grid_time") - shift).alias("__at"))
        joined = key.join_asof(self.acc, on="__at", by="symbol", strategy="backward", allow_exact_matches=False, check_sortedness=False)
        return joined.select(
            "symbol", "grid_time",
            *[pl.col(c).fill_null(0).alias(c + suffix) for c in self.cum_cols],
            *[pl.col(c).alias(c + suffix) for c in self.value_cols if c not in self.cum_cols],
        )

    def aggregates(self, hi: pl.DataFrame, probes: pl.DataFrame, window: timedelta) -> pl.DataFrame:
        """Per probe: every aggregation of the plan over hours in ``[G − W, G)`` (``hi`` = :meth:`at` G)."""
        lo = self.at(probes, window, "__lo")
        w = hi.join(lo, on=["symbol", "grid_time"], how="left")
        diff = {c: pl.col(c) - pl.col(c + "__lo") for c in self.cum_cols}

        def total(c: str) -> pl.Expr:
            value = diff[f"{c}__f"]
            if c not in self.poisoned:
                return value
            nan, pinf, ninf = diff[f"{c}__nan"], diff[f"{c}__pinf"], diff[f"{c}__ninf"]
            return (
                pl.when((nan > 0) | ((pinf > 0) & (ninf > 0))).then(float("nan"))
                .when(pinf > 0).then(float("inf"))
                .when(ninf > 0).then(float("-inf"))
                .otherwise(value)
            )

        out: list[pl.Expr] = [total(ROWS).alias(ROWS)]
        for col, (kind, x, ddof) in self.plan.aggs.items():
            if kind == "Len":
                out.append(total(ROWS).alias(col))
                continue
            n = total(f"__x{x}_n")
            s = total(f"__x{x}_s")
            if kind == "Sum":
                out.append(s.alias(col))
            elif kind == "Count":
                out.append(n.alias(col))
            elif kind == "Mean":
                out.append(pl.when(n > 0).then(s.cast(pl.Float64) / n).alias(col))
            else:
                k = pl.coalesce(pl.col(f"__x{x}_k"), pl.col(f"__x{x}_k__lo"))
                m2 = diff[f"__x{x}_m2__f"] - n * (s.cast(pl.Float64) / n - k).pow(2)
                var = pl.when(diff[f"__x{x}_m2__bad"] > 0).then(float("nan")).otherwise(pl.max_horizontal(m2, 0.0) / (n - ddof))
                var = pl.when(n > ddof).then(var)
                out.append((var.sqrt() if kind == "Std" else var).alias(col))
        return w.select("symbol", "grid_time", *out)


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
    cum: "_Cumulative | None", probes: pl.DataFrame, plan: Plan, source_schema: pl.Schema, raw: pl.LazyFrame | None, time_col: str,
    hi: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every output of a plan at every probe; windows with no rows get polars' zero-row values."""
    zero = _zero_row_values(source_schema, plan.outputs)
    result = probes.select("symbol", "grid_time")
    if cum is not None and hi is None:
        hi = cum.at(probes, timedelta(0), "")
    for window in dict.fromkeys(o.window for o in plan.outputs):
        outputs = [o for o in plan.outputs if o.window == window]
        fast = [o for o in outputs if o.rebuilt is not None]
        slow = [o for o in outputs if o.rebuilt is None]
        if fast:
            aggs = cum.aggregates(hi, probes, window)
            result = result.join(
                aggs.select("symbol", "grid_time", *[o.rebuilt.alias(o.name) for o in fast]), on=["symbol", "grid_time"], how="left"
            )
        if slow:
            if raw is None:
                raise ValueError(f"metadata {[o.name for o in slow]} are not decomposable and need the raw rows")
            result = result.join(_generic(raw, probes, slow, time_col, window), on=["symbol", "grid_time"], how="left")
        # no rows in the window (or generic group absent): polars' value on zero rows
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
    :func:`partials`); raw rows are needed only for non-decomposable aggregations."""
    index_plan, returns_plan = compile_plan(spec.index), compile_plan(spec.returns)
    iparts = index_parts.lazy().collect()
    enum = iparts.schema["symbol"]
    if not isinstance(enum, pl.Enum):
        enum = pl.Enum(sorted(iparts["symbol"].cast(pl.String).unique().drop_nulls().to_list()))
        iparts = iparts.with_columns(pl.col("symbol").cast(pl.String).cast(enum))
    times = grid_times(start_date, end_date, spec.interval)
    start, end = day_start(start_date), day_start(end_date)
    icum = _Cumulative(iparts, index_plan, [*spec.index, spec.max_index_window], start, end, spec.interval)
    # row set: the symbol has grid rows in [G − W_max, G); last_trade_time: its latest before G
    candidates = (
        pl.DataFrame({"symbol": pl.Series(enum.categories, dtype=enum)}).join(times.to_frame(), how="cross").sort("symbol", "grid_time")
    )
    hi = icum.at(candidates, timedelta(0), "")
    reach = icum.at(candidates, spec.max_index_window, "__lo")
    present = hi.join(reach, on=["symbol", "grid_time"]).filter(pl.col(f"{ROWS}__f") > pl.col(f"{ROWS}__f__lo"))
    probes = present.select("symbol", "grid_time", pl.col(LTT).alias("last_trade_time"))
    index = evaluate_side(icum, probes, index_plan, grid_schema, raw_grid, "last_trade_time", hi=present.select(hi.columns))
    result = probes.join(index, on=["symbol", "grid_time"], how="left", maintain_order="left")
    if spec.returns:
        rparts = (returns_parts.lazy().collect() if returns_parts is not None else partials(pl.LazyFrame(schema=returns_schema), returns_plan, "returns_grid_time", spec.interval).collect())
        rparts = rparts.with_columns(pl.col("symbol").cast(pl.String).cast(enum, strict=False)).filter(pl.col("symbol").is_not_null())
        rcum = _Cumulative(rparts, returns_plan, list(spec.returns), start, end, spec.interval)
        rraw = None
        if raw_returns is not None:
            rraw = raw_returns.lazy().with_columns(pl.col("symbol").cast(pl.String))
        returns = evaluate_side(rcum, probes, returns_plan, returns_schema, rraw, "returns_grid_time")
        result = result.join(returns, on=["symbol", "grid_time"], how="left", maintain_order="left")
    float_cols = [c for c, t in result.schema.items() if t.is_float()]
    result = result.with_columns(pl.col(c).fill_nan(None) for c in float_cols)
    if spec.quantiles is not None and result.height:
        q = spec.quantiles
        result = result.with_columns(((q.rank("average") / q.count()).name.suffix("_q")).over("grid_time"))
    return result.sort("symbol", "grid_time")


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
    quantiles; rows sorted by ``(symbol, grid_time)``.

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
