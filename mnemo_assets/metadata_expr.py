"""The metadata vocabulary: decomposable window aggregations, owned by this project.

A metadata spec (:class:`mnemo_assets.metadata.MetadataSpec`) maps windows to aggregations.
Written with this small builder, which reads like polars, an aggregation is one the project
*understands*: it knows the elementwise input, the kind of aggregation and the arithmetic on
top, so it computes the metric from per-hour partials (the fast path) and hashes a
description it writes itself (the asset's code version never depends on polars' internal
expression format)::

    col(name), lit(value), n_rows(), when(cond).then(a).otherwise(b)
    elementwise: + - * / // % ** (-x) abs() sqrt() pow(k) exp() log(base) log1p() sign()
                 clip(lo, hi) fill_null(v) fill_nan(v) cast(dtype) comparisons & | ~
                 is_null() is_not_null() is_nan() is_not_nan() is_finite() is_infinite()
    aggregation of an elementwise input: sum() count() len() mean() var(ddof) std(ddof)
    then any elementwise arithmetic on aggregations and literals, and alias(name)

Every builder object **is** a ``pl.Expr`` with exactly the polars semantics of the same
expression written with ``pl.col``: polars can evaluate it as it is (on the raw rows of a
window, in an oracle, in a notebook), and what this project computes from partials equals it.
A method the vocabulary does not own (``max()``, ``median()``, ``filter()`` ...) simply returns
a plain ``pl.Expr``; such a metric is evaluated exactly on the raw rows of each window.

>>> from mnemo_assets.metadata_expr import col, describe, is_owned
>>> liquidity = col("volume_quote").sum()
>>> imbalance = (col("taker_buy_volume_base") - col("taker_sell_volume_base")).sum() / col("volume_base").sum()
>>> vol = (col("return").std() * 144**0.5).alias("daily_vol_7d")
>>> describe(vol)
'(col("return").std(ddof=1) * 12.0).alias("daily_vol_7d")'
>>> describe(liquidity.sqrt().alias("sqrtliq_1d"))
'col("volume_quote").sum().sqrt().alias("sqrtliq_1d")'
>>> import polars as pl
>>> frame = pl.DataFrame({"volume_quote": [1.0, 3.0], "taker_buy_volume_base": [1.0, 0.0],
...                       "taker_sell_volume_base": [0.0, 1.0], "volume_base": [1.0, 3.0]})
>>> frame.select(liquidity.alias("liq"), imbalance.alias("ebr")).row(0)  # it is a polars expression
(4.0, 0.0)
>>> is_owned(col("high").max())  # not in the vocabulary: a plain polars expression (raw rows)
False
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import weakref
from collections.abc import Callable
from typing import Any

import polars as pl

#: a node of the owned expression tree: ("col", name) | ("lit", value) | ("len",)
#: | ("agg", kind, child, ddof) | ("bin", op, left, right) | ("fn", name, child, *args)
#: | ("when", cond, then, otherwise) | ("alias", name, child)
Node = tuple

AGG_KINDS = ("sum", "count", "mean", "var", "std")

_BINARY: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "add": ("+", operator.add),
    "sub": ("-", operator.sub),
    "mul": ("*", operator.mul),
    "truediv": ("/", operator.truediv),
    "floordiv": ("//", operator.floordiv),
    "mod": ("%", operator.mod),
    "pow": ("**", operator.pow),
    "eq": ("==", operator.eq),
    "ne": ("!=", operator.ne),
    "lt": ("<", operator.lt),
    "le": ("<=", operator.le),
    "gt": (">", operator.gt),
    "ge": (">=", operator.ge),
    "and": ("&", operator.and_),
    "or": ("|", operator.or_),
}


#: dtypes ``cast`` accepts, by the name the description uses
_DTYPES: dict[str, pl.DataType] = {
    "Float64": pl.Float64(),
    "Float32": pl.Float32(),
    "Int64": pl.Int64(),
    "Int32": pl.Int32(),
    "UInt64": pl.UInt64(),
    "UInt32": pl.UInt32(),
    "Boolean": pl.Boolean(),
}


# ------------------------------------------------------------------------------- the tree
def _is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float)) and not isinstance(value, pl.Expr)


def _lit_node(value: Any) -> Node:
    if isinstance(value, bool):
        return ("lit", bool(value))
    if isinstance(value, int):
        return ("lit", int(value))
    return ("lit", float(value))


def level(node: Node) -> int | None:
    """0: one value per row; 1: one value per window (an aggregation); None: a literal."""
    kind = node[0]
    if kind == "col":
        return 0
    if kind == "lit":
        return None
    if kind in ("len", "agg"):
        return 1
    if kind == "alias":
        return level(node[2])
    if kind == "fn":
        return level(node[2])
    children = node[2:] if kind == "bin" else node[1:]
    levels = {lv for lv in (level(c) for c in children) if lv is not None}
    if len(levels) > 1:
        raise ValueError(f"{_describe(node)} mixes row values and window aggregations; aggregate every column (e.g. col('a').sum() / col('b').sum())")
    return levels.pop() if levels else None


def _render(node: Node, agg: Callable[[Node], pl.Expr] | None = None) -> pl.Expr:
    """The plain polars expression of a node; ``agg`` maps aggregation nodes to columns instead."""
    kind = node[0]
    if kind == "col":
        return pl.col(node[1])
    if kind == "lit":
        return pl.lit(node[1])
    if kind in ("len", "agg") and agg is not None:
        return agg(node)
    if kind == "len":
        return pl.len()
    if kind == "agg":
        _, how, child, ddof = node
        x = _render(child, agg)
        if how in ("var", "std"):
            return getattr(x, how)(ddof=ddof)
        return getattr(x, how)()
    if kind == "bin":
        return _BINARY[node[1]][1](_render(node[2], agg), _render(node[3], agg))
    if kind == "fn":
        name, child, args = node[1], _render(node[2], agg), node[3:]
        if name == "neg":
            return -child
        if name == "not":
            return ~child
        if name == "cast":
            return child.cast(_DTYPES[args[0]])
        if name == "log":
            return child.log(args[0])
        return getattr(child, name)(*args)
    if kind == "when":
        return pl.when(_render(node[1], agg)).then(_render(node[2], agg)).otherwise(_render(node[3], agg))
    if kind == "alias":
        return _render(node[2], agg).alias(node[1])
    raise ValueError(f"unknown node {node!r}")  # pragma: no cover


def _fmt_scalar(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)


def _describe(node: Node) -> str:
    """A canonical text of a node, written by this module (stable across polars versions)."""
    kind = node[0]
    if kind == "col":
        return f"col({json.dumps(node[1])})"
    if kind == "lit":
        return _fmt_scalar(node[1])
    if kind == "len":
        return "n_rows()"
    if kind == "agg":
        _, how, child, ddof = node
        args = f"ddof={ddof}" if how in ("var", "std") else ""
        return f"{_describe(child)}.{how}({args})"
    if kind == "bin":
        return f"({_describe(node[2])} {_BINARY[node[1]][0]} {_describe(node[3])})"
    if kind == "fn":
        name, child, args = node[1], _describe(node[2]), node[3:]
        if name == "neg":
            return f"(-{child})"
        if name == "not":
            return f"(~{child})"
        return f"{child}.{name}({', '.join(_fmt_scalar(a) if not isinstance(a, str) else json.dumps(a) for a in args)})"
    if kind == "when":
        return f"when({_describe(node[1])}).then({_describe(node[2])}).otherwise({_describe(node[3])})"
    if kind == "alias":
        return f"{_describe(node[2])}.alias({json.dumps(node[1])})"
    raise ValueError(f"unknown node {node!r}")  # pragma: no cover


# ------------------------------------------------------------------------------ the builder
def _wrap(node: Node) -> MetricExpr:
    level(node)  # validates the mix of levels
    expr = MetricExpr.__new__(MetricExpr)
    expr._node = node
    expr._pyexpr = _render(node)._pyexpr
    return expr


def _rebuild(node: Node) -> MetricExpr:
    return _wrap(node)


def _operand(value: Any) -> Node | None:
    if isinstance(value, MetricExpr):
        return value._node
    if _is_scalar(value):
        return _lit_node(value)
    return None


class MetricExpr(pl.Expr):
    """An expression of the metadata vocabulary (build it with :func:`col`, :func:`lit`,
    :func:`n_rows`, :func:`when`). It is a ``pl.Expr`` (same values, usable by polars), and
    it carries the tree this project computes from partials and describes in the spec hash.
    Combining it with a plain ``pl.Expr``, or calling a method outside the vocabulary, gives a
    plain ``pl.Expr`` (computed on raw rows)."""

    _node: Node

    def __reduce__(self):  # copy / pickle from the owned tree, not polars' serialized form
        return (_rebuild, (self._node,))

    def __repr__(self) -> str:
        return f"<MetricExpr {_describe(self._node)}>"

    # -- binary operators -------------------------------------------------------------
    def _bin(self, op: str, other: Any, reflected: bool = False) -> pl.Expr:
        node = _operand(other)
        if node is None:  # a plain polars expression (or anything else): polars' own operator
            method = getattr(pl.Expr, f"__r{op}__" if reflected else f"__{op}__", None)
            if method is None:
                pyop = _BINARY[op][1]
                return pyop(pl.Expr._from_pyexpr(self._pyexpr), other) if not reflected else pyop(other, pl.Expr._from_pyexpr(self._pyexpr))
            return method(pl.Expr._from_pyexpr(self._pyexpr), other)
        left, right = (node, self._node) if reflected else (self._node, node)
        return _wrap(("bin", op, left, right))

    def __add__(self, other):
        return self._bin("add", other)

    def __radd__(self, other):
        return self._bin("add", other, True)

    def __sub__(self, other):
        return self._bin("sub", other)

    def __rsub__(self, other):
        return self._bin("sub", other, True)

    def __mul__(self, other):
        return self._bin("mul", other)

    def __rmul__(self, other):
        return self._bin("mul", other, True)

    def __truediv__(self, other):
        return self._bin("truediv", other)

    def __rtruediv__(self, other):
        return self._bin("truediv", other, True)

    def __floordiv__(self, other):
        return self._bin("floordiv", other)

    def __rfloordiv__(self, other):
        return self._bin("floordiv", other, True)

    def __mod__(self, other):
        return self._bin("mod", other)

    def __rmod__(self, other):
        return self._bin("mod", other, True)

    def __pow__(self, other):
        return self._bin("pow", other)

    def __rpow__(self, other):
        return self._bin("pow", other, True)

    def __eq__(self, other):
        return self._bin("eq", other)  # type: ignore[override]

    def __ne__(self, other):
        return self._bin("ne", other)  # type: ignore[override]

    def __lt__(self, other):
        return self._bin("lt", other)

    def __le__(self, other):
        return self._bin("le", other)

    def __gt__(self, other):
        return self._bin("gt", other)

    def __ge__(self, other):
        return self._bin("ge", other)

    def __and__(self, other):
        return self._bin("and", other)

    def __rand__(self, other):
        return self._bin("and", other, True)

    def __or__(self, other):
        return self._bin("or", other)

    def __ror__(self, other):
        return self._bin("or", other, True)

    __hash__ = None  # type: ignore[assignment]  # like pl.Expr

    # -- elementwise functions --------------------------------------------------------
    def _fn(self, name: str, *args: Any) -> MetricExpr:
        return _wrap(("fn", name, self._node, *args))

    def __neg__(self):
        return self._fn("neg")

    def __pos__(self):
        return self

    def __abs__(self):
        return self._fn("abs")

    def __invert__(self):
        return self._fn("not")

    def abs(self) -> MetricExpr:
        return self._fn("abs")

    def sqrt(self) -> MetricExpr:
        return self._fn("sqrt")

    def exp(self) -> MetricExpr:
        return self._fn("exp")

    def log1p(self) -> MetricExpr:
        return self._fn("log1p")

    def sign(self) -> MetricExpr:
        return self._fn("sign")

    def is_null(self) -> MetricExpr:
        return self._fn("is_null")

    def is_not_null(self) -> MetricExpr:
        return self._fn("is_not_null")

    def is_nan(self) -> MetricExpr:
        return self._fn("is_nan")

    def is_not_nan(self) -> MetricExpr:
        return self._fn("is_not_nan")

    def is_finite(self) -> MetricExpr:
        return self._fn("is_finite")

    def is_infinite(self) -> MetricExpr:
        return self._fn("is_infinite")

    def log(self, base: float = math.e) -> pl.Expr:  # type: ignore[override]
        if not _is_scalar(base):
            return pl.Expr._from_pyexpr(self._pyexpr).log(base)
        return self._fn("log", float(base))

    def pow(self, exponent: Any) -> pl.Expr:  # type: ignore[override]
        return self._bin("pow", exponent)

    def fill_null(self, value: Any = None, *args: Any, **kwargs: Any) -> pl.Expr:  # type: ignore[override]
        if args or kwargs or not _is_scalar(value):
            return pl.Expr._from_pyexpr(self._pyexpr).fill_null(value, *args, **kwargs)
        return self._fn("fill_null", _lit_node(value)[1])

    def fill_nan(self, value: Any) -> pl.Expr:  # type: ignore[override]
        if not _is_scalar(value):
            return pl.Expr._from_pyexpr(self._pyexpr).fill_nan(value)
        return self._fn("fill_nan", _lit_node(value)[1])

    def clip(self, lower_bound: Any = None, upper_bound: Any = None) -> pl.Expr:  # type: ignore[override]
        if not (_is_scalar(lower_bound) and _is_scalar(upper_bound)):
            return pl.Expr._from_pyexpr(self._pyexpr).clip(lower_bound, upper_bound)
        return self._fn("clip", _lit_node(lower_bound)[1], _lit_node(upper_bound)[1])

    def cast(self, dtype: Any, *args: Any, **kwargs: Any) -> pl.Expr:  # type: ignore[override]
        name = next((n for n, d in _DTYPES.items() if dtype == d or dtype is type(d)), None)
        if name is None or args or kwargs:
            return pl.Expr._from_pyexpr(self._pyexpr).cast(dtype, *args, **kwargs)
        return self._fn("cast", name)

    # -- aggregations -------------------------------------------------------------------
    def _agg(self, how: str, ddof: int = 0) -> MetricExpr:
        if level(self._node) != 0:
            raise ValueError(f"{_describe(self._node)}.{how}(): only a row-wise expression of columns can be aggregated")
        return _wrap(("agg", how, self._node, int(ddof)))

    def sum(self) -> MetricExpr:
        return self._agg("sum")

    def count(self) -> MetricExpr:
        return self._agg("count")

    def len(self) -> MetricExpr:
        if level(self._node) != 0:
            raise ValueError(f"{_describe(self._node)}.len(): only a row-wise expression of columns can be aggregated")
        return _wrap(("len",))

    def mean(self) -> MetricExpr:
        return self._agg("mean")

    def var(self, ddof: int = 1) -> MetricExpr:
        return self._agg("var", ddof)

    def std(self, ddof: int = 1) -> MetricExpr:
        return self._agg("std", ddof)

    def alias(self, name: str) -> MetricExpr:
        return _wrap(("alias", str(name), self._node))


def col(name: str) -> MetricExpr:
    """A column of the source rows (grid rows for index metrics, gridded returns for returns
    metrics); the vocabulary's ``pl.col``."""
    if not isinstance(name, str):
        raise TypeError("col() takes one column name")
    return _wrap(("col", name))


