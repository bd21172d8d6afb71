"""Ingest validation and the data-quality ledger of archive trades: pure functions, no Dagster.

Every archive file of a ``(market, pair, day)`` is read alone (bounded memory: one pair-day at
a time) by :func:`read_pair_day`, which returns the file's **clean** normalised trades
(identical duplicate rows dropped, sorted by ``(time, trade_id)``), its **ledger row**
(:data:`QUALITY_SCHEMA`), and the **blocking** problems. Pairs the day's plan
(:func:`mnemo_assets.binance.trades.plan_day`) finds missing get ledger rows from
:func:`plan_ledger_rows`. The caller decides what to publish: only ``ok`` and ``degraded``
pair-days are publishable; an ``empty``, ``missing`` or ``rejected`` pair-day must never replace
data stored before (:func:`mnemo_assets.binance.trades.read_day` raises on them).

Status rules (first match from the top; ``reasons`` lists every fact that applies):

============================  =======  ==========  ==========================================================
fact                          level    status      meaning
============================  =======  ==========  ==========================================================
listed file absent            ERROR    missing     the plan (archive listing, or pairs stored before for the
                                                   day) says the file should exist, and it does not: a hole,
                                                   a file absent on a pair's first/last day, a fetch 404 of
                                                   a listed file, or a file not published yet
unreadable                    ERROR    rejected    corrupt zip, zip member that is not
                                                   ``{PAIR}-trades-{DAY}.csv`` (another pair's or day's file)
                                                   or has path components, unknown header, malformed row,
                                                   time unit not ms/µs (ns, s), mixed units, bad pair name;
                                                   a checksum mismatch (raised by the source's ``fetch``)
                                                   is recorded with :func:`error_row`
non_finite_values > 0         ERROR    rejected    NaN or ±inf price, qty or quote/base qty
non_positive_values > 0       ERROR    rejected    price <= 0, qty <= 0 or quote/base qty < 0
duplicate_ids_conflicting > 0 ERROR    rejected    one trade id with different content (which row is true?)
out_of_day_rows > 0           ERROR    rejected    trades outside the file's UTC day: they would land in
                                                   another day's partition
no trades                     ERROR    empty       a listed pair's file holds no trade (empty, blank lines,
                                                   header only): never "a day without trades"
duplicate_ids_dropped > 0     WARN     degraded    identical duplicate rows; each kept once
id_gaps > 0                   WARN     degraded    trade ids missing inside the file's id range
                                                   (``missing_ids`` in all; ``missing_id_ranges`` lists the
                                                   first :data:`MAX_ID_RANGES` ranges, so it is truncated
                                                   exactly when ``id_gaps`` > its length)
constant_taker_side           WARN     degraded    every trade on one taker side, with at least
                                                   :data:`CONSTANT_SIDE_MIN_TRADES` trades (a smaller file's
                                                   flag is recorded but does not degrade)
previous_sha256 not null      WARN     degraded    the archive re-published the file (its sha256 changed)
klines_mismatch               WARN     degraded    the trades do not reconcile with the exchange's 1m klines of
                                                   the pair-day (:func:`~mnemo_assets.binance.klines.reconcile`;
                                                   the reason names the problems, ``klines_*`` columns the facts)
klines_missing                WARN     degraded    no klines file for the pair-day: nothing to reconcile with
klines_unreadable             WARN     degraded    the klines file does not read (corrupt zip, another day's or
                                                   pair's member, malformed line, checksum mismatch)
none of the above             —        ok
============================  =======  ==========  ==========================================================

ERROR statuses (``missing``, ``empty``, ``rejected``) are not publishable; WARN (``degraded``)
is published, and its reasons are recorded. The three ``klines_*`` facts are recorded by
:class:`KlinesReconciler` for publishable pair-days only (``klines_status``: ``ok``,
``mismatch``, ``missing``, ``unreadable``; null when not reconciled); whether a mismatch also
stops publication is the pipeline's choice (``reconciliation.blocking``). Facts that cannot be computed (an unreadable file)
are null. Line numbers in reasons are the file's (1-based, counting the header).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from mnemo_assets.binance.archive import (
    ArchiveError,
    ArchiveFile,
    ArchiveMissingError,
    archive_key,
    klines_file_name,
    parse_trades_file_name,
)
from mnemo_assets.binance.klines import (
    DIFFERENCES,
    compare_minute_arrays,
    concat_minutes,
    kline_minute_arrays,
    parse_klines_batch,
    trade_minute_arrays,
)
from mnemo_assets.binance.parse import (
    MAX_LINES_LISTED,
    TRADES_SCHEMA,
    expected_member_name,
    format_epoch,
    format_lines,
    is_pair_name,
    parse_trades_bytes,
    read_zip_member,
    split_pair,
)

if TYPE_CHECKING:  # pragma: no cover
    from mnemo_assets.binance.trades import DayPlan

log = logging.getLogger(__name__)

#: ledger statuses; only ``ok`` and ``degraded`` are publishable
STATUSES: tuple[str, ...] = ("ok", "degraded", "missing", "empty", "rejected")
PUBLISHABLE: frozenset[str] = frozenset({"ok", "degraded"})
#: at most this many ``missing_id_ranges`` per pair-day (``id_gaps`` counts all of them)
MAX_ID_RANGES = 100
#: a constant taker side degrades a pair-day from this many trades on
CONSTANT_SIDE_MIN_TRADES = 100

ID_RANGE = pl.Struct({"first": pl.Int64, "last": pl.Int64})
#: ``klines_status`` of a reconciled pair-day (null when it was not reconciled: reconciliation
#: off, or a pair-day that is not publishable)
KLINES_STATUSES: tuple[str, ...] = ("ok", "mismatch", "missing", "unreadable")
#: pair-days reconciled per batch (one klines ``read_csv`` and one comparison per batch)
KLINES_CHUNK = 32

#: one row per ``(market, pair, day)`` ingested (or found missing)
QUALITY_SCHEMA = pl.Schema(
    {
        "date": pl.Date,
        "market": pl.String,
        "pair": pl.String,
        "symbol": pl.String,
        "peg_symbol": pl.String,
        "status": pl.String,
        "reasons": pl.List(pl.String),
        "source": pl.String,
        "sha256": pl.String,
        "previous_sha256": pl.String,
        "file_size": pl.Int64,
        "etag": pl.String,
        "last_modified": pl.String,
        "header": pl.String,
        "time_unit": pl.String,
        "rows_read": pl.Int64,
        "rows_kept": pl.Int64,
        "duplicate_ids_dropped": pl.Int64,
        "duplicate_ids_conflicting": pl.Int64,
        "first_trade_id": pl.Int64,
        "last_trade_id": pl.Int64,
        "id_gaps": pl.Int64,
        "missing_ids": pl.Int64,
        "missing_id_ranges": pl.List(ID_RANGE),
        "first_trade_time": pl.Datetime("us"),
        "last_trade_time": pl.Datetime("us"),
        "out_of_day_rows": pl.Int64,
        "constant_taker_side": pl.Boolean,
        "non_finite_values": pl.Int64,
        "non_positive_values": pl.Int64,
        # reconciliation with the exchange's 1m klines (null: not reconciled, see KLINES_STATUSES)
        "klines_status": pl.String,
        "klines_source": pl.String,
        "klines_sha256": pl.String,
        "klines_minutes_compared": pl.Int64,
        "klines_minutes_differing": pl.Int64,
        "klines_differences": DIFFERENCES,
        "klines_trades_difference": pl.Int64,
        "klines_first_difference": pl.Datetime("us"),
        "klines_problems": pl.List(pl.String),
    }
)


@dataclass(frozen=True)
class Rule:
    """One row of the status rule table (see the module docstring)."""

    fact: str
    level: str  # "ERROR" or "WARN"
    status: str
    meaning: str


RULES: tuple[Rule, ...] = (
    Rule("missing", "ERROR", "missing", "the plan says the file should exist and it does not"),
    Rule("unreadable", "ERROR", "rejected", "the zip or CSV is not the archive's file or layout"),
    Rule("non_finite_values", "ERROR", "rejected", "NaN or inf price, qty or quote/base qty"),
    Rule("non_positive_values", "ERROR", "rejected", "price <= 0, qty <= 0 or quote/base qty < 0"),
    Rule("duplicate_ids_conflicting", "ERROR", "rejected", "one trade id with different content"),
    Rule("out_of_day_rows", "ERROR", "rejected", "trades outside the file's UTC day"),
    Rule("empty", "ERROR", "empty", "a listed pair's file holds no trade"),
    Rule("duplicate_ids_dropped", "WARN", "degraded", "identical duplicate rows, kept once"),
    Rule("id_gaps", "WARN", "degraded", "trade ids missing inside the file's id range"),
    Rule("constant_taker_side", "WARN", "degraded", f"every trade on one taker side, with >= {CONSTANT_SIDE_MIN_TRADES} trades"),
    Rule("previous_sha256", "WARN", "degraded", "the archive re-published the file"),
    Rule("klines_mismatch", "WARN", "degraded", "the trades do not reconcile with the exchange's 1m klines"),
    Rule("klines_missing", "WARN", "degraded", "no klines file to reconcile the trades with"),
    Rule("klines_unreadable", "WARN", "degraded", "the klines file is not the archive's file or layout"),
)


class TradesRejectedError(ArchiveError):
    """A pair-day with blocking quality problems (the message names the file, day and problems)."""


class EmptyTradesFileError(ArchiveError):
    """A listed pair's archive file that holds no trade: never published as "no trades"."""


