"""Parsing archive trade files into normalised trades, and pair → (symbol, peg).

Normalised trades (SPEC.md): ``symbol, peg_symbol (str), trade_id (i64), price, qty, quote_qty
(f64), time (datetime[us]), is_buyer_maker (bool)``; ``qty`` in base units, ``quote_qty`` in
quote units (USD for COIN-M: contracts × contract size).

What the parser checks (every error names the file, and the line where there is one):

* **Layout.** Spot files have no header, futures files have one since 2022. A header line is
  accepted in any known spelling (``id``/``trade_id``, ``quote_qty``/``quoteQty``,
  ``is_buyer_maker``/``isBuyerMaker``, any case, a UTF-8 BOM); its columns must be the market's
  layout. Anything else is a :class:`TradesParseError` naming the file, the header and the
  expected layout.
* **Rows.** Every row has the layout's fields, integer ids and times, decimal prices and
  quantities, ``true``/``false`` sides (any case). Blank lines at the end are ignored; a blank
  line elsewhere is an error.
* **Time unit**, per file from the values (never from the date): milliseconds
  (``1e11 ≤ t < 1e14``) or microseconds (``1e14 ≤ t < 1e17``). Nanoseconds, seconds, negative
  times or a file mixing units are errors naming the value and its line.
* **Values.** :func:`parse_trades_bytes` counts non-finite (NaN, ±inf) and non-positive values
  (price ≤ 0, qty ≤ 0, quote/base qty < 0) and reports their lines; the strict
  :func:`parse_trades_csv` (and :func:`read_trades_file`) raise on them.
* **Zip member.** :func:`read_zip_member` refuses a member name with path components, and one
  that is not the expected ``{PAIR}-trades-{YYYY-MM-DD}.csv`` (another pair's or day's file).

An empty file (no bytes, blank lines, or a header only) parses to zero rows with
:attr:`ParsedTrades.empty` set; :mod:`mnemo_assets.binance.quality` records it as ``empty``.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path, PurePosixPath, PureWindowsPath

import polars as pl

from mnemo_assets.binance.archive import (
    ArchiveError,
    CorruptArchiveError,
    parse_trades_file_name,
    trades_file_name,
)
from mnemo_assets.markets import DatasetType

TRADES_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,
        "peg_symbol": pl.String,
        "trade_id": pl.Int64,
        "price": pl.Float64,
        "qty": pl.Float64,
        "quote_qty": pl.Float64,
        "time": pl.Datetime("us"),
        "is_buyer_maker": pl.Boolean,
    }
)

#: quote assets tried (longest suffix first) when no pegs are given
KNOWN_QUOTES: tuple[str, ...] = (
    "USDT",
    "USDC",
    "FDUSD",
    "TUSD",
    "BUSD",
    "USDP",
    "DAI",
    "USD",
    "BTC",
    "ETH",
    "BNB",
    "EUR",
    "TRY",
    "BRL",
    "GBP",
    "AUD",
    "JPY",
    "RUB",
    "UAH",
    "ZAR",
    "IDRT",
    "BIDR",
    "NGN",
    "PLN",
    "RON",
    "ARS",
    "MXN",
    "COP",
    "CZK",
    "XRP",
    "DOGE",
    "TRX",
    "DOT",
    "SOL",
    "PAX",
    "VAI",
    "AEUR",
    "EURI",
)

# raw CSV columns per market; the fourth column differs (quote_qty vs base_qty)
_COLUMNS = {
    "spot": ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"],
    "um": ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker"],
    "cm": ["id", "price", "qty", "base_qty", "time", "is_buyer_maker"],
}
# header spellings seen in the archive and Binance's APIs, keyed by the name lowercased with
# everything but letters removed (``quote_qty``, ``quoteQty`` and ``QUOTE_QTY`` → ``quoteqty``)
_HEADER_ALIASES = {
    "id": "id",
    "tradeid": "id",
    "price": "price",
    "qty": "qty",
    "quoteqty": "quote_qty",
    "baseqty": "base_qty",
    "time": "time",
    "isbuyermaker": "is_buyer_maker",
    "isbestmatch": "is_best_match",
}
_DELIVERY = re.compile(r"^(?P<root>[A-Z0-9]+)_(?P<expiry>\d{6})$")
#: what an archive pair name may look like (``BTCUSDT``, ``1000PEPEUSDT``, ``BTCUSD_PERP``)
PAIR_NAME = re.compile(r"[A-Z0-9][A-Z0-9_]{0,63}")

# time units by magnitude: ms in [1e11, 1e14) is 1973-03..5138; µs in [1e14, 1e17) and ns in
# [1e17, 2**63) are 1973 onwards too, so the three ranges never overlap for archive dates
_MS_MIN = 10**11
_US_MIN = 10**14
_NS_MIN = 10**17
_UNIT_NAMES = {"s": "seconds (too small for milliseconds)", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
#: line numbers listed in an error or ledger reason, at most
MAX_LINES_LISTED = 10


class TradesParseError(ArchiveError):
    """A trades file whose content does not match the archive's layout."""