def lit(value: bool | int | float) -> MetricExpr:
    """A literal number (or boolean)."""
    if not _is_scalar(value):
        raise TypeError(f"lit() takes a number or a boolean, got {type(value).__name__}")
    return _wrap(_lit_node(value))


def n_rows() -> MetricExpr:
    """The number of source rows in the window (``pl.len()``)."""
    return _wrap(("len",))


class _When:
    def __init__(self, cond: Node, then: Node | None = None):
        self._cond, self._then = cond, then

    def then(self, value: Any) -> _When:
        node = _operand(value)
        if node is None:
            raise TypeError("when(...).then() takes a vocabulary expression or a number")
        return _When(self._cond, node)

    def otherwise(self, value: Any) -> MetricExpr:
        node = _operand(value)
        if node is None or self._then is None:
            raise TypeError("use when(cond).then(a).otherwise(b) with vocabulary expressions or numbers")
        return _wrap(("when", self._cond, self._then, node))


def when(condition: MetricExpr) -> _When:
    """``when(cond).then(a).otherwise(b)``, e.g. a conditional input
    ``when(col("return") > 0).then(col("return")).otherwise(0.0).sum()``."""
    if not isinstance(condition, MetricExpr):
        raise TypeError("when() takes a vocabulary expression")
    return _When(condition._node)


