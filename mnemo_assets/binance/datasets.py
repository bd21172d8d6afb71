"""Research readers over the store, with the seed notebooks' names and methods.

>>> import mnemo_assets as ma
>>> ds = ma.binance.BinanceLastTradesGrid("USDT", "10m", ma.DatasetType.BinanceSpotTrades)  # doctest: +SKIP
>>> df = ds[ds.partitions[30:50]].collect()  # doctest: +SKIP

Every read gives ``symbol`` as one ``pl.Enum`` over the sorted symbols of the dataset (all its
days), so frames of different days always concatenate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl
from upath import UPath

from mnemo_assets.intervals import interval_name
from mnemo_assets.markets import DatasetType
from mnemo_assets.storage.layout import grid_dataset, trades_dataset
from mnemo_assets.storage.parquet import Stamp, footer_symbols, list_partitions, scan_days, symbol_enum


def _default_root() -> str:
    from mnemo_assets.config import load_settings

    return load_settings().data_root


def _as_day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return date.fromisoformat(value)
    raise TypeError(f"a partition is a date or 'YYYY-MM-DD', got {value!r}")


class ParquetDataset:
    """A daily-partitioned dataset of the store: ``{root}/{dataset}/date=YYYY-MM-DD/*.parquet``.

    Nothing is cached across calls but verified footers, per file version: every call lists
    the dataset afresh (one listing per read, whichever process wrote), so days added or
    re-materialized by another process are seen at once.
    """

    def __init__(self, dataset: str, root: str | None = None, schema: pl.Schema | None = None):
        self.root = UPath(root if root is not None else _default_root())
        self.dataset = dataset
        self._schema = schema

    @property
    def path(self) -> UPath:
        """The dataset folder."""
        return self.root / self.dataset

    @property
    def glob(self) -> str:
        """``{path}/date=*/*.parquet``, for ``pl.scan_parquet`` (symbols read back as strings)."""
        return f"{self.path}/date=*/*.parquet"

    def listing(self) -> dict[date, Stamp]:
        """``{day: (size, version)}`` of the stored days: a fresh listing of the store."""
        return list_partitions(self.root, self.dataset)

    @property
    def partitions(self) -> list[date]:
        """The stored days, sorted (a fresh listing)."""
        return sorted(self.listing())

    def symbols_by_day(self, days: Sequence[date], listing: Mapping[date, Stamp] | None = None) -> dict[date, tuple[str, ...]]:
        """``{day: sorted symbols}`` of stored days, from the files' verified footers."""
        listing = self.listing() if listing is None else listing
        return footer_symbols(self.root, self.dataset, list(days), listing=listing)

    def refresh(self) -> None:
        """Kept for the seed notebooks: reads are always fresh (footers are cached per file version)."""

    def _enum(self, listing: Mapping[date, Stamp]) -> pl.Enum:
        return symbol_enum(self.symbols_by_day(sorted(listing), listing).values())

    @property
    def symbol_enum(self) -> pl.Enum:
        """``pl.Enum`` over the sorted symbols of every stored day."""
        return self._enum(self.listing())

    def universe(self) -> pl.DataFrame:
        """``(symbol, date)`` pairs with data, sorted; read from file footers only."""
        listing = self.listing()
        by_day = self.symbols_by_day(sorted(listing), listing)
        enum = symbol_enum(by_day.values())
        rows = [(s, d) for d, symbols in by_day.items() for s in symbols]
        frame = pl.DataFrame(rows, schema={"symbol": pl.String, "date": pl.Date}, orient="row")
        return frame.with_columns(pl.col("symbol").cast(enum)).sort("symbol", "date")

    def cast_symbol_col_to_enum(self, frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
        """Cast a frame's ``symbol`` to this dataset's Enum (unknown symbols raise)."""
        return frame.with_columns(pl.col("symbol").cast(pl.String).cast(self.symbol_enum))

    def lazyframe(self, start: date | str | None = None, end: date | str | None = None) -> pl.LazyFrame:
        """All stored days (or ``[start, end)``) as one ``LazyFrame``, ``symbol`` as the dataset Enum."""
        listing = self.listing()
        days = sorted(listing)
        if start is not None:
            days = [d for d in days if d >= _as_day(start)]
        if end is not None:
            days = [d for d in days if d < _as_day(end)]
        return self._scan(days, listing)

    def _scan(self, days: Sequence[date], listing: Mapping[date, Stamp] | None = None) -> pl.LazyFrame:
        listing = self.listing() if listing is None else listing
        if not days and self._schema is None and listing:
            return self._scan(sorted(listing)[:1], listing).head(0)
        return scan_days(self.root, self.dataset, days, enum=self._enum(listing), schema=self._schema, listing=listing)

    def __getitem__(self, partitions: date | str | Iterable[date | str] | slice) -> pl.LazyFrame:
        """A ``LazyFrame`` of the given days (a day, a list of days, or a slice of :attr:`partitions`)."""
        listing = self.listing()
        if isinstance(partitions, slice):
            days = sorted(listing)[partitions]
        elif isinstance(partitions, (date, str)):
            days = [_as_day(partitions)]
        else:
            days = [_as_day(p) for p in partitions]
        return self._scan(sorted(set(days)), listing)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class BinanceLastTradesGrid(ParquetDataset):
    """Last-trade grid of one market and peg at one interval (the seed's reader).

    ``parquet_names`` and ``num_workers`` are accepted for compatibility with the seed notebooks
    (polars reads in parallel on its own).
    """

    def __init__(
        self,
        peg_symbol: str,
        grid_interval: str | timedelta,
        dataset_type: DatasetType = DatasetType.BinanceSpotTrades,
        root: str | None = None,
        parquet_names: str = "*.parquet",
        num_workers: int | None = None,
        **_: Any,
    ):
        from mnemo_assets.grids import GRID_SCHEMA
        from mnemo_assets.intervals import day_interval

        self.peg_symbol = peg_symbol
        self.grid_interval = interval_name(day_interval(grid_interval, "grid interval"))
        self.dataset_type = DatasetType.from_market(dataset_type)
        self.parquet_names = parquet_names
        super().__init__(grid_dataset(self.dataset_type.market, self.grid_interval, peg_symbol), root, GRID_SCHEMA)

    @property
    def partitions(self) -> list[date]:
        """The stored days, sorted. A grid that is not in the store at all (an unknown peg or
        interval, a wrong root) is an error naming what is there, never an empty frame."""
        days = super().partitions
        if not days and not _exists(self.path):
            stored = _siblings(self.root, f"binance/grids/{self.dataset_type.market}/last_trade")
            raise FileNotFoundError(
                f"no {self.dataset_type.market} grid at {self.grid_interval} for peg {self.peg_symbol} under {self.root} "
                f"(stored grids: {', '.join(stored) or 'none'}; materialize it first, e.g. `mnemo backfill`)"
            )
        return days

    def quality(self, start: date | str | None = None, end: date | str | None = None) -> pl.LazyFrame:
        """The data-quality ledger rows of this grid's market and peg (one per pair and day):
        ``status`` (ok, degraded, missing, empty, rejected) and ``reasons``. Grid rows of a
        ``(symbol, date)`` come from that pair-day; gridded returns of day D use D−1..D+1, and
        metadata at ``G`` the days their windows reach.

        >>> bad = grid.quality().filter(pl.col("status") != "ok").select("symbol", "date")  # doctest: +SKIP
        >>> clean = grid.lazyframe().join(bad.with_columns(pl.col("symbol").cast(grid.symbol_enum)), on=["symbol", "date"], how="anti")  # doctest: +SKIP
        """
        ledger = BinanceQuality(self.dataset_type, str(self.root)).lazyframe(start, end)
        return ledger.filter(pl.col("peg_symbol") == self.peg_symbol)


class BinanceTrades(ParquetDataset):
    """Normalised trades of one market (all configured pegs)."""

    def __init__(self, dataset_type: DatasetType = DatasetType.BinanceSpotTrades, root: str | None = None):
        from mnemo_assets.binance.parse import TRADES_SCHEMA

        self.dataset_type = DatasetType.from_market(dataset_type)
        super().__init__(trades_dataset(self.dataset_type.market), root, TRADES_SCHEMA)


class BinanceQuality(ParquetDataset):
    """The data-quality ledger of one market: one row per ``(pair, day)`` ingested, with the
    source file, its checksums (and the previous one when the archive re-published it), row and
    id facts (duplicates, gaps), and a ``status``: ``ok``, ``degraded`` (published, see
    ``reasons``), ``missing``, ``empty``, ``rejected`` (not published)."""

    def __init__(self, dataset_type: DatasetType = DatasetType.BinanceSpotTrades, root: str | None = None):
        from mnemo_assets.binance.quality import QUALITY_SCHEMA
        from mnemo_assets.storage.layout import quality_dataset

        self.dataset_type = DatasetType.from_market(dataset_type)
        super().__init__(quality_dataset(self.dataset_type.market), root, QUALITY_SCHEMA)

    def degraded(self, start: date | str | None = None, end: date | str | None = None) -> pl.DataFrame:
        """``(symbol, peg_symbol, date, status, reasons)`` of every pair-day that is not ``ok``."""
        return (
            self.lazyframe(start, end)
            .filter(pl.col("status") != "ok")
            .select(pl.col("symbol").cast(pl.String), "peg_symbol", "date", "status", "reasons")
            .sort("date", "symbol", "peg_symbol")
            .collect()
        )


def _exists(path: UPath) -> bool:
    try:
        return path.exists()
    except OSError:  # pragma: no cover - unreachable object store
        return False


def _siblings(root: UPath, prefix: str) -> list[str]:
    """``{interval}/peg_symbol={PEG}`` folders stored below ``prefix`` (for error messages)."""
    base = root / prefix
    if not _exists(base):
        return []
    out = []
    for interval in sorted(p.name for p in base.iterdir()):
        for peg in sorted(p.name for p in (base / interval).iterdir()):
            out.append(f"{interval} {peg.replace('peg_symbol=', '')}")
    return out


def last_rows_before_day(dataset: ParquetDataset, before: date, symbols: Iterable[str], time_col: str = "last_trade_time") -> pl.DataFrame | None:
    """Per symbol, its last row stored on a day before ``before``; ``symbol`` as a String.
    ``None`` when no symbol has an earlier day.

    Earlier days are walked newest first, reading only each day's footer (its symbol set; the
    content hash is not checked there) until every symbol is found; only the days that hold
    a symbol's last row are read, and those are verified in full. So the cost is one footer
    per day walked (a few KB) plus the days read, never a verification of the whole history.
    A symbol that never had a row before (a new listing) walks every earlier footer."""
    needed = set(symbols)
    if not needed:
        return None
    listing = dataset.listing()
    days = [d for d in sorted(listing) if d < before]
    wanted: dict[date, set[str]] = {}
    for day in reversed(days):
        if not needed:
            break
        have = needed.intersection(footer_symbols(dataset.root, dataset.dataset, [day], verify=False, listing=listing)[day])
        if have:
            wanted[day] = have
            needed -= have
    if not wanted:
        return None
    frames = []
    for day, syms in wanted.items():
        # this day's own Enum (not the dataset's, which would verify every stored day)
        frame = (
            scan_days(dataset.root, dataset.dataset, [day], listing=listing)
            .filter(pl.col("symbol").cast(pl.String).is_in(sorted(syms)))
            .with_row_index("__row")
        )
        frames.append(
            frame.sort(time_col, "__row")
            .group_by("symbol", maintain_order=True)
            .last()
            .drop("__row")
            .with_columns(pl.col("symbol").cast(pl.String))
            .collect()
        )
    return pl.concat(frames)
