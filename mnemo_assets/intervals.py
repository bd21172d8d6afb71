"""Interval parsing: duration strings, timedeltas and ``pl.lit("10m")`` to one form."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import polars as pl

ONE_DAY = timedelta(days=1)

_UNITS_US = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 7 * 86_400_000_000,
}
_TOKEN = re.compile(r"(\d+)(us|ms|s|m|h|d|w)")


def _from_literal(expr: pl.Expr) -> object:
    """Evaluate a literal expression such as ``pl.lit("10m")`` to its Python value."""
    try:
        value = pl.select(expr).item()
    except Exception as exc:  # pragma: no cover - message only
        raise TypeError(f"interval expression {expr} is not a literal: {exc}") from exc
    return value


def to_timedelta(interval: str | timedelta | pl.Expr, allow_zero: bool = False) -> timedelta:
    """Parse an interval given as a polars duration string, a timedelta or ``pl.lit(...)``.

    >>> to_timedelta("10m")
    datetime.timedelta(seconds=600)
    >>> to_timedelta("1h30m")
    datetime.timedelta(seconds=5400)
    """
    if isinstance(interval, pl.Expr):
        interval = _from_literal(interval)  # type: ignore[assignment]
    if isinstance(interval, timedelta):
        td = timedelta(days=interval.days, seconds=interval.seconds, microseconds=interval.microseconds)
    elif isinstance(interval, str):
        text = interval.strip()
        pos = 0
        total = 0
        for match in _TOKEN.finditer(text):
            if match.start() != pos:
                break
            total += int(match.group(1)) * _UNITS_US[match.group(2)]
            pos = match.end()
        if text != "0" and (pos != len(text) or not text):
            raise ValueError(f"cannot parse interval {interval!r}: use a polars duration such as '5s', '10m', '1h', '7d'")
        td = timedelta(microseconds=total)
    else:
        raise TypeError(f"interval must be a duration string, a timedelta or pl.lit(...), got {type(interval).__name__}")
    if td < timedelta(0) or (td == timedelta(0) and not allow_zero):
        raise ValueError(f"interval must be positive, got {interval!r}")
    return td


def to_micros(interval: str | timedelta | pl.Expr, allow_zero: bool = False) -> int:
    """The interval in whole microseconds."""
    td = to_timedelta(interval, allow_zero)
    return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds


def day_interval(interval: str | timedelta | pl.Expr, what: str = "interval") -> timedelta:
    """Parse an interval that must divide one day exactly (grid, returns, metadata intervals).

    >>> day_interval("5s")
    datetime.timedelta(seconds=5)
    >>> day_interval("7m", "grid interval")
    Traceback (most recent call last):
    ...
    ValueError: grid interval '7m' does not divide one day exactly (86400s is not a multiple of 420s)
    """
    td = to_timedelta(interval)
    us = to_micros(td)
    if (86_400_000_000 % us) != 0:
        raise ValueError(f"{what} {interval_name(td)!r} does not divide one day exactly (86400s is not a multiple of {us / 1e6:g}s)")
    return td


def interval_name(interval: str | timedelta | pl.Expr) -> str:
    """Canonical short name of an interval, as used in paths: ``5s``, ``10m``, ``1h``, ``1d``.

    >>> interval_name("300s")
    '5m'
    >>> interval_name("1500ms")
    '1500ms'
    """
    us = to_micros(interval)
    for unit in ("d", "h", "m", "s", "ms", "us"):
        size = _UNITS_US[unit]
        if us % size == 0:
            return f"{us // size}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def day_start(day: date) -> datetime:
    """The naive UTC datetime at which ``day`` starts.

    >>> day_start(date(2025, 1, 2))
    datetime.datetime(2025, 1, 2, 0, 0)
    """
    return datetime(day.year, day.month, day.day)