# ---------------------------------------------------------------------------- inspection
def is_owned(expr: Any) -> bool:
    """Whether ``expr`` is an expression of the vocabulary."""
    return isinstance(expr, MetricExpr)


def describe(expr: MetricExpr) -> str:
    """The canonical text of a vocabulary expression (what the spec version hashes)."""
    return _describe(expr._node)


_UNARY = ("neg", "not", "abs", "sqrt", "exp", "log1p", "sign", "is_null", "is_not_null", "is_nan", "is_not_nan", "is_finite", "is_infinite")


def _candidates(kids: list[Node]):
    """(vocabulary node, its polars form) for every vocabulary operation on these operands."""
    for perm in sorted(set(itertools.permutations(range(len(kids))))):
        ks = [kids[i] for i in perm]
        if len(ks) == 1:
            (a,) = ks
            yield ("len",), _render(a).len()
            for how in ("sum", "count", "mean"):
                yield ("agg", how, a, 0), None
            for how in ("var", "std"):
                for ddof in (0, 1):
                    yield ("agg", how, a, ddof), None
            for name in _UNARY:
                yield ("fn", name, a), None
            for dtype in _DTYPES:
                yield ("fn", "cast", a, dtype), None
        elif len(ks) == 2:
            a, b = ks
            for op in _BINARY:
                yield ("bin", op, a, b), None
            if b[0] == "lit":
                for name in ("log", "fill_null", "fill_nan"):
                    yield ("fn", name, a, b[1]), None
        elif len(ks) == 3:
            a, b, c = ks
            yield ("when", a, b, c), None
            if b[0] == "lit" and c[0] == "lit":
                yield ("fn", "clip", a, b[1], c[1]), None