# ---------------------------------------------------------------------------- duplicates and gaps


@dataclass(frozen=True)
class IdFacts:
    """Duplicate and gap facts of one file's trade ids."""

    rows_read: int
    rows_kept: int
    duplicates_dropped: int
    conflicting: int
    #: the first conflicting ids with the file lines of each of their rows
    conflicts: tuple[tuple[int, tuple[int, ...]], ...]
    first_id: int | None
    last_id: int | None
    gaps: int
    missing_ids: int
    #: the first :data:`MAX_ID_RANGES` missing ranges ``(first, last)``, inclusive
    missing_ranges: tuple[tuple[int, int], ...]


def clean_trades(frame: pl.DataFrame, first_line: int = 1, max_ranges: int = MAX_ID_RANGES) -> tuple[pl.DataFrame, IdFacts]:
    """Drop identical duplicate rows, sort by ``(time, trade_id)``, and report ids.

    ``frame`` is one file's normalised trades in file order (row ``i`` is file line
    ``first_line + i``). Identical duplicates (every column equal) are kept once and counted in
    ``duplicates_dropped``; ids with rows of different content are ``conflicting`` (kept, so the
    caller sees them; they block publication). Gaps are counted over the distinct ids.
    """
    n = frame.height
    ids = frame.get_column("trade_id")
    increasing = n < 2 or bool((ids.diff().slice(1) > 0).all())
    dropped, conflicting, conflicts = 0, 0, ()
    clean = frame
    if not increasing and bool(ids.is_duplicated().any()):
        clean = frame.unique(maintain_order=True)
        dropped = n - clean.height
        clash = clean.get_column("trade_id").is_duplicated()
        if clash.any():
            bad = clean.filter(clash).get_column("trade_id").unique().sort()
            conflicting = bad.len()
            shown = bad.head(MAX_LINES_LISTED).to_list()
            lines = (
                frame.with_row_index("_row")
                .filter(pl.col("trade_id").is_in(shown))
                .group_by("trade_id")
                .agg((pl.col("_row") + first_line).sort().alias("lines"))
                .sort("trade_id")
            )
            conflicts = tuple((int(i), tuple(int(x) for x in ls)) for i, ls in lines.iter_rows())
    if not (increasing and clean.get_column("time").is_sorted()):
        clean = clean.sort("time", "trade_id", maintain_order=True)
    unique_ids = ids if increasing else clean.get_column("trade_id").unique().sort()
    if unique_ids.len():
        step = unique_ids.diff()
        gap = step > 1
        gaps = int(gap.sum())
        missing = int((step - 1).filter(gap).sum()) if gaps else 0
        if gaps:
            starts = (unique_ids.shift(1) + 1).filter(gap).head(max_ranges).to_list()
            ends = (unique_ids - 1).filter(gap).head(max_ranges).to_list()
            ranges = tuple((int(a), int(b)) for a, b in zip(starts, ends, strict=True))
        else:
            ranges = ()
        first_id, last_id = int(unique_ids[0]), int(unique_ids[-1])
    else:
        gaps, missing, ranges, first_id, last_id = 0, 0, (), None, None
    return clean, IdFacts(n, clean.height, dropped, conflicting, conflicts, first_id, last_id, gaps, missing, ranges)


