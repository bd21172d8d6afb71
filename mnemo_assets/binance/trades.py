"""Which archive files make one market-day of normalised trades, and reading them.

For a day ``D`` and a market, the configured pairs are those whose quote is a configured peg
(and, for futures, perpetuals unless delivery contracts are configured; names that are not
archive pair names are ignored and reported). :func:`plan_day` classifies every configured pair
explicitly, with its evidence:

* ``present``: the archive lists a file for ``D``.
* ``missing``: a file that should exist does not: a **hole** (files before and after ``D``), or
  a pair stored for ``D`` before (``expected_pairs``) that the archive does not list for ``D``
  (also when ``D`` is before its first or after its last file).
  :func:`fetch_plan` also marks missing a listed file the source cannot find.
* ``pending``: not published yet: the pair's last file is ``D−1`` and ``D`` is the market's
  newest day (it may still come, or the pair was delisted on ``D−1``; settled once ``D+1`` is
  published).
* ``not_listed``: ``D`` is before the pair's first file.
* ``delisted``: ``D`` is after the pair's last file (and not pending), or after the delivery
  date of an expired delivery contract.

Whole-day answers are distinct errors: :class:`BeforeArchiveStartError` ("before the first
archive day of {market} ({first})"), :class:`UnknownPegError` (no pair of the market ends with
the pegs), :class:`DayNotPublishedError` (no pair has ``D`` yet: latest day given).
:func:`fetch_day` raises :class:`MissingDayError` (or :class:`DayNotPublishedError` when every
gap is ``pending``) with the plan attached rather than return a day without a pair it should
hold; :func:`mnemo_assets.binance.quality.plan_ledger_rows` turns the plan into ledger rows.

Reading: :func:`read_day` reads one pair-day at a time through
:func:`mnemo_assets.binance.quality.read_pair_day` and raises on any pair-day that is not
publishable (rejected, empty), naming the file and day.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta

import polars as pl

from mnemo_assets.binance.archive import ArchiveError, ArchiveFile, ArchiveMissingError, ArchiveSource, archive_key
from mnemo_assets.binance.parse import TRADES_SCHEMA, is_pair_name, is_perpetual, split_pair
from mnemo_assets.binance.quality import PairDay, read_pair_day

log = logging.getLogger(__name__)

#: classifications of a configured pair for a day
PAIR_STATUSES: tuple[str, ...] = ("present", "missing", "pending", "not_listed", "delisted")


class MissingDayError(ArchiveError):
    """The archive lacks a file it should have for a day. ``plan`` holds the day's
    :class:`DayPlan` when there is one."""

    def __init__(self, message: str, plan: DayPlan | None = None):
        super().__init__(message)
        self.plan = plan


class DayNotPublishedError(MissingDayError):
    """The day (or a pair's file of it) is not published yet: retry later."""


class BeforeArchiveStartError(ArchiveError):
    """The day is before the archive's first day of the market (for the configured pegs)."""


class UnknownPegError(ArchiveError):
    """No pair of the market ends with the configured pegs (a configuration error)."""


@dataclass(frozen=True)
class DayFile:
    pair: str
    symbol: str
    peg: str


@dataclass(frozen=True)
class PairPlan:
    """A configured pair's classification for a day (see :data:`PAIR_STATUSES`)."""

    pair: str
    symbol: str | None
    peg: str | None
    status: str
    evidence: str
    first_day: date | None = None
    last_day: date | None = None


@dataclass(frozen=True)
class DayPlan:
    """Every configured pair of one market-day, classified."""

    source: str
    market: str
    day: date
    pegs: tuple[str, ...]
    pairs: tuple[PairPlan, ...]
    first_day: date | None
    latest_day: date | None
    unmatched_pegs: tuple[str, ...] = ()
    ignored_names: tuple[str, ...] = ()

    def with_status(self, *statuses: str) -> list[PairPlan]:
        return [p for p in self.pairs if p.status in statuses]

    @property
    def present(self) -> list[PairPlan]:
        return self.with_status("present")

    @property
    def files(self) -> list[DayFile]:
        """The pairs to read (``present``), as :class:`DayFile`."""
        return [DayFile(p.pair, p.symbol, p.peg) for p in self.present]  # type: ignore[arg-type]

    def error(self) -> MissingDayError | None:
        """The error for ``missing`` or ``pending`` pairs (``None`` when there are none)."""
        gaps = self.with_status("missing", "pending")
        if not gaps:
            return None
        shown = "; ".join(f"{p.pair} ({p.status}: {p.evidence})" for p in gaps[:10])
        more = f"; ... ({len(gaps)} in all)" if len(gaps) > 10 else ""
        if all(p.status == "pending" for p in gaps):
            return DayNotPublishedError(
                f"{self.source}: {self.market} trades for {self.day} are not published yet for {len(gaps)} pair(s) "
                f"(latest day in the archive: {self.latest_day}): {shown}{more}",
                plan=self,
            )
        return MissingDayError(
            f"{self.source}: {self.market} trades for {self.day} are missing for {len(gaps)} pair(s): {shown}{more}",
            plan=self,
        )

    def raise_for_missing(self) -> None:
        err = self.error()
        if err is not None:
            raise err


def market_pairs(source: ArchiveSource, market: str, pegs: Iterable[str], contracts: str = "perpetual") -> list[DayFile]:
    """The archive's pairs of ``market`` whose quote is one of ``pegs``, split into symbol and peg.

    Listed names that are not archive pair names (a path, lower case, ...) are skipped.
    """
    return _configured(source.list_pairs(market), market, tuple(pegs), contracts)


def _configured(names: Iterable[str], market: str, pegs: tuple[str, ...], contracts: str) -> list[DayFile]:
    result = []
    for pair in names:
        if not is_pair_name(pair):
            log.warning("ignoring %s pair name %r: not an archive pair name", market, pair)
            continue
        if contracts == "perpetual" and not is_perpetual(pair, market):
            continue
        split = split_pair(pair, market, pegs)
        if split is not None:
            result.append(DayFile(pair, split[0], split[1]))
    return result


def _pair_name(symbol: str, peg: str, market: str) -> str:
    """The archive pair of ``(symbol, peg)`` (best effort: ``BTC_250328``/``USDT`` → ``BTCUSDT_250328``)."""
    base, _, expiry = symbol.partition("_")
    if expiry:
        return f"{base}{peg}_{expiry}"
    return f"{symbol}{peg}_PERP" if market == "cm" else f"{symbol}{peg}"


def _expected(
    expected_pairs: Iterable[str | tuple[str, str]] | None,
    items: list[DayFile],
    market: str,
    pegs: tuple[str, ...],
    contracts: str,
) -> dict[str, DayFile]:
    """Expected pairs (names or ``(symbol, peg)``) that the configuration covers, by pair name."""
    out: dict[str, DayFile] = {}
    by_split = {(i.symbol, i.peg): i for i in items}
    for entry in expected_pairs or ():
        if isinstance(entry, str):
            pair = entry
        else:
            symbol, peg = entry
            pair = by_split[(symbol, peg)].pair if (symbol, peg) in by_split else _pair_name(symbol, peg, market)
        if not is_pair_name(pair) or (contracts == "perpetual" and not is_perpetual(pair, market)):
            continue
        split = split_pair(pair, market, pegs)
        if split is not None:  # a pair the configuration no longer covers is not expected
            out[pair] = DayFile(pair, split[0], split[1])
    return out


def _expiry(pair: str) -> date | None:
    """The delivery date of a delivery contract (``BTCUSDT_250328`` → 2025-03-28), else ``None``."""
    _, _, suffix = pair.rpartition("_")
    if len(suffix) != 6 or not suffix.isdigit():
        return None
    try:
        return date(2000 + int(suffix[:2]), int(suffix[2:4]), int(suffix[4:]))
    except ValueError:
        return None


def _classify(item: DayFile, days: list[date], day: date, latest: date | None, market: str) -> PairPlan:
    first, last = (days[0], days[-1]) if days else (None, None)
    plan = PairPlan(item.pair, item.symbol, item.peg, "", "", first, last)
    if not days:
        return replace(plan, status="not_listed", evidence="the archive lists no file for it")
    if day in set(days):
        return replace(plan, status="present", evidence=f"listed: {archive_key(market, item.pair, day)}")
    if first < day < last:  # type: ignore[operator]
        before = max(d for d in days if d < day)
        after = min(d for d in days if d > day)
        return replace(plan, status="missing", evidence=f"a hole: files on {before} and {after} but not on {day}")
    if day < first:  # type: ignore[operator]
        return replace(plan, status="not_listed", evidence=f"before its first file ({first})")
    expiry = _expiry(item.pair)
    if expiry is not None and last >= expiry and day > expiry:  # type: ignore[operator]
        return replace(plan, status="delisted", evidence=f"a delivery contract that expired on {expiry} (last file {last})")
    if last == day - timedelta(days=1) and latest == day:
        return replace(
            plan,
            status="pending",
            evidence=f"its last file is {last} and {day} is the newest {market} day in the archive: not published "
            f"yet, or delisted on {last} (settled once {day + timedelta(days=1)} is published)",
        )
    return replace(plan, status="delisted", evidence=f"after its last file ({last}; newest {market} day {latest})")


def plan_day(
    source: ArchiveSource,
    market: str,
    pegs: Iterable[str],
    day: date,
    contracts: str = "perpetual",
    expected_pairs: Iterable[str | tuple[str, str]] | None = None,
) -> DayPlan:
    """Classify every configured pair of ``market`` for ``day`` (see the module docstring).

    ``expected_pairs``: pairs stored for ``day`` before (pair names, or ``(symbol, peg)``); any
    of them the archive does not list for ``day`` is ``missing``. Raises
    :class:`BeforeArchiveStartError`, :class:`UnknownPegError` or :class:`DayNotPublishedError`
    for the whole day; holes are returned as ``missing`` (see :meth:`DayPlan.raise_for_missing`).
    """
    pegs = tuple(pegs)
    where = source.describe()
    listed = source.list_pairs(market)
    ignored = tuple(p for p in listed if not is_pair_name(p))
    items = _configured(listed, market, pegs, contracts)
    expected = _expected(expected_pairs, items, market, pegs, contracts)
    unmatched = tuple(peg for peg in pegs if not any(i.peg == peg for i in items))
    if not items and not expected:
        if len(listed) == len(ignored):
            raise DayNotPublishedError(f"{where}: no {market} trades published for {day} yet (the archive lists no {market} pairs)")
        kind = " perpetual" if contracts == "perpetual" and market != "spot" else ""
        examples = ", ".join(p for p in listed if is_pair_name(p))
        raise UnknownPegError(
            f"{where}: no{kind} {market} pair ends with peg {' or '.join(pegs)} "
            f"(the archive lists {len(listed) - len(ignored)} {market} pairs: {examples[:200]})"
        )
    days = {i.pair: source.list_days(market, i.pair) for i in items}
    firsts = [d[0] for d in days.values() if d]
    lasts = [d[-1] for d in days.values() if d]
    first = min(firsts) if firsts else None
    latest = max(lasts) if lasts else None
    if (latest is None and not expected) or (latest is not None and latest < day):
        raise DayNotPublishedError(f"{where}: no {market} trades published for {day} yet (latest day in the archive: {latest or 'none'})")
    if first is not None and day < first and not expected:
        raise BeforeArchiveStartError(f"{where}: {day} is before the first archive day of {market} ({first}) for pegs {', '.join(pegs)}")
    pairs = []
    for item in items:
        plan = _classify(item, days[item.pair], day, latest, market)
        if item.pair in expected and plan.status in ("not_listed", "delisted", "pending"):
            plan = replace(plan, status="missing", evidence=f"stored for {day} before, but the archive has no file for it ({plan.evidence})")
        pairs.append(plan)
    known = {i.pair for i in items}
    for pair, item in sorted(expected.items()):
        if pair not in known:
            pairs.append(PairPlan(pair, item.symbol, item.peg, "missing", f"stored for {day} before, but the archive lists no {market} pair {pair}"))
    return DayPlan(where, market, day, pegs, tuple(pairs), first, latest, unmatched, ignored)


def fetch_plan(source: ArchiveSource, plan: DayPlan) -> list[ArchiveFile]:
    """The verified files of a plan's present pairs; raises :class:`MissingDayError` (plan
    attached) when a pair is missing or pending, or when a listed file cannot be found."""
    plan.raise_for_missing()
    files, absent = [], {}
    for item in plan.present:
        try:
            files.append(source.fetch(plan.market, item.pair, plan.day))
        except ArchiveMissingError as exc:
            absent[item.pair] = replace(item, status="missing", evidence=f"listed by the archive for {plan.day}, but not found: {exc}")
    if absent:
        plan = replace(plan, pairs=tuple(absent.get(p.pair, p) for p in plan.pairs))
        plan.raise_for_missing()
    return files


def fetch_day(
    source: ArchiveSource,
    market: str,
    pegs: Iterable[str],
    day: date,
    contracts: str = "perpetual",
    expected_pairs: Iterable[str | tuple[str, str]] | None = None,
) -> list[ArchiveFile]:
    """The verified archive files of one market-day (downloaded or generated where needed).

    Raises (see :func:`plan_day`) rather than return a day without a pair it should hold.
    """
    return fetch_plan(source, plan_day(source, market, tuple(pegs), day, contracts, expected_pairs))


def archive_version(files: Iterable[ArchiveFile]) -> str:
    """A content version of archive files: a hash of their days, pairs and sha256s."""
    text = "\n".join(sorted(f"{f.day} {f.market} {f.pair} {f.sha256}" for f in files))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_day(files: Iterable[ArchiveFile], pegs: Iterable[str], ledger: list[dict] | None = None) -> Iterator[pl.DataFrame]:
    """Clean normalised trades of fetched files, one frame per file (one pair-day in memory).

    Each frame has identical duplicates dropped and is sorted by ``(time, trade_id)``. A file
    that is not publishable raises, naming the file and day: its reading error,
    :class:`~mnemo_assets.binance.quality.EmptyTradesFileError` or
    :class:`~mnemo_assets.binance.quality.TradesRejectedError` (out-of-day rows, conflicting
    duplicates, non-finite values, ...). Degraded files are logged. With ``ledger``, each
    file's ledger row is appended to it before its frame is yielded (or its error raised).
    """
    pegs = tuple(pegs)
    for archive_file in files:
        pair_day: PairDay = read_pair_day(archive_file, pegs)
        if ledger is not None:
            ledger.append(pair_day.row)
        pair_day.raise_for_status()
        if pair_day.warnings:
            log.warning("%s: degraded: %s", pair_day.describe(), "; ".join(pair_day.warnings))
        yield pair_day.trades


def iter_day_trades(
    source: ArchiveSource,
    market: str,
    pegs: Iterable[str],
    day: date,
    contracts: str = "perpetual",
    expected_pairs: Iterable[str | tuple[str, str]] | None = None,
) -> Iterator[pl.DataFrame]:
    """Clean normalised trades of one market-day, one frame per pair (bounded memory)."""
    pegs = tuple(pegs)
    yield from read_day(fetch_day(source, market, pegs, day, contracts, expected_pairs), pegs)


def day_trades(
    source: ArchiveSource,
    market: str,
    pegs: Iterable[str],
    day: date,
    contracts: str = "perpetual",
    expected_pairs: Iterable[str | tuple[str, str]] | None = None,
) -> pl.DataFrame:
    """All clean normalised trades of one market-day in one frame."""
    frames = list(iter_day_trades(source, market, pegs, day, contracts, expected_pairs))
    return pl.concat(frames) if frames else pl.DataFrame(schema=TRADES_SCHEMA)