class WrongMemberError(CorruptArchiveError):
    """A zip whose CSV member is not the file its name promises (another pair or day, or a path)."""


def contract_size(symbol: str) -> float:
    """COIN-M contract size in USD: 100 for BTC contracts, 10 for the others."""
    return 100.0 if symbol.split("_")[0] == "BTC" else 10.0


def is_perpetual(pair: str, market: str) -> bool:
    """Whether a pair is a perpetual (spot pairs count as perpetual)."""
    if market == "cm":
        return pair.endswith("_PERP")
    if market == "um":
        return "_" not in pair
    return True


def is_pair_name(pair: str) -> bool:
    """Whether ``pair`` looks like an archive pair (upper-case letters, digits, ``_``; no path).

    >>> is_pair_name("BTCUSD_PERP"), is_pair_name("../BTCUSDT"), is_pair_name("btcusdt")
    (True, False, False)
    """
    return isinstance(pair, str) and PAIR_NAME.fullmatch(pair) is not None


def split_pair(
    pair: str,
    market: str = "spot",
    pegs: Iterable[str] | None = None,
    known: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[str, str] | None:
    """Split a pair into ``(symbol, peg_symbol)``; ``None`` when no configured peg fits.

    Known exchange splits (``known``) win; otherwise the longest configured peg that is a suffix
    of the pair's root. Futures: ``BTCUSD_PERP`` → ``("BTC", "USD")``; a delivery contract keeps
    its expiry in the symbol (``BTCUSDT_250328`` → ``("BTC_250328", "USDT")``).

    >>> split_pair("BTCUSDT", "spot", ["USDT", "USDC"])
    ('BTC', 'USDT')
    >>> split_pair("BTCUSD_PERP", "cm")
    ('BTC', 'USD')
    >>> split_pair("ETHUSDT_250328", "um", ["USDT"])
    ('ETH_250328', 'USDT')
    """
    root, suffix = pair, ""
    if pair.endswith("_PERP"):
        root = pair[: -len("_PERP")]
    else:
        match = _DELIVERY.match(pair)
        if match:
            root, suffix = match.group("root"), "_" + match.group("expiry")
    peg_list = list(pegs) if pegs is not None else list(KNOWN_QUOTES)
    if known and pair in known:
        base, quote = known[pair]
        return (base + suffix, quote) if quote in peg_list else None
    if known and root in known:
        base, quote = known[root]
        return (base + suffix, quote) if quote in peg_list else None
    for peg in sorted(peg_list, key=len, reverse=True):
        if root.endswith(peg) and len(root) > len(peg):
            return root[: -len(peg)] + suffix, peg
    return None


# ---------------------------------------------------------------------------- time units


def time_unit_of(value: int) -> str:
    """The archive time unit a single epoch value reads as: ``s``, ``ms``, ``us`` or ``ns``.

    >>> time_unit_of(1723161600000), time_unit_of(1723161600000000), time_unit_of(1723161600000000000)
    ('ms', 'us', 'ns')
    """
    if value < _MS_MIN:
        return "s"
    if value < _US_MIN:
        return "ms"
    if value < _NS_MIN:
        return "us"
    return "ns"


def format_epoch(value: int, unit: str = "us") -> str:
    """A readable UTC time for an epoch value in ``unit``; never raises (out-of-range values
    are shown as the raw number)."""
    per_us = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": 0.001}.get(unit, 1)
    try:
        return (datetime(1970, 1, 1) + timedelta(microseconds=int(value) * per_us)).isoformat(sep=" ")
    except (OverflowError, ValueError, TypeError):
        return f"{value} ({unit} since 1970, outside the datetime range)"


def format_lines(lines: Iterable[int], total: int | None = None) -> str:
    """``"lines 3, 7, 9"`` (at most :data:`MAX_LINES_LISTED`, then ``"... (N in all)"``)."""
    listed = list(lines)[:MAX_LINES_LISTED]
    text = ("line " if len(listed) == 1 else "lines ") + ", ".join(str(n) for n in listed)
    if total is not None and total > len(listed):
        text += f" ... ({total} in all)"
    return text


# ---------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class ParsedTrades:
    """One archive CSV, parsed: every data row normalised, in file order, and the file's facts.

    ``first_line`` is the 1-based line number of the first data row (2 after a header), so row
    ``i`` of :attr:`trades` is line ``first_line + i``.
    """

    trades: pl.DataFrame
    header: str | None
    time_unit: str | None
    first_line: int
    non_finite: int = 0
    non_finite_lines: tuple[int, ...] = ()
    non_positive: int = 0
    non_positive_lines: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        """No data row at all (an empty file, blank lines only, or a header only)."""
        return self.trades.height == 0

    def value_problems(self, where: str) -> list[str]:
        """Messages for non-finite and non-positive values (empty when there are none)."""
        out = []
        if self.non_finite:
            out.append(
                f"{where}: {self.non_finite} row(s) with a non-finite price or quantity (NaN or inf) at "
                f"{format_lines(self.non_finite_lines, self.non_finite)}"
            )
        if self.non_positive:
            out.append(
                f"{where}: {self.non_positive} row(s) with price <= 0, qty <= 0 or a negative quote/base qty at "
                f"{format_lines(self.non_positive_lines, self.non_positive)}"
            )
        return out


def _is_blank(data: bytes) -> bool:
    return not data[:65536].strip() and not data.strip()


def _first_line(data: bytes) -> str:
    end = data.find(b"\n")
    line = data if end < 0 else data[:end]
    return line.decode("utf-8", "replace").lstrip("\ufeff").strip()


def _header(line: str, market: str, where: str) -> list[str] | None:
    """The layout names of a header line; ``None`` for a data line. Raises on other text."""
    expected = _COLUMNS[market]
    if not line:
        raise TradesParseError(f"{where}: line 1 is blank; expected a trade or the {market} header {','.join(expected)}")
    first_field = line.split(",", 1)[0].strip().strip('"')
    if first_field.lstrip("-").isdigit():
        return None
    fields = [f.strip().strip('"') for f in line.split(",")]
    names = [_HEADER_ALIASES.get(re.sub(r"[^a-z]", "", f.lower())) for f in fields]
    if any(n is None for n in names):
        raise TradesParseError(
            f"{where}: line 1 is neither a trade nor a known header: {line[:200]!r} (expected the {market} layout {','.join(expected)})"
        )
    if names != expected:
        raise TradesParseError(f"{where}: header {line[:200]!r} does not match the {market} layout {','.join(expected)}")
    return names  # type: ignore[return-value]


def _find_bad_line(data: bytes, skip: int, ncols: int, where: str) -> str:
    """Locate the first malformed line for an error message (slow path, only on failure)."""
    lines = data.decode("utf-8", "replace").splitlines()
    last = len(lines)
    while last > skip and not lines[last - 1].strip():
        last -= 1  # blank lines at the end are ignored
    for idx in range(skip, last):
        line = lines[idx].lstrip("\ufeff")
        if not line.strip():
            return f"{where}: line {idx + 1} is blank"
        fields = line.split(",")
        if len(fields) != ncols:
            return f"{where}: line {idx + 1} has {len(fields)} fields, expected {ncols}: {line[:200]!r}"
        try:
            int(fields[0])
            float(fields[1])
            float(fields[2])
            float(fields[3])
            int(fields[4])
        except ValueError:
            return f"{where}: line {idx + 1} is malformed: {line[:200]!r}"
        if fields[5].strip().lower() not in ("true", "false"):
            return f"{where}: line {idx + 1} has is_buyer_maker {fields[5]!r}, expected true/false: {line[:200]!r}"
    return f"{where}: could not parse the CSV"


def _lines_where(frame: pl.DataFrame, mask: pl.Expr, first_line: int) -> tuple[int, tuple[int, ...]]:
    hits = frame.select(mask.alias("m")).to_series()
    n = int(hits.sum())
    if not n:
        return 0, ()
    idx = hits.arg_true().head(MAX_LINES_LISTED).to_list()
    return n, tuple(first_line + i for i in idx)


def _check_times(times: pl.Series, first_line: int, where: str) -> str | None:
    """The file's time unit (``ms``/``us``), or a clear error for anything else."""
    if not times.len():
        return None
    lo, hi = int(times.min()), int(times.max())  # type: ignore[arg-type]
    if lo < 0:
        line = first_line + int(times.arg_min())  # type: ignore[arg-type]
        raise TradesParseError(f"{where}: negative trade time {lo} at line {line}")
    lo_unit, hi_unit = time_unit_of(lo), time_unit_of(hi)
    if lo_unit != hi_unit:
        raise TradesParseError(
            f"{where}: trade times mix {_UNIT_NAMES[lo_unit]} and {_UNIT_NAMES[hi_unit]} ({lo} at line "
            f"{first_line + int(times.arg_min())} .. {hi} at line {first_line + int(times.arg_max())}); "  # type: ignore[arg-type]
            "the archive uses one unit per file"
        )
    if lo_unit in ("ms", "us"):
        return lo_unit
    value, line = (hi, first_line + int(times.arg_max())) if lo_unit == "ns" else (lo, first_line + int(times.arg_min()))  # type: ignore[arg-type]
    raise TradesParseError(
        f"{where}: trade time {value} at line {line} is in {_UNIT_NAMES[lo_unit]} "
        f"({format_epoch(value, lo_unit)} read as such); the archive's trade times are milliseconds "
        "(1e11 <= t < 1e14) or microseconds (1e14 <= t < 1e17)"
    )


def parse_trades_bytes(data: bytes, pair: str, market: str, where: str, pegs: Iterable[str] | None = None) -> ParsedTrades:
    """Parse the bytes of one archive CSV: every data row normalised, in file order, with the
    file's header, time unit and value counts (see :class:`ParsedTrades`).

    Raises :class:`TradesParseError` (naming ``where`` and the line) on anything that is not the
    archive's layout; non-finite and non-positive values are counted, not raised (see
    :func:`parse_trades_csv` for the strict reader).
    """
    split = split_pair(pair, market, pegs)
    if split is None:
        raise TradesParseError(f"{where}: pair {pair!r} ends with none of the pegs {sorted(pegs or KNOWN_QUOTES)}")
    symbol, peg = split
    expected = _COLUMNS[market]
    ncols = len(expected)
    if _is_blank(data):
        return ParsedTrades(pl.DataFrame(schema=TRADES_SCHEMA), None, None, 1)
    line1 = _first_line(data)
    names = _header(line1, market, where)
    skip = 0 if names is None else 1
    header = None if names is None else line1
    dtypes = [pl.Int64, pl.Float64, pl.Float64, pl.Float64, pl.Int64, pl.String] + [pl.String] * (ncols - 6)
    schema = dict(zip(expected, dtypes, strict=True))
    try:
        # names come from the layout, by position: the header's own spelling never reaches polars
        raw = pl.read_csv(
            io.BytesIO(data),
            has_header=False,
            skip_lines=skip,
            schema=schema,
            truncate_ragged_lines=False,
            raise_if_empty=False,
        )
    except Exception as exc:
        raise TradesParseError(_find_bad_line(data, skip, ncols, where) + f" ({type(exc).__name__})") from exc
    if raw.width != ncols:  # pragma: no cover - read_csv enforces the schema
        raise TradesParseError(f"{where}: {raw.width} columns, expected {ncols}")
    if raw.null_count().row(0) != (0,) * ncols:
        # blank lines at the end read as all-null rows: drop those, anything else is malformed
        all_null = raw.select(pl.all_horizontal(pl.all().is_null())).to_series()
        keep = raw.height
        while keep and all_null[keep - 1]:
            keep -= 1
        raw = raw.head(keep)
        if raw.null_count().row(0) != (0,) * ncols:
            raise TradesParseError(_find_bad_line(data, skip, ncols, where) + " (empty field)")
    first_line = skip + 1
    side = raw.get_column("is_buyer_maker").str.strip_chars().str.to_lowercase()
    if not side.is_in(["true", "false"]).all():
        raise TradesParseError(_find_bad_line(data, skip, ncols, where))
    unit = _check_times(raw.get_column("time"), first_line, where)
    factor = 1000 if unit == "ms" else 1
    third = expected[3]
    non_finite, nf_lines = _lines_where(raw, pl.any_horizontal(~pl.col(c).is_finite() for c in ("price", "qty", third)), first_line)
    non_positive, np_lines = _lines_where(raw, (pl.col("price") <= 0) | (pl.col("qty") <= 0) | (pl.col(third) < 0), first_line)
    if market == "cm":
        qty = pl.col("base_qty")
        quote_qty = pl.col("qty") * contract_size(symbol)
    else:
        qty = pl.col("qty")
        quote_qty = pl.col("quote_qty")
    frame = raw.with_columns(side.alias("is_buyer_maker")).select(
        pl.lit(symbol, pl.String).alias("symbol"),
        pl.lit(peg, pl.String).alias("peg_symbol"),
        pl.col("id").alias("trade_id"),
        pl.col("price"),
        qty.cast(pl.Float64).alias("qty"),
        quote_qty.cast(pl.Float64).alias("quote_qty"),
        pl.from_epoch(pl.col("time") * factor, time_unit="us").alias("time"),
        (pl.col("is_buyer_maker") == "true").alias("is_buyer_maker"),
    )
    return ParsedTrades(frame, header, unit, first_line, non_finite, nf_lines, non_positive, np_lines)


def parse_trades_csv(data: bytes, pair: str, market: str, where: str, pegs: Iterable[str] | None = None) -> pl.DataFrame:
    """Parse the bytes of one archive CSV into normalised trades, in file order.

    ``where`` names the file in error messages. Raises :class:`TradesParseError` on a malformed
    file and on non-finite or non-positive values. An empty file gives zero rows (use
    :func:`parse_trades_bytes` or :func:`mnemo_assets.binance.quality.read_pair_day` to tell it
    apart). Duplicates are not removed here (see :mod:`mnemo_assets.binance.quality`).
    """
    parsed = parse_trades_bytes(data, pair, market, where, pegs)
    problems = parsed.value_problems(where)
    if problems:
        raise TradesParseError("; ".join(problems))
    return parsed.trades


# ---------------------------------------------------------------------------- zips


def expected_member_name(pair: str, day: date) -> str:
    """The CSV an archive zip of ``(pair, day)`` holds: ``{PAIR}-trades-{YYYY-MM-DD}.csv``."""
    return trades_file_name(pair, day, "csv")


def _check_member_name(path: Path, name: str, expected: str | None) -> None:
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if (
        "\\" in name
        or "/" in name
        or posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or ".." in posix.parts
        or not name
        or "\x00" in name
    ):
        raise WrongMemberError(f"{path}: zip member {name!r} has path components; expected a bare file name" + (f" {expected!r}" if expected else ""))
    if expected is None:
        return
    if name == expected:
        return
    try:
        got = parse_trades_file_name(name)
        want = parse_trades_file_name(expected)
    except ValueError:
        got, want = None, ()
    if got != want or not name.endswith(".csv"):
        raise WrongMemberError(f"{path}: zip member {name!r} is not {expected!r} (the zip holds another pair's or day's file)")


def read_zip_member(path: Path, expected: str | None = None) -> bytes:
    """The single CSV inside an archive zip, or a clear :class:`CorruptArchiveError`.

    The member's name must be a bare file name (no directory, ``..``, drive or backslash); with
    ``expected`` (see :func:`expected_member_name`) it must also name the same pair and day
    (``.partial.csv`` accepted), else :class:`WrongMemberError`.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) != 1 or not members[0].filename.endswith(".csv"):
                raise CorruptArchiveError(f"{path}: expected exactly one CSV in the zip, found {[m.filename for m in members]}")
            _check_member_name(path, members[0].filename, expected)
            return zf.read(members[0])
    except zipfile.BadZipFile as exc:
        raise CorruptArchiveError(f"{path}: not a valid zip file ({exc})") from exc
    except (zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise CorruptArchiveError(f"{path}: cannot read the zip ({exc})") from exc
    except Exception as exc:  # zlib.error, CRC failures
        if isinstance(exc, ArchiveError):
            raise
        raise CorruptArchiveError(f"{path}: corrupt zip member ({type(exc).__name__}: {exc})") from exc


def read_trades_file(
    path: str | Path, dataset_type: DatasetType | str = DatasetType.BinanceSpotTrades, pegs: Iterable[str] | None = None
) -> pl.DataFrame:
    """Normalised trades of one archive file (``.zip`` or ``.csv``); the pair comes from the file name.

    ``symbol`` and ``peg_symbol`` are strings here (one file, one symbol); dataset readers give
    ``symbol`` as the dataset's ``pl.Enum``. Rows are in file order; the strict checks of
    :func:`parse_trades_csv` apply, and a zip must hold the CSV its name promises. For the
    cleaned trades of a file with its quality facts, see
    :func:`mnemo_assets.binance.quality.read_pair_day`.

    >>> df = read_trades_file("BTCUSDT-trades-2024-08-08.zip", DatasetType.BinanceSpotTrades)  # doctest: +SKIP
    >>> df.columns  # doctest: +SKIP
    ['symbol', 'peg_symbol', 'trade_id', 'price', 'qty', 'quote_qty', 'time', 'is_buyer_maker']
    """
    path = Path(path)
    market = DatasetType.from_market(dataset_type).market if not isinstance(dataset_type, DatasetType) else dataset_type.market
    pair, day = parse_trades_file_name(path.name)
    if path.suffix == ".zip":
        data = read_zip_member(path, expected_member_name(pair, day))
    else:
        data = path.read_bytes()
    return parse_trades_csv(data, pair, market, str(path), pegs)
