"""Which archive files make one market-day of normalised trades, and reading them.

For a day ``D`` and a market, the pairs are those whose quote is a configured peg (and, for
futures, perpetuals unless delivery contracts are configured). A pair contributes when the
archive lists a file for ``D``. A pair listed before and after ``D`` but not on ``D`` is a
**missing day** (an error: the archive has a hole); a pair not yet listed, or delisted, is
skipped. When no pair has reached ``D`` yet the day is **not published** (an error the
schedule retries).
"""

from __future__ import annotations

import hashlib

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date

import polars as pl

from mnemo_assets.binance.archive import ArchiveError, ArchiveFile, ArchiveSource
from mnemo_assets.binance.parse import TRADES_SCHEMA, is_perpetual, parse_trades_csv, read_zip_member, split_pair


class MissingDayError(ArchiveError):
    """The archive lacks a file it should have for a day."""


@dataclass(frozen=True)
class DayFile:
    pair: str
    symbol: str
    peg: str


def market_pairs(source: ArchiveSource, market: str, pegs: Iterable[str], contracts: str = "perpetual") -> list[DayFile]:
    """The archive's pairs of ``market`` whose quote is one of ``pegs``, split into symbol and peg."""
    pegs = tuple(pegs)
    result = []
    for pair in source.list_pairs(market):
        if contracts == "perpetual" and not is_perpetual(pair, market):
            continue
        split = split_pair(pair, market, pegs)
        if split is not None:
            result.append(DayFile(pair, split[0], split[1]))
    return result


def plan_day(source: ArchiveSource, market: str, pegs: Iterable[str], day: date, contracts: str = "perpetual") -> list[DayFile]:
    """The pairs with a trades file on ``day``; raises :class:`MissingDayError` on holes."""
    planned: list[DayFile] = []
    holes: list[str] = []
    latest: date | None = None
    for item in market_pairs(source, market, pegs, contracts):
        days = source.list_days(market, item.pair)
        if not days:
            continue
        latest = max(latest, days[-1]) if latest else days[-1]
        if day in set(days):
            planned.append(item)
        elif days[0] < day < days[-1]:
            holes.append(item.pair)
    if holes:
        raise MissingDayError(
            f"{source.describe()}: {market} trades for {day} are missing for {len(holes)} pair(s) that have files "
            f"before and after it: {', '.join(holes[:10])}{' ...' if len(holes) > 10 else ''}"
        )
    if not planned and (latest is None or latest < day):
        raise MissingDayError(
            f"{source.describe()}: no {market} trades published for {day} yet "
            f"(latest day in the archive: {latest or 'none'})"
        )
    return planned


def fetch_day(
    source: ArchiveSource, market: str, pegs: Iterable[str], day: date, contracts: str = "perpetual"
) -> list[ArchiveFile]:
    """The verified archive files of one market-day (downloaded or generated where needed)."""
    return [source.fetch(market, item.pair, day) for item in plan_day(source, market, tuple(pegs), day, contracts)]


def archive_version(files: Iterable[ArchiveFile]) -> str:
    """A content version of archive files: a hash of their days, pairs and sha256s."""
    text = "\n".join(sorted(f"{f.day} {f.market} {f.pair} {f.sha256}" for f in files))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_day(files: Iterable[ArchiveFile], pegs: Iterable[str]) -> Iterator[pl.DataFrame]:
    """Normalised trades of fetched files, one frame per file; trades outside the file's day are an error."""
    pegs = tuple(pegs)
    for archive_file in files:
        frame = parse_trades_csv(read_zip_member(archive_file.path), archive_file.pair, archive_file.market, str(archive_file.path), pegs)
        outside = frame.filter(pl.col("time").dt.date() != archive_file.day)
        if outside.height:
            raise ArchiveError(
                f"{archive_file.path}: {outside.height} trade(s) outside {archive_file.day} "
                f"(first at {outside.get_column('time').min()})"
            )
        yield frame


def iter_day_trades(
    source: ArchiveSource, market: str, pegs: Iterable[str], day: date, contracts: str = "perpetual"
) -> Iterator[pl.DataFrame]:
    """Normalised trades of one market-day, one frame per pair (bounded memory)."""
    yield from read_day(fetch_day(source, market, pegs, day, contracts), pegs)


def day_trades(source: ArchiveSource, market: str, pegs: Iterable[str], day: date, contracts: str = "perpetual") -> pl.DataFrame:
    """All normalised trades of one market-day in one frame."""
    frames = list(iter_day_trades(source, market, pegs, day, contracts))
    return pl.concat(frames) if frames else pl.DataFrame(schema=TRADES_SCHEMA)