def _recognise(expr: pl.Expr, depth: int = 0) -> Node | None:
    """The vocabulary tree whose polars form is structurally equal (``Expr.meta.eq``) to
    ``expr``, built bottom-up from ``Expr.meta.pop()``; None when there is none."""
    if depth > 24:
        return None
    meta = expr.meta
    if meta.is_column():
        node: Node = ("col", meta.output_name())
        return node if _render(node).meta.eq(expr) else None
    if meta.is_literal():
        try:
            value = pl.select(expr).item()
        except Exception:
            return None
        if not _is_scalar(value):
            return None
        node = _lit_node(value)
        return node if _render(node).meta.eq(expr) else None
    kids_exprs = meta.pop()
    if not kids_exprs:
        return ("len",) if expr.meta.eq(pl.len()) else None
    if len(kids_exprs) > 3:
        return None
    kids = [_recognise(k, depth + 1) for k in kids_exprs]
    if any(k is None for k in kids):
        return None
    for node, form in _candidates(kids):  # type: ignore[arg-type]
        try:
            level(node)
            if (form if form is not None else _render(node)).meta.eq(expr):
                return node
        except Exception:
            continue
    return None


_RECOGNISED: dict[int, tuple[Any, MetricExpr | None]] = {}


def from_polars(expr: pl.Expr) -> MetricExpr | None:
    """The vocabulary form of a plain polars expression, if it is one: built from the
    expression's own inputs (``Expr.meta.pop``) and accepted only when polars says the two
    are structurally equal (``Expr.meta.eq``), so never from polars' serialized format and
    never a guess. ``pl.col("volume_quote").sum().alias("liq")`` or
    ``(pl.col("close") - pl.col("open")).abs().sum()`` are recognised (and then computed
    from partials); ``pl.col("high").max()`` is not (computed on raw rows). A vocabulary
    expression is returned as it is."""
    if isinstance(expr, MetricExpr):
        return expr
    if not isinstance(expr, pl.Expr):
        return None
    cached = _RECOGNISED.get(id(expr))
    if cached is not None and cached[0]() is expr:
        return cached[1]
    try:
        name = expr.meta.output_name()
        node = _recognise(expr.meta.undo_aliases())
    except Exception:
        node = None
    result = None
    if node is not None and level(node) != 0:
        result = _wrap(("alias", name, node))
    if len(_RECOGNISED) > 10_000:
        _RECOGNISED.clear()
    _RECOGNISED[id(expr)] = (weakref.ref(expr), result)
    return result


def unalias(node: Node) -> Node:
    while node[0] == "alias":
        node = node[2]
    return node
