"""Parsing archive trade files into normalised trades, and pair → (symbol, peg).

Normalised trades (SPEC.md): ``symbol, peg_symbol (str), trade_id (i64), price, qty, quote_qty
(f64), time (datetime[us]), is_buyer_maker (bool)``; ``qty`` in base units, ``quote_qty`` in
quote units (USD for COIN-M: contracts × contract size).
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import polars as pl

from mnemo_assets.binance.archive import ArchiveError, CorruptArchiveError, parse_trades_file_name
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
    "USDT", "USDC", "FDUSD", "TUSD", "BUSD", "USDP", "DAI", "USD", "BTC", "ETH", "BNB", "EUR",
    "TRY", "BRL", "GBP", "AUD", "JPY", "RUB", "UAH", "ZAR", "IDRT", "BIDR", "NGN", "PLN", "RON",
    "ARS", "MXN", "COP", "CZK", "XRP", "DOGE", "TRX", "DOT", "SOL", "PAX", "VAI", "AEUR", "EURI",
)

# raw CSV columns per market; the middle column differs (quote_qty vs base_qty)
_COLUMNS = {
    "spot": ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"],
    "um": ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker"],
    "cm": ["id", "price", "qty", "base_qty", "time", "is_buyer_maker"],
}
# header spellings seen in the archive, normalised to the names above
_HEADER_ALIASES = {
    "id": "id", "trade_id": "id", "price": "price", "qty": "qty", "quoteqty": "quote_qty",
    "quote_qty": "quote_qty", "base_qty": "base_qty", "baseqty": "base_qty", "time": "time",
    "isbuyermaker": "is_buyer_maker", "is_buyer_maker": "is_buyer_maker",
    "isbestmatch": "is_best_match", "is_best_match": "is_best_match",
}
_DELIVERY = re.compile(r"^(?P<root>[A-Z0-9]+)_(?P<expiry>\d{6})$")
# ms timestamps stay below 1e14 until the year 5138; µs timestamps are above it after 1973
_US_THRESHOLD = 100_000_000_000_000


class TradesParseError(ArchiveError):
    """A trades file whose content does not match the archive's layout."""


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


def _read_csv_bytes(data: bytes, where: str) -> tuple[bytes, bool, list[str] | None]:
    """Detect a header line; return (data, has_header, header names)."""
    first_line = data.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    if not first_line:
        return data, False, None
    first_field = first_line.split(",", 1)[0].strip()
    if first_field.lstrip("-").isdigit():
        return data, False, None
    names = [_HEADER_ALIASES.get(n.strip().lower()) for n in first_line.split(",")]
    if any(n is None for n in names):
        raise TradesParseError(f"{where}: line 1 is neither a trade nor a known header: {first_line[:200]!r}")
    return data, True, names  # type: ignore[return-value]


def _find_bad_line(data: bytes, has_header: bool, ncols: int, where: str) -> str:
    """Locate the first malformed line for an error message (slow path, only on failure)."""
    lines = data.decode("utf-8", "replace").splitlines()
    start = 1 if has_header else 0
    for idx in range(start, len(lines)):
        line = lines[idx]
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != ncols:
            return f"{where}: line {idx + 1} has {len(fields)} fields, expected {ncols}: {line[:200]!r}"
        try:
            int(fields[0]); float(fields[1]); float(fields[2]); float(fields[3]); int(fields[4])  # noqa: E702
        except ValueError:
            return f"{where}: line {idx + 1} is malformed: {line[:200]!r}"
        if fields[5].strip().lower() not in ("true", "false"):
            return f"{where}: line {idx + 1} has is_buyer_maker {fields[5]!r}, expected true/false: {line[:200]!r}"
    return f"{where}: could not parse the CSV"