# ---------------------------------------------------------------------------- pair-days


def _empty_row() -> dict[str, Any]:
    return dict.fromkeys(QUALITY_SCHEMA)


def _file_attrs(f: Any) -> dict[str, Any]:
    """Source facts of an :class:`ArchiveFile` (``url``, ``size``, ... when it has them)."""
    path = getattr(f, "path", None)
    size = getattr(f, "size", None)
    if size is None and path is not None:
        try:
            size = Path(path).stat().st_size
        except OSError:
            size = None
    return {
        "source": getattr(f, "url", None) or (str(path) if path is not None else None),
        "sha256": getattr(f, "sha256", None),
        "previous_sha256": getattr(f, "previous_sha256", None),
        "file_size": size,
        "etag": getattr(f, "etag", None),
        "last_modified": None if getattr(f, "last_modified", None) is None else str(f.last_modified),
    }


def base_row(market: str, pair: str, day: date, pegs: Iterable[str] | None) -> dict[str, Any]:
    """A ledger row with the key columns set (``symbol``/``peg_symbol`` null when no peg fits)."""
    row = _empty_row()
    split = split_pair(pair, market, tuple(pegs) if pegs is not None else None) if is_pair_name(pair) else None
    row.update(date=day, market=market, pair=pair, symbol=split[0] if split else None, peg_symbol=split[1] if split else None, reasons=[])
    return row


@dataclass(frozen=True)
class PairDay:
    """One archive file read and judged: its clean trades, ledger row and problems."""

    file: ArchiveFile
    trades: pl.DataFrame
    row: dict[str, Any]
    blocking: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    error: Exception | None = field(default=None, compare=False)

    @property
    def status(self) -> str:
        return self.row["status"]

    @property
    def publishable(self) -> bool:
        """Whether the trades may be published (``ok`` or ``degraded``)."""
        return self.status in PUBLISHABLE

    def ledger(self) -> pl.DataFrame:
        """The ledger row as a one-row frame of :data:`QUALITY_SCHEMA`."""
        return ledger_frame([self.row])

    def describe(self) -> str:
        f = self.file
        return f"{f.path} ({f.market} {f.pair} {f.day})"

    def raise_for_status(self) -> None:
        """Raise when the pair-day is not publishable: the reading error itself (its type kept),
        :class:`EmptyTradesFileError` or :class:`TradesRejectedError`."""
        if self.publishable:
            return
        if self.error is not None:
            raise self.error
        if self.status == "empty":
            raise EmptyTradesFileError(
                f"{self.describe()}: the archive lists this file but it holds no trades; "
                "refusing to publish it as a day without trades (ledger status 'empty')"
            )
        raise TradesRejectedError(f"{self.describe()}: rejected: " + "; ".join(self.blocking))


def _fmt_ranges(ranges: tuple[tuple[int, int], ...], gaps: int, shown: int = 5) -> str:
    text = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in ranges[:shown])
    return text + (f", ... ({gaps} ranges)" if gaps > shown else "")