def parse_trades_csv(data: bytes, pair: str, market: str, where: str, pegs: Iterable[str] | None = None) -> pl.DataFrame:
    """Parse the bytes of one archive CSV into normalised trades.

    ``where`` names the file in error messages. Raises :class:`TradesParseError`.
    """
    split = split_pair(pair, market, pegs)
    if split is None:
        raise TradesParseError(f"{where}: pair {pair!r} ends with none of the pegs {sorted(pegs or KNOWN_QUOTES)}")
    symbol, peg = split
    expected = _COLUMNS[market]
    if not data.strip():
        return pl.DataFrame(schema=TRADES_SCHEMA)
    data, has_header, names = _read_csv_bytes(data, where)
    if names is not None and names != expected[: len(names)]:
        raise TradesParseError(f"{where}: header {names} does not match the {market} layout {expected}")
    ncols = len(expected)
    dtypes = [pl.Int64, pl.Float64, pl.Float64, pl.Float64, pl.Int64, pl.String] + [pl.String] * (ncols - 6)
    schema = dict(zip(expected, dtypes, strict=True))
    try:
        raw = pl.read_csv(
            io.BytesIO(data), has_header=has_header, new_columns=None, schema=schema,
            truncate_ragged_lines=False, raise_if_empty=False,
        )
    except Exception as exc:
        raise TradesParseError(_find_bad_line(data, has_header, ncols, where) + f" ({type(exc).__name__})") from exc
    if raw.width != ncols:  # pragma: no cover - read_csv enforces the schema
        raise TradesParseError(f"{where}: {raw.width} columns, expected {ncols}")
    if raw.null_count().row(0) != (0,) * ncols:
        raise TradesParseError(_find_bad_line(data, has_header, ncols, where) + " (empty field)")
    side = raw.get_column("is_buyer_maker").str.strip_chars().str.to_lowercase()
    if not side.is_in(["true", "false"]).all():
        raise TradesParseError(_find_bad_line(data, has_header, ncols, where))
    times = raw.get_column("time")
    if raw.height:
        lo, hi = times.min(), times.max()
        if lo < 0:
            raise TradesParseError(f"{where}: negative trade time {lo}")
        if (lo < _US_THRESHOLD) != (hi < _US_THRESHOLD):
            raise TradesParseError(f"{where}: trade times mix milliseconds and microseconds ({lo} .. {hi})")
        factor = 1000 if hi < _US_THRESHOLD else 1
    else:
        factor = 1
    if market == "cm":
        qty = pl.col("base_qty")
        quote_qty = pl.col("qty") * contract_size(symbol)
    else:
        qty = pl.col("qty")
        quote_qty = pl.col("quote_qty")
    return raw.with_columns(side.alias("is_buyer_maker")).select(
        pl.lit(symbol, pl.String).alias("symbol"),
        pl.lit(peg, pl.String).alias("peg_symbol"),
        pl.col("id").alias("trade_id"),
        pl.col("price"),
        qty.cast(pl.Float64).alias("qty"),
        quote_qty.cast(pl.Float64).alias("quote_qty"),
        pl.from_epoch(pl.col("time") * factor, time_unit="us").alias("time"),
        (pl.col("is_buyer_maker") == "true").alias("is_buyer_maker"),
    )


def read_zip_member(path: Path) -> bytes:
    """The single CSV inside an archive zip, or a clear :class:`CorruptArchiveError`."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) != 1 or not members[0].filename.endswith(".csv"):
                raise CorruptArchiveError(
                    f"{path}: expected exactly one CSV in the zip, found {[m.filename for m in members]}"
                )
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
    ``symbol`` as the dataset's ``pl.Enum``.

    >>> df = read_trades_file("BTCUSDT-trades-2024-08-08.zip", DatasetType.BinanceSpotTrades)  # doctest: +SKIP
    >>> df.columns  # doctest: +SKIP
    ['symbol', 'peg_symbol', 'trade_id', 'price', 'qty', 'quote_qty', 'time', 'is_buyer_maker']
    """
    path = Path(path)
    market = DatasetType.from_market(dataset_type).market if not isinstance(dataset_type, DatasetType) else dataset_type.market
    pair, _day = parse_trades_file_name(path.name)
    if path.suffix == ".zip":
        data = read_zip_member(path)
    else:
        data = path.read_bytes()
    return parse_trades_csv(data, pair, market, str(path), pegs)