def read_pair_day(archive_file: ArchiveFile, pegs: Iterable[str] | None = None) -> PairDay:
    """Read one verified archive file: clean trades, its ledger row and blocking problems.

    Never raises for a bad file (the problem is in :attr:`PairDay.blocking` and
    :attr:`PairDay.error`); see :meth:`PairDay.raise_for_status`. Reads one pair-day at a time.
    """
    f = archive_file
    pegs = tuple(pegs) if pegs is not None else None
    where = str(f.path)
    row = base_row(f.market, f.pair, f.day, pegs)
    row.update(_file_attrs(f))
    empty = pl.DataFrame(schema=TRADES_SCHEMA)
    try:
        if not is_pair_name(f.pair):
            raise ArchiveError(f"{where}: {f.pair!r} is not an archive pair name")
        try:
            named = parse_trades_file_name(Path(f.path).name)
        except ValueError:
            named = None
        if named != (f.pair, f.day):
            raise ArchiveError(f"{where}: the file name does not name {f.pair} on {f.day}")
        data = read_zip_member(Path(f.path), expected_member_name(f.pair, f.day))
        parsed = parse_trades_bytes(data, f.pair, f.market, where, pegs)
        del data
    except ArchiveError as exc:
        row.update(status="rejected", reasons=[f"unreadable: {exc}"])
        return PairDay(f, empty, row, blocking=(str(exc),), error=exc)

    trades = parsed.trades
    row.update(
        header=parsed.header,
        time_unit=parsed.time_unit,
        rows_read=trades.height,
        non_finite_values=parsed.non_finite,
        non_positive_values=parsed.non_positive,
    )
    if parsed.empty:
        text = "header only" if parsed.header is not None else "no data line"
        reason = f"empty: the file holds no trades ({text})"
        row.update(
            status="empty",
            reasons=[reason],
            rows_kept=0,
            duplicate_ids_dropped=0,
            duplicate_ids_conflicting=0,
            id_gaps=0,
            missing_ids=0,
            missing_id_ranges=[],
            out_of_day_rows=0,
        )
        return PairDay(f, empty, row, blocking=(reason,))

    errors: list[str] = []
    warns: list[str] = []
    if parsed.non_finite:
        errors.append(f"non_finite_values: {parsed.non_finite} row(s) with NaN or inf at {format_lines(parsed.non_finite_lines, parsed.non_finite)}")
    if parsed.non_positive:
        errors.append(
            f"non_positive_values: {parsed.non_positive} row(s) with price <= 0, qty <= 0 or "
            f"quote/base qty < 0 at {format_lines(parsed.non_positive_lines, parsed.non_positive)}"
        )

    # out-of-day rows, in file order (line numbers are the file's)
    start = datetime(f.day.year, f.day.month, f.day.day)
    outside = (pl.col("time") < start) | (pl.col("time") >= start + timedelta(days=1))
    hits = trades.select(outside.alias("m")).to_series()
    out_of_day = int(hits.sum())
    if out_of_day:
        times = trades.filter(hits).get_column("time").cast(pl.Int64)
        lines = [parsed.first_line + i for i in hits.arg_true().head(MAX_LINES_LISTED).to_list()]
        errors.append(
            f"out_of_day_rows: {out_of_day} trade(s) outside {f.day} (from {format_epoch(times.min())} to "  # type: ignore[arg-type]
            f"{format_epoch(times.max())}; {format_lines(lines, out_of_day)}): they would land in another "  # type: ignore[arg-type]
            "day's partition"
        )

    clean, ids = clean_trades(trades, parsed.first_line)
    del trades, parsed
    if ids.conflicting:
        shown = "; ".join(f"id {i} at {format_lines(ls)}" for i, ls in ids.conflicts)
        more = f" (first {len(ids.conflicts)} of {ids.conflicting})" if ids.conflicting > len(ids.conflicts) else ""
        errors.append(f"duplicate_ids_conflicting: {ids.conflicting} trade id(s) with different rows{more}: {shown}")
    if ids.duplicates_dropped:
        warns.append(f"duplicate_ids_dropped: {ids.duplicates_dropped} identical duplicate row(s) dropped")
    if ids.gaps:
        warns.append(
            f"id_gaps: {ids.gaps} gap(s), {ids.missing_ids} missing id(s) between {ids.first_id} and "
            f"{ids.last_id}: {_fmt_ranges(ids.missing_ranges, ids.gaps)}"
        )
    n_buyer_maker = int(clean.get_column("is_buyer_maker").sum())
    constant = n_buyer_maker in (0, clean.height)
    if constant and clean.height >= CONSTANT_SIDE_MIN_TRADES:
        side = "buyer-maker (taker sells)" if n_buyer_maker else "taker buys"
        warns.append(f"constant_taker_side: all {clean.height} trades are {side}")
    if row["previous_sha256"] is not None and row["previous_sha256"] != row["sha256"]:
        warns.append(f"previous_sha256: the archive re-published the file (sha256 was {row['previous_sha256']})")

    times = clean.get_column("time")
    row.update(
        rows_kept=clean.height,
        duplicate_ids_dropped=ids.duplicates_dropped,
        duplicate_ids_conflicting=ids.conflicting,
        first_trade_id=ids.first_id,
        last_trade_id=ids.last_id,
        id_gaps=ids.gaps,
        missing_ids=ids.missing_ids,
        missing_id_ranges=[{"first": a, "last": b} for a, b in ids.missing_ranges],
        first_trade_time=times.min(),
        last_trade_time=times.max(),
        out_of_day_rows=out_of_day,
        constant_taker_side=constant,
        status="rejected" if errors else "degraded" if warns else "ok",
        reasons=errors + warns,
    )
    return PairDay(f, clean, row, blocking=tuple(errors), warnings=tuple(warns))


# ---------------------------------------------------------------------------- ledger frames


def plan_ledger_rows(plan: DayPlan) -> list[dict[str, Any]]:
    """Ledger rows (status ``missing``) for the pairs a day plan finds missing or not published
    yet; the reason holds the plan's evidence. Present pairs get their rows from
    :func:`read_pair_day`; pairs not listed yet or delisted get none."""
    rows = []
    for item in plan.pairs:
        if item.status not in ("missing", "pending"):
            continue
        row = base_row(plan.market, item.pair, plan.day, plan.pegs)
        if item.symbol is not None:
            row.update(symbol=item.symbol, peg_symbol=item.peg)
        label = "not published yet" if item.status == "pending" else "missing"
        row.update(
            status="missing",
            reasons=[f"{label}: {item.evidence}"],
            source=f"{plan.source} {archive_key(plan.market, item.pair, plan.day)}" if is_pair_name(item.pair) else plan.source,
        )
        rows.append(row)
    return rows


def ledger_frame(rows: Iterable[Mapping[str, Any] | PairDay]) -> pl.DataFrame:
    """Ledger rows (dicts or :class:`PairDay`) as a frame of :data:`QUALITY_SCHEMA`, in order."""
    data = []
    for r in rows:
        r = r.row if isinstance(r, PairDay) else r
        unknown = set(r) - set(QUALITY_SCHEMA)
        if unknown:
            raise ValueError(f"ledger row has unknown columns {sorted(unknown)}")
        if r.get("status") not in STATUSES:
            raise ValueError(f"ledger row status {r.get('status')!r} is not one of {STATUSES}")
        data.append({k: r.get(k) for k in QUALITY_SCHEMA})
    return pl.DataFrame(data, schema=QUALITY_SCHEMA) if data else pl.DataFrame(schema=QUALITY_SCHEMA)


def error_row(market: str, pair: str, day: date, error: Exception, pegs: Iterable[str] | None = None, source: str | None = None) -> dict[str, Any]:
    """A ``rejected`` ledger row for a file that failed before it could be read (a checksum
    mismatch or corrupt download raised by the source's ``fetch``)."""
    row = base_row(market, pair, day, pegs)
    row.update(status="rejected", reasons=[f"unreadable: {error}"], source=source)
    return row


# ---------------------------------------------------------------------------- klines reconciliation


def _klines_problem(row: dict[str, Any], status: str, reason: str) -> None:
    row["klines_status"] = status
    row["reasons"] = [*row["reasons"], reason]
    if row["status"] == "ok":
        row["status"] = "degraded"


def apply_klines_facts(row: dict[str, Any], facts: Mapping[str, Any], klines_file: ArchiveFile | None = None) -> None:
    """Record a reconciliation (:func:`~mnemo_assets.binance.klines.reconcile`'s facts) in a ledger
    row: the ``klines_*`` columns, and a pair-day that does not reconcile is ``degraded`` with the
    reason."""
    row.update({k: v for k, v in facts.items() if k in QUALITY_SCHEMA})
    if klines_file is not None:
        row.update(klines_source=getattr(klines_file, "url", None) or str(klines_file.path), klines_sha256=klines_file.sha256)
    if facts["klines_status"] != "ok":
        _klines_problem(row, facts["klines_status"], facts["reason"])


def klines_error(row: dict[str, Any], error: Exception, klines_file: ArchiveFile | None = None) -> None:
    """Record a pair-day whose klines could not be had: ``missing`` (no file) or ``unreadable``."""
    if klines_file is not None:
        row.update(klines_source=getattr(klines_file, "url", None) or str(klines_file.path), klines_sha256=klines_file.sha256)
    if isinstance(error, ArchiveMissingError):
        _klines_problem(row, "missing", f"klines_missing: no klines to reconcile ({error})")
    else:
        _klines_problem(row, "unreadable", f"klines_unreadable: {error}")


_NOTHING_TO_COMPARE = {
    "klines_status": "ok",
    "klines_minutes_compared": 0,
    "klines_minutes_differing": 0,
    "klines_differences": dict.fromkeys(DIFFERENCES.to_schema(), 0),
    "klines_trades_difference": 0,
    "klines_first_difference": None,
    "klines_problems": [],
    "reason": None,
}


class KlinesReconciler:
    """Reconcile the publishable pair-days of one market-day with their 1m klines files.

    :meth:`add` takes a pair-day's ledger row, its clean trades and its klines file (or the
    error fetching it raised). Of the trades only their traded minutes are kept
    (:func:`~mnemo_assets.binance.klines.trade_minute_arrays`, at most 1440 rows); every
    ``chunk`` pair-days the klines files are read together (one ``read_csv``) and compared in
    one query (:func:`~mnemo_assets.binance.klines.compare_minutes`). With ``background=True``
    (the pipeline's way) all of it runs in one worker thread, overlapping the caller's own
    reading and writing (zlib, numpy and polars release the GIL); at most ``in_flight``
    pair-days of trades wait for it (``add`` blocks until one is done), so memory stays at a few
    pair-days plus one chunk of minutes. :meth:`finish` waits and leaves every row updated
    (:func:`apply_klines_facts`, :func:`klines_error`); the caller must not read the rows in
    between. The results do not depend on ``background`` or ``chunk``.
    """

    def __init__(self, market: str, day: date, *, chunk: int = KLINES_CHUNK, background: bool = True, in_flight: int = 2):
        self.market, self.day, self.chunk = market, day, max(1, chunk)
        self._pending: list[tuple[dict[str, Any], dict, ArchiveFile, bytes]] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"klines-{market}") if background else None
        self._slots = threading.BoundedSemaphore(max(1, in_flight))
        self._futures: list[Future] = []
        self._done = False
        self.reconciled = 0

    def add(self, row: dict[str, Any], trades: pl.DataFrame, klines: ArchiveFile | Exception) -> None:
        """Reconcile one publishable pair-day (its row is updated by :meth:`finish`)."""
        if self._done:
            raise RuntimeError("KlinesReconciler.add after done_adding")
        self.reconciled += 1
        if isinstance(klines, Exception):
            klines_error(row, klines)
            return
        if self._pool is None:
            self._prepare(row, trades, klines)
            return
        self._slots.acquire()
        self._futures.append(self._pool.submit(self._prepare, row, trades, klines))

    def _prepare(self, row: dict[str, Any], trades: pl.DataFrame, f: ArchiveFile) -> None:
        from mnemo_assets.binance.parse import read_zip_member

        try:
            arrays = trade_minute_arrays(trades, checked=True)
            del trades
            try:
                data = read_zip_member(Path(f.path), klines_file_name(f.pair, f.day, "csv"))
            except ArchiveError as exc:
                klines_error(row, exc, f)
                return
            self._pending.append((row, arrays, f, data))
        finally:
            if self._pool is not None:
                self._slots.release()
        if len(self._pending) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        klines, errors = parse_klines_batch([(data, f.pair, str(f.path)) for _, _, f, data in batch], self.market)
        for i, exc in errors.items():
            klines_error(batch[i][0], exc, batch[i][2])
        keep = [i for i in range(len(batch)) if i not in errors]
        if not keep:
            return
        ours = concat_minutes([batch[i][1] for i in keep])  # key = position in keep
        position = np.full(len(batch), -1, np.int64)
        position[keep] = np.arange(len(keep))
        theirs = kline_minute_arrays(klines)
        theirs["key"] = position[theirs["key"].astype(np.int64)]
        facts = compare_minute_arrays(ours, theirs, self.market, self.day)
        for new, i in enumerate(keep):
            row, _, f, _ = batch[i]
            apply_klines_facts(row, facts.get(new) or _NOTHING_TO_COMPARE, f)

    def done_adding(self) -> None:
        """Every pair-day was added: start on the last chunk now (the worker runs it while the
        caller finishes its own writing); :meth:`finish` then only waits."""
        if self._pool is not None and not self._done:
            self._futures.append(self._pool.submit(self._flush))
        self._done = True

    def finish(self) -> None:
        """Reconcile what is left and wait for all of it (re-raising a failure)."""
        try:
            if self._pool is None:
                self._flush()
                return
            self.done_adding()
            for fut in self._futures:
                fut.result()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker (what is queued and not started is dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
