"""1-minute klines: reading the archive's files, and making them from trades as the exchange does.

**Normalised klines** (:data:`KLINES_SCHEMA`), one row per minute, whatever the market::

    open_time (datetime[us]), open, high, low, close (f64), volume (f64, base units),
    quote_volume (f64, quote units), count (i64), taker_buy_volume (f64, base units),
    taker_buy_quote_volume (f64, quote units), close_time (datetime[us])

like normalised trades' ``qty`` / ``quote_qty``: for COIN-M the file's ``volume`` and
``taker_buy_volume`` count contracts and its ``quote_volume`` / ``taker_buy_quote_volume`` are
in the base asset (Binance's README: "Base asset volume", "Taker buy base asset volume"), so
normalised ``volume`` is the file's base-asset column and ``quote_volume`` is contracts ×
contract size (USD; 100 for BTCUSD_PERP, 10 for the others). ``close_time`` is kept as the
file has it: the minute's start + 59.999 s in the file's unit (59 999 ms, or 59 999 999 µs for
the spot files from 2025-01-01 on). Units are detected from the values, never from the date.

**Which minutes exist** (:func:`minute_bars`). The exchange emits a kline for every minute
while a pair is trading, with or without trades ("Kline always generate even if there is no
trade", binance/binance-public-data#153; a minute without trades has ``n = 0``, zero volumes
and open = high = low = close = the last traded price, i.e. the close of the previous kline
with a trade, dev.binance.vision "filtering of valid klines through socket stream"). So a
day's klines run, minute by minute:

* from 00:00 when the pair traded before the day (its last price is the ``previous_close``),
  else from the minute of its first trade (a new listing has no price before it);
* to 23:59, or to the minute before trading stops (a delisting: ``end``).

Minutes inside that range without trades repeat the last price with ``count = 0``. (Exchange
outages leave holes in real files, binance/binance-public-data#365; :func:`minute_bars` cannot
know about them.) The real klines in the test fixtures (ADABTC 2021-11-27/28, 10 consecutive
minutes each, all with trades) agree with this layout but hold no empty minute.

Sums are exact: every trade value is read back to its decimal (the shortest representation of
the double, exact for any value with at most 12 decimals and 15 significant digits, which
covers every archive value), summed as a decimal, and the sum parsed to the double a CSV parser
reads for it. So the bars of a day's trades equal, bit for bit, the parsed file the exchange
(or the synthetic archive, which renders its klines through this module) prints for that day.
"""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from mnemo_assets.binance import formats
from mnemo_assets.binance.archive import ArchiveError
from mnemo_assets.markets import DatasetType

__all__ = [
    "DIFFERENCES", "KLINES_SCHEMA", "KlinesParseError", "compare_minutes", "kline_minutes", "minute_bars",
    "parse_klines_batch", "parse_klines_csv", "read_klines_file", "reconcile", "render_klines_csv", "trade_minutes",
]

KLINES_SCHEMA = pl.Schema(
    {
        "open_time": pl.Datetime("us"),
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.Float64,
        "quote_volume": pl.Float64,
        "count": pl.Int64,
        "taker_buy_volume": pl.Float64,
        "taker_buy_quote_volume": pl.Float64,
        "close_time": pl.Datetime("us"),
    }
)

_MINUTE_US = 60_000_000
#: close_time - open_time, in µs of the normalised frame, per file unit
_CLOSE_OFFSET_US = {"ms": 59_999_000, "us": 59_999_999}
_SUMS = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
_DEC = pl.Decimal(38, 12)
_RAW_DTYPES = {
    "open_time": pl.Int64, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64, "close": pl.Float64,
    "volume": pl.Float64, "close_time": pl.Int64, "quote_volume": pl.Float64, "count": pl.Int64,
    "taker_buy_volume": pl.Float64, "taker_buy_quote_volume": pl.Float64, "ignore": pl.String,
}


class KlinesParseError(ArchiveError):
    """A klines file whose content does not match the archive's layout."""


# ------------------------------------------------------------------ reading files


def _bad_line(data: bytes, has_header: bool, where: str) -> str:
    lines = data.decode("utf-8", "replace").splitlines()
    ncols = len(formats.KLINES_COLUMNS)
    for idx in range(1 if has_header else 0, len(lines)):
        line = lines[idx]
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != ncols:
            return f"{where}: line {idx + 1} has {len(fields)} fields, expected {ncols}: {line[:200]!r}"
        try:
            int(fields[0]), int(fields[6]), int(fields[8])
            [float(fields[i]) for i in (1, 2, 3, 4, 5, 7, 9, 10)]
        except ValueError:
            return f"{where}: line {idx + 1} is malformed: {line[:200]!r}"
    return f"{where}: could not parse the klines CSV"


def _contract_size(pair: str | None, where: str) -> float:
    if pair is None:
        raise KlinesParseError(f"{where}: COIN-M klines need the pair name (for the contract size)")
    return formats.contract_size(pair.removesuffix("_PERP").split("_")[0].removesuffix("USD"))


def _split_header(data: bytes, where: str) -> tuple[bool, bytes]:
    """Whether the CSV starts with the klines header (checked), and its data lines."""
    first_line, _, rest = data.partition(b"\n")
    first = first_line.strip().decode("utf-8", "replace")
    has_header = not first.split(",", 1)[0].strip().lstrip("-").isdigit()
    if has_header:
        names = [formats.HEADER_ALIASES.get(n.strip().lower()) for n in first.split(",")]
        if names != formats.KLINES_COLUMNS:
            raise KlinesParseError(
                f"{where}: line 1 is neither a kline nor the klines header {formats.KLINES_HEADER!r}: {first[:200]!r}"
            )
    return has_header, rest if has_header else data


def _normalise(raw: pl.DataFrame, market: str, size: float | pl.Expr | None, factor: int | pl.Expr) -> pl.DataFrame:
    """Normalised klines of raw file columns (``factor``: µs per file time unit; COIN-M ``size``)."""
    if market == "cm":
        volume, quote = pl.col("quote_volume"), pl.col("volume") * size
        taker, taker_quote = pl.col("taker_buy_quote_volume"), pl.col("taker_buy_volume") * size
    else:
        volume, quote = pl.col("volume"), pl.col("quote_volume")
        taker, taker_quote = pl.col("taker_buy_volume"), pl.col("taker_buy_quote_volume")
    return raw.select(
        *(["key"] if "key" in raw.columns else []),
        pl.from_epoch(pl.col("open_time") * factor, time_unit="us").alias("open_time"),
        "open", "high", "low", "close",
        volume.alias("volume"), quote.alias("quote_volume"), pl.col("count"),
        taker.alias("taker_buy_volume"), taker_quote.alias("taker_buy_quote_volume"),
        pl.from_epoch(pl.col("close_time") * factor, time_unit="us").alias("close_time"),
    )


def _no_nulls(raw: pl.DataFrame) -> bool:
    return raw.drop("ignore").null_count().row(0) == (0,) * (raw.width - 1)


def parse_klines_csv(data: bytes, market: str, where: str, pair: str | None = None) -> pl.DataFrame:
    """Normalised klines of the bytes of one archive klines CSV (header or not).

    ``pair`` is needed for COIN-M (its contract size); ``where`` names the file in errors.
    Raises :class:`KlinesParseError`.
    """
    formats.check_market(market)
    size = _contract_size(pair, where) if market == "cm" else None
    if not data.strip():
        return pl.DataFrame(schema=KLINES_SCHEMA)
    has_header, _ = _split_header(data, where)
    try:
        raw = pl.read_csv(
            io.BytesIO(data), has_header=has_header, new_columns=None, schema=_RAW_DTYPES,
            truncate_ragged_lines=False, raise_if_empty=False,
        )
    except Exception as exc:
        raise KlinesParseError(_bad_line(data, has_header, where) + f" ({type(exc).__name__})") from exc
    if not _no_nulls(raw):
        raise KlinesParseError(_bad_line(data, has_header, where) + " (empty field)")
    if raw.height == 0:
        return pl.DataFrame(schema=KLINES_SCHEMA)
    try:
        factor = formats.time_factor(int(raw["open_time"].min()), int(raw["close_time"].max()), where)
    except ValueError as exc:
        raise KlinesParseError(str(exc)) from None
    return _normalise(raw, market, size, factor)


def parse_klines_batch(files: list[tuple[bytes, str, str]], market: str) -> tuple[pl.DataFrame, dict[int, Exception]]:
    """Normalised klines of many CSVs of one market at once: ``files`` holds ``(bytes, pair,
    where)``; returns the klines with a ``key`` column (UInt32, the index in ``files``) and
    ``{index: KlinesParseError}`` for the files that do not parse (their rows are left out).

    One ``read_csv`` for all of them (a klines file is small: per-call overhead dominates);
    when anything is off (a header that is not the klines header, a malformed line, a file
    mixing time units) every file is parsed alone with :func:`parse_klines_csv`, which names
    the problem."""
    formats.check_market(market)
    schema = pl.Schema({"key": pl.UInt32, **KLINES_SCHEMA})
    bodies, counts, sizes = [], [], []
    try:
        for data, pair, where in files:
            body = _split_header(data, where)[1] if data.strip() else b""
            body = body.lstrip(b"\n")
            if body and not body.endswith(b"\n"):
                body += b"\n"
            bodies.append(body)
            counts.append(body.count(b"\n"))
            sizes.append(_contract_size(pair, where) if market == "cm" else 1.0)
        joined = b"".join(bodies)
        raw = pl.read_csv(io.BytesIO(joined), has_header=False, new_columns=None, schema=_RAW_DTYPES,
                          truncate_ragged_lines=False, raise_if_empty=False) if joined.strip() else None
        total = sum(counts)
        if raw is None:
            if total:
                raise KlinesParseError("blank lines")
            return pl.DataFrame(schema=schema), {}
        if raw.height != total or not _no_nulls(raw):
            raise KlinesParseError("rows do not line up")
        keys = np.repeat(np.arange(len(files), dtype=np.uint32), counts)
        raw = raw.with_columns(key=pl.Series(keys), size=pl.Series(np.repeat(np.asarray(sizes), counts)))
        micros = pl.col("open_time") >= formats.US_THRESHOLD
        mixed = raw.group_by("key").agg(
            (micros.any() & ~micros.all()) | ((pl.col("close_time") >= formats.US_THRESHOLD) != micros).any()
            | (pl.col("open_time") < 0).any()
        )
        if mixed.get_column(mixed.columns[1]).any():
            raise KlinesParseError("a file mixes time units")
        factor = pl.when(micros).then(1).otherwise(1000)
        return _normalise(raw, market, pl.col("size"), factor).select(list(schema)), {}
    except Exception:  # noqa: BLE001 - every file alone, each with its own error
        frames, errors = [], {}
        for i, (data, pair, where) in enumerate(files):
            try:
                frame = parse_klines_csv(data, market, where, pair)
            except KlinesParseError as exc:
                errors[i] = exc
                continue
            frames.append(frame.select(pl.lit(i, pl.UInt32).alias("key"), *KLINES_SCHEMA))
        return (pl.concat(frames) if frames else pl.DataFrame(schema=schema)), errors


def read_klines_file(path: str | Path, dataset_type: DatasetType | str = DatasetType.BinanceSpotTrades) -> pl.DataFrame:
    """Normalised klines of one archive 1m klines file (``.zip`` or ``.csv``).

    ``dataset_type`` names the market (a :class:`DatasetType` or ``"spot"``, ``"um"``, ``"cm"``).
    The pair comes from the file name (``{PAIR}-1m-{YYYY-MM-DD}.zip``; COIN-M needs it for the
    contract size).

    >>> read_klines_file("BTCUSDT-1m-2025-01-02.zip", "spot").columns  # doctest: +SKIP
    ['open_time', 'open', 'high', 'low', 'close', 'volume', 'quote_volume', 'count', 'taker_buy_volume', 'taker_buy_quote_volume', 'close_time']
    """
    from mnemo_assets.binance.parse import read_zip_member

    path = Path(path)
    market = DatasetType.from_market(dataset_type).market
    pair = None
    try:
        kind, pair, _day = formats.parse_file_name(path.name)
        if kind != formats.KLINES:
            raise KlinesParseError(f"{path}: a {kind} file, not a 1m klines file ({{PAIR}}-1m-{{YYYY-MM-DD}}.zip)")
    except ValueError:
        if market == "cm":
            raise KlinesParseError(f"{path}: not a klines file name ({{PAIR}}-1m-{{YYYY-MM-DD}}.zip)") from None
    data = read_zip_member(path) if path.suffix == ".zip" else path.read_bytes()
    return parse_klines_csv(data, market, str(path), pair)


# ------------------------------------------------------------------ bars from trades


def _exact(col: str) -> pl.Expr:
    """A float column as an exact decimal: its shortest representation, parsed as a decimal."""
    return pl.col(col).cast(pl.String).cast(_DEC)


def _as_float(expr: pl.Expr) -> pl.Expr:
    """A decimal as the double a CSV parser reads for it (correctly rounded)."""
    return expr.cast(pl.String).cast(pl.Float64)


def _day_start(t: datetime) -> datetime:
    return datetime(t.year, t.month, t.day)


def _exact_bars(
    trades: pl.DataFrame | pl.LazyFrame,
    previous_close: float | None,
    start: datetime | None,
    end: datetime | None,
    time_unit: Literal["ms", "us"] | None,
) -> tuple[pl.DataFrame, str]:
    """Bars with decimal sums (``_SUMS`` as ``Decimal(38, 12)``) and the file time unit."""
    cols = ["symbol", "peg_symbol", "trade_id", "price", "qty", "quote_qty", "time", "is_buyer_maker"]
    frame = trades.lazy().select(cols).collect()
    if frame.select(pl.struct("symbol", "peg_symbol").n_unique()).item() > 1:
        raise ValueError("minute_bars: the trades hold several (symbol, peg_symbol); give one pair's trades")
    if time_unit is None:
        whole_ms = frame.height == 0 or bool((frame["time"].dt.epoch("us") % 1000 == 0).all())
        time_unit = "ms" if whole_ms else "us"
    if time_unit not in _CLOSE_OFFSET_US:
        raise ValueError(f"minute_bars: time_unit {time_unit!r}; allowed: ms, us")
    if frame.height:
        first, last = frame["time"].min(), frame["time"].max()
        first_minute = first.replace(second=0, microsecond=0)
        if start is None:
            start = _day_start(first) if previous_close is not None else first_minute
        if end is None:
            end = _day_start(last) + timedelta(days=1)
        if first < start or last >= end:
            raise ValueError(f"minute_bars: trades from {first} to {last} lie outside [{start}, {end})")
        if previous_close is None and start < first_minute:
            raise ValueError(f"minute_bars: minutes from {start} come before the first trade ({first}): give previous_close")
    elif start is None or end is None or previous_close is None:
        return pl.DataFrame(schema={**KLINES_SCHEMA, **{c: _DEC for c in _SUMS}}), time_unit
    if start.second or start.microsecond or end.second or end.microsecond:
        raise ValueError(f"minute_bars: start {start} and end {end} must be whole minutes")

    taker_buy = ~pl.col("is_buyer_maker")
    order = ["time", "trade_id"]
    bars = (
        frame.group_by(pl.col("time").dt.truncate("1m").alias("open_time"))
        .agg(
            pl.col("price").sort_by(order).first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").sort_by(order).last().alias("close"),
            _exact("qty").sum().alias("volume"),
            _exact("quote_qty").sum().alias("quote_volume"),
            pl.len().cast(pl.Int64).alias("count"),
            _exact("qty").filter(taker_buy).sum().alias("taker_buy_volume"),
            _exact("quote_qty").filter(taker_buy).sum().alias("taker_buy_quote_volume"),
        )
    )
    minutes = pl.DataFrame(
        {"open_time": pl.datetime_range(start, end - timedelta(minutes=1), "1m", time_unit="us", eager=True)}
    )
    last_price = pl.col("close").forward_fill()
    if previous_close is not None:
        last_price = last_price.fill_null(float(previous_close))
    empty = pl.col("count").is_null()
    zero = pl.lit(0, dtype=_DEC)
    out = (
        minutes.join(bars, on="open_time", how="left")
        .sort("open_time")
        .with_columns(last_price.alias("__last"))
        .select(
            "open_time",
            *[pl.when(empty).then(pl.col("__last")).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")],
            *[pl.col(c).fill_null(zero).cast(_DEC).alias(c) for c in ("volume", "quote_volume")],
            pl.col("count").fill_null(0),
            *[pl.col(c).fill_null(zero).cast(_DEC).alias(c) for c in ("taker_buy_volume", "taker_buy_quote_volume")],
            (pl.col("open_time") + pl.duration(microseconds=_CLOSE_OFFSET_US[time_unit])).alias("close_time"),
        )
    )
    return out, time_unit


def minute_bars(
    trades: pl.DataFrame | pl.LazyFrame,
    *,
    previous_close: float | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    time_unit: Literal["ms", "us"] | None = None,
) -> pl.DataFrame:
    """1m klines of one pair's normalised trades, exactly as the exchange makes them.

    One row per minute of ``[start, end)``: by default from 00:00 of the first trade's day when
    ``previous_close`` (the pair's last price before these trades) is given, else from the
    minute of the first trade, to 00:00 after the last trade's day (pass ``end`` for a pair that
    stops trading, e.g. its delisting time). A minute with trades has open/close = its first/last
    trade (ordered by time, trade_id), high/low, exact sums of ``qty`` and ``quote_qty`` (all and
    taker buys, ``is_buyer_maker`` false) and the trade count; a minute without trades repeats the
    last traded price with zero volumes and ``count = 0``. ``close_time`` is the minute start +
    59.999 s in the file unit ``time_unit`` (default: ``ms`` when every trade time is a whole
    millisecond, else ``us``). Pure polars, no Dagster.
    """
    bars, _ = _exact_bars(trades, previous_close, start, end, time_unit)
    return bars.with_columns(_as_float(pl.col(c)).alias(c) for c in _SUMS).select(list(KLINES_SCHEMA))


# ------------------------------------------------------------------ writing files


def _fixed8(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String).cast(pl.Decimal(38, 8)).cast(pl.String)


def _shortest(expr: pl.Expr) -> pl.Expr:
    text = expr.cast(pl.String).cast(_DEC).cast(pl.String)
    return text.str.strip_chars_end("0").str.strip_chars_end(".")


def render_klines_csv(
    trades: pl.DataFrame | pl.LazyFrame,
    market: str,
    day: date,
    *,
    previous_close: float | None = None,
    end: datetime | None = None,
    contract_size: float | None = None,
) -> bytes:
    """The archive's klines CSV of one pair-day, made from its normalised trades with
    :func:`minute_bars` (same minutes, same exact sums), in the market's byte format
    (:mod:`~mnemo_assets.binance.formats`): spot without header, 8 decimals, ms before 2025 and
    µs from then on; futures with the header and shortest decimals, ms; COIN-M volumes in
    contracts and base-asset columns with 8 decimals (``contract_size`` needed)."""
    unit = formats.file_time_unit(market, day)
    start = datetime(day.year, day.month, day.day) if previous_close is not None else None
    day_end = datetime(day.year, day.month, day.day) + timedelta(days=1)
    bars, _ = _exact_bars(trades, previous_close, start, end or day_end, unit)
    per_unit = 1000 if unit == "ms" else 1
    times = [
        (pl.col("open_time").dt.epoch("us") // per_unit).cast(pl.String).alias("open_time"),
        (pl.col("close_time").dt.epoch("us") // per_unit).cast(pl.String).alias("close_time"),
    ]
    if market == "spot":
        num = {c: _fixed8(pl.col(c)) for c in ("open", "high", "low", "close", *_SUMS)}
    elif market == "um":
        num = {c: _shortest(pl.col(c)) for c in ("open", "high", "low", "close", *_SUMS)}
    else:
        if not contract_size:
            raise ValueError("render_klines_csv: COIN-M needs contract_size")

        def contracts(c: str) -> pl.Expr:
            return (_as_float(pl.col(c)) / contract_size).round(0).cast(pl.Int64).cast(pl.String)

        num = {c: _shortest(pl.col(c)) for c in ("open", "high", "low", "close")}
        # file: volume = contracts, quote_volume = base; normalised: volume = base, quote = USD
        num |= {
            "volume": contracts("quote_volume"), "quote_volume": _fixed8(pl.col("volume")),
            "taker_buy_volume": contracts("taker_buy_quote_volume"),
            "taker_buy_quote_volume": _fixed8(pl.col("taker_buy_volume")),
        }
    out = bars.select(
        times[0], num["open"].alias("open"), num["high"].alias("high"), num["low"].alias("low"),
        num["close"].alias("close"), num["volume"].alias("volume"), times[1],
        num["quote_volume"].alias("quote_volume"), pl.col("count").cast(pl.String),
        num["taker_buy_volume"].alias("taker_buy_volume"),
        num["taker_buy_quote_volume"].alias("taker_buy_quote_volume"), pl.lit("0").alias("ignore"),
    )
    buf = io.BytesIO()
    header = formats.KLINES_HEADER_BY_MARKET[market]
    if header is not None:
        buf.write(header.encode() + b"\n")
    out.write_csv(buf, include_header=False, quote_style="never")
    return buf.getvalue()


# ------------------------------------------------------------------ reconciliation

#: the per-minute fields compared, and the other per-minute facts counted in ``klines_differences``
PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close")
VOLUME_FIELDS: tuple[str, ...] = _SUMS
COMPARED_FIELDS: tuple[str, ...] = (*PRICE_FIELDS, "count", *VOLUME_FIELDS)
DIFFERENCE_FIELDS: tuple[str, ...] = (*COMPARED_FIELDS, "only_in_klines", "only_in_trades", "out_of_day")
#: ``klines_differences``: minutes differing per field (and per one-sided / out-of-day fact)
DIFFERENCES = pl.Struct({f: pl.Int64 for f in DIFFERENCE_FIELDS})
#: what a pair-day that does not reconcile is diagnosed with, in this order (see :func:`reconcile`)
PROBLEMS: tuple[str, ...] = (
    "wrong_day", "klines_empty", "trades_end_early", "trades_start_late", "minutes_missing", "minutes_extra",
    "counts", "prices", "volumes", "taker_side",
)
#: volumes agree to the archive's printed precision: 8 decimals
VOLUME_DECIMALS = 8
#: the volumes the trades file rounds trade by trade (spot/USD-M ``quote_qty`` = price × qty; COIN-M
#: ``base_qty`` = contracts × size / price), normalised names
DERIVED_VOLUMES: dict[str, tuple[str, ...]] = {
    "spot": ("quote_volume", "taker_buy_quote_volume"),
    "um": ("quote_volume", "taker_buy_quote_volume"),
    "cm": ("volume", "taker_buy_volume"),
}

_FRAC = 10**12  # exact sums: whole units + fractions in units of 1e-12
_HALF_UNIT = 5 * 10 ** (12 - VOLUME_DECIMALS - 1)  # half a unit of the 8th decimal, in 1e-12
_FACT_COLS = ["open_time", *PRICE_FIELDS, "count", *[f"{c}_{p}" for c in VOLUME_FIELDS for p in ("w", "f")]]


def _units(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each double's exact decimal (the one its shortest representation prints), as a whole
    part (int64) and a fraction in units of 1e-12 (int64); values must be finite and >= 0.

    Fast path (numpy): a value below 4.5e7 with at most 8 decimals, or a whole value, is
    recovered exactly from ``x * 1e8`` (its representation error is below 0.4 units of 1e-8,
    and a value with more decimals is farther than that bound from a whole unit). Anything
    else goes through the shortest representation, as :func:`minute_bars` does.
    """
    if x.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if not np.isfinite(x).all() or (x < 0).any():
        raise ValueError("reconcile: volumes must be finite and non-negative")
    w = np.floor(x)
    frac = (x - w) * 1e8
    f8 = np.rint(frac)
    if (np.abs(frac - f8) <= x * 1.12e-8 + 1e-6).all() and ((f8 == 0) | (x < 4.5e7)).all() and w.max() < 2**62:
        return w.astype(np.int64), f8.astype(np.int64) * 10_000
    dec = pl.Series(x).cast(pl.String).cast(_DEC)
    whole = dec.cast(pl.Int64)
    fraction = ((dec - whole.cast(_DEC)) * _FRAC).cast(pl.Int64)
    return whole.to_numpy(), fraction.to_numpy()


def _sorted_trades(trades: pl.DataFrame | pl.LazyFrame, checked: bool = False) -> pl.DataFrame:
    """One pair's trades, the columns needed, sorted by (time, trade_id) (clean trades already
    are; ``checked``: the caller guarantees one pair)."""
    cols = ["trade_id", "price", "qty", "quote_qty", "time", "is_buyer_maker"]
    if not checked:
        frame = trades.lazy().select("symbol", "peg_symbol", *cols).collect()
        if frame.height > 1 and frame.select(pl.struct("symbol", "peg_symbol").n_unique()).item() > 1:
            raise ValueError("reconcile: the trades hold several (symbol, peg_symbol); give one pair's trades")
    else:
        frame = trades if isinstance(trades, pl.DataFrame) else trades.select(cols).collect()
    if frame.height > 1:
        t = frame["time"].to_numpy().view(np.int64)
        dt, di = np.diff(t), np.diff(frame["trade_id"].to_numpy())
        if not ((dt > 0) | ((dt == 0) & (di > 0))).all():
            frame = frame.sort("time", "trade_id", maintain_order=True)
    return frame


def trade_minute_arrays(trades: pl.DataFrame | pl.LazyFrame, checked: bool = False) -> dict[str, np.ndarray]:
    """:func:`trade_minutes` as numpy arrays (``open_time`` in µs since the epoch): what the
    pipeline keeps of a pair-day's trades for the reconciliation (one row per traded minute)."""
    frame = _sorted_trades(trades, checked)
    n = frame.height
    t = frame["time"].to_numpy().view(np.int64)
    minute = t // _MINUTE_US
    price = frame["price"].to_numpy()
    if n == 0:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float64)
        cols = {c: empty_f for c in PRICE_FIELDS} | {"open_time": empty_i, "count": empty_i}
        return cols | {f"{c}_{p}": empty_i for c in VOLUME_FIELDS for p in ("w", "f")}
    starts = np.flatnonzero(np.r_[True, minute[1:] != minute[:-1]])
    ends = np.r_[starts[1:], n] - 1
    buy = ~frame["is_buyer_maker"].to_numpy()
    cols = {
        "open_time": minute[starts] * _MINUTE_US,
        "open": price[starts], "high": np.maximum.reduceat(price, starts),
        "low": np.minimum.reduceat(price, starts), "close": price[ends],
        "count": np.diff(np.r_[starts, n]).astype(np.int64),
    }
    for name, taker, src in (("volume", "taker_buy_volume", "qty"), ("quote_volume", "taker_buy_quote_volume", "quote_qty")):
        w, f = _units(frame[src].to_numpy())
        for col, (ws, fs) in ((name, (w, f)), (taker, (np.where(buy, w, 0), np.where(buy, f, 0)))):
            whole, part = np.add.reduceat(ws, starts), np.add.reduceat(fs, starts)
            cols[f"{col}_w"], cols[f"{col}_f"] = whole + part // _FRAC, part % _FRAC
    return cols


def minutes_frame(arrays: list[dict[str, np.ndarray]]) -> pl.DataFrame:
    """One frame of many pairs' :func:`trade_minute_arrays`, with ``key`` = the index in ``arrays``."""
    counts = [len(a["open_time"]) for a in arrays]
    cols = {c: np.concatenate([a[c] for a in arrays]) if arrays else np.zeros(0) for c in _FACT_COLS}
    cols["key"] = np.repeat(np.arange(len(arrays), dtype=np.uint32), counts)
    return _facts_frame(cols)


def trade_minutes(trades: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The minutes of one pair's normalised trades that hold trades, with what a kline says of
    them: ``open_time``, open/high/low/close (first/last by (time, trade_id)), ``count``, and
    each volume (``volume``, ``quote_volume``, ``taker_buy_volume``, ``taker_buy_quote_volume``,
    as in :data:`KLINES_SCHEMA`) as an exact decimal sum: whole part ``{c}_w`` and fraction
    ``{c}_f`` in units of 1e-12 (``0 <= f < 1e12``). Numpy over the sorted trades."""
    return _facts_frame(trade_minute_arrays(trades))


def _facts_frame(cols: dict[str, np.ndarray]) -> pl.DataFrame:
    names = (["key"] if "key" in cols else []) + _FACT_COLS
    out = pl.DataFrame({c: cols[c] for c in names}, schema_overrides={"key": pl.UInt32} if "key" in cols else None)
    return out.with_columns(
        pl.col("open_time").cast(pl.Int64).cast(pl.Datetime("us")),
        pl.col("count").cast(pl.Int64), *[pl.col(c).cast(pl.Float64) for c in PRICE_FIELDS],
        *[pl.col(f"{c}_{p}").cast(pl.Int64) for c in VOLUME_FIELDS for p in ("w", "f")],
    )


def kline_minutes(klines: pl.DataFrame) -> pl.DataFrame:
    """Normalised klines (:data:`KLINES_SCHEMA`, and ``key`` if present) in the columns of
    :func:`trade_minutes`: each volume as its exact decimal (the shortest representation of the
    parsed double: the printed decimal, for values of up to 15 significant digits)."""
    cols: dict[str, np.ndarray] = {c: klines[c].to_numpy() for c in (*PRICE_FIELDS, "count")}
    cols["open_time"] = klines["open_time"].to_numpy().view(np.int64)
    if "key" in klines.columns:
        cols["key"] = klines["key"].to_numpy()
    for c in VOLUME_FIELDS:
        cols[f"{c}_w"], cols[f"{c}_f"] = _units(klines[c].to_numpy())
    return _facts_frame(cols)


def _differs(ours: str, theirs: str, derived: bool) -> pl.Expr:
    """Whether two exact volumes differ by more than half a unit of the 8th decimal (plus, for a
    volume the trades file rounds trade by trade, half a unit per trade of the minute)."""
    whole = (pl.col(f"{ours}_w") - pl.col(f"{theirs}_w")).clip(-2, 2)
    diff = (whole * _FRAC + pl.col(f"{ours}_f") - pl.col(f"{theirs}_f")).abs()
    tol = pl.lit(_HALF_UNIT, pl.Int64)
    if derived:
        tol = tol + pl.max_horizontal("o_count", "k_count") * _HALF_UNIT
    return diff > tol


def compare_minutes(
    ours: pl.DataFrame,
    theirs: pl.DataFrame,
    market: str,
    day: date,
    previous_close: dict[int, float] | None = None,
) -> dict[int, dict]:
    """Reconcile many pairs of one market-day at once (the pipeline's path; :func:`reconcile` is
    the one-pair form). ``ours`` (:func:`trade_minutes`) and ``theirs`` (:func:`kline_minutes`)
    carry a ``key`` column (UInt32) naming the pair; ``previous_close`` optionally gives a key's
    last price before the day. Returns ``{key: facts}`` for every key of either frame (a key
    without kline rows had an empty klines file), facts as :func:`reconcile` returns them."""
    formats.check_market(market)
    start = datetime(day.year, day.month, day.day)
    end = start + timedelta(days=1)
    derived = DERIVED_VOLUMES[market]
    in_day = pl.col("open_time").is_between(start, end, closed="left")
    minute = pl.col("open_time")
    theirs_l, ours_l = theirs.lazy(), ours.lazy()
    k_all = theirs_l.group_by("key").agg(
        pl.col("count").sum().alias("k_total"), pl.len().alias("k_rows"), (~in_day).sum().alias("out_of_day"),
        minute.filter(~in_day).min().alias("ood_first"), minute.filter(~in_day).max().alias("ood_last"),
    )
    o_all = ours_l.group_by("key").agg(
        pl.col("count").sum().alias("o_total"), minute.min().alias("o_first"), minute.max().alias("o_last"),
    )
    prev = pl.LazyFrame(
        {"key": list((previous_close or {}).keys()), "previous_close": list((previous_close or {}).values())},
        schema={"key": pl.UInt32, "previous_close": pl.Float64},
    )
    # a kline without trades repeats the last price: the close of the kline before it (for the
    # day's first minute, the previous close when one is given)
    k = (
        theirs_l.filter(in_day).sort("key", "open_time")
        .with_columns(pl.col("close").shift(1).over("key").alias("carried"))
        .join(prev, on="key", how="left")
        .with_columns(pl.coalesce("carried", "previous_close").alias("carried"))
        .drop("previous_close")
        .rename({c: f"k_{c}" for c in (*theirs.columns, "carried") if c not in ("key", "open_time")})
    )
    o = ours_l.rename({c: f"o_{c}" for c in ours.columns if c not in ("key", "open_time")})
    j = (
        o.join(k, on=["key", "open_time"], how="full", coalesce=True)
        .join(o_all.select("key", "o_first", "o_last"), on="key", how="left")
        .with_columns(
            (pl.col("o_count").fill_null(0) > 0).alias("has_o"),
            pl.col("k_count").is_not_null().alias("has_k"),
            pl.col("o_count").fill_null(0), pl.col("k_count").fill_null(0),
            *[pl.col(f"o_{c}_{p}").fill_null(0) for c in VOLUME_FIELDS for p in ("w", "f")],
        )
    )
    has_o, has_k = pl.col("has_o"), pl.col("has_k")
    quiet = has_k & (pl.col("k_count") == 0) & ~has_o
    diffs: dict[str, pl.Expr] = {}
    for c in PRICE_FIELDS:
        traded = has_o & has_k & (pl.col(f"o_{c}") != pl.col(f"k_{c}"))
        flat = quiet & pl.col("k_carried").is_not_null() & (pl.col(f"k_{c}") != pl.col("k_carried"))
        diffs[c] = traded | flat
    diffs["count"] = has_k & (pl.col("o_count") != pl.col("k_count"))
    for c in VOLUME_FIELDS:
        diffs[c] = has_k & _differs(f"o_{c}", f"k_{c}", c in derived)
    diffs["only_in_klines"] = has_k & (pl.col("k_count") > 0) & ~has_o
    diffs["only_in_trades"] = has_o & (~has_k | (pl.col("k_count") == 0))
    j = j.with_columns(**{f"d_{c}": e.fill_null(False) for c, e in diffs.items()})
    d = {c: pl.col(f"d_{c}") for c in diffs}
    any_diff = pl.any_horizontal(*d.values())
    # trades missing at an end of the day (a truncated file): the klines hold more trades than
    # ours from our last trade's minute on (or up to our first); those minutes are explained
    short = (pl.col("k_count") - pl.col("o_count")).clip(lower_bound=0)
    after = (minute >= pl.col("o_last")).fill_null(False)
    before = (minute <= pl.col("o_first")).fill_null(False)
    j = j.with_columns(
        short.filter(after).sum().over("key").alias("k_after"),
        short.filter(before).sum().over("key").alias("k_before"),
    )
    interior = (
        ~((pl.col("k_after") > 0) & (minute >= pl.col("o_last")))
        & ~((pl.col("k_before") > 0) & (minute <= pl.col("o_first")))
    ).fill_null(True)
    count_same = ~d["count"]
    sums_same = count_same & ~d["volume"] & ~d["quote_volume"]
    prices = pl.any_horizontal(*[d[c] for c in PRICE_FIELDS])
    agg = j.group_by("key").agg(
        pl.len().alias("compared"),
        any_diff.sum().alias("differing"),
        minute.filter(any_diff).min().alias("first_difference"),
        *[d[c].sum().alias(c) for c in diffs],
        pl.col("k_after").first(), pl.col("k_before").first(), has_k.sum().alias("k_in_day"),
        (interior & d["only_in_klines"]).sum().alias("p_minutes_missing"),
        (interior & has_o & (pl.col("k_count") > 0) & d["count"]).sum().alias("p_counts"),
        (interior & prices & ~d["only_in_klines"] & ~d["only_in_trades"]).sum().alias("p_prices"),
        (interior & has_o & count_same & (d["volume"] | d["quote_volume"])).sum().alias("p_volumes"),
        (interior & has_o & sums_same & (d["taker_buy_volume"] | d["taker_buy_quote_volume"])).sum().alias("p_taker_side"),
    )
    keys = pl.concat([theirs_l.select("key"), ours_l.select("key")]).unique()
    table = (
        keys.join(k_all, on="key", how="left").join(o_all, on="key", how="left").join(agg, on="key", how="left")
        .collect(engine="in-memory")
    )
    return {int(r["key"]): _facts(r) for r in table.iter_rows(named=True)}


def _n(value) -> int:
    return int(value or 0)


def _facts(r: dict) -> dict:
    """Ledger facts (and the reason) of one pair-day from its aggregate row."""
    differences = {c: _n(r.get(c)) for c in DIFFERENCE_FIELDS}
    problems: list[str] = []
    if differences["out_of_day"]:
        problems.append("wrong_day")
    if not _n(r["k_rows"]):
        problems.append("klines_empty")
    if _n(r["k_in_day"]):  # a file wholly of another day says nothing more
        flags = {
            "trades_end_early": _n(r["k_after"]), "trades_start_late": _n(r["k_before"]),
            "minutes_missing": _n(r["p_minutes_missing"]), "minutes_extra": differences["only_in_trades"],
            **{name: _n(r[f"p_{name}"]) for name in ("counts", "prices", "volumes", "taker_side")},
        }
        problems += [name for name, n in flags.items() if n]
    elif differences["only_in_trades"] and not problems:
        problems.append("minutes_extra")
    differing = _n(r["differing"])
    if differing and not problems:  # a difference no rule names (a kline without trades that is not flat)
        problems.append("prices" if any(differences[c] for c in PRICE_FIELDS) else "volumes")
    problems = [p for p in PROBLEMS if p in problems]
    first = r["first_difference"] if r["first_difference"] is not None else r["ood_first"]
    facts = {
        "klines_status": "mismatch" if problems else "ok",
        "klines_minutes_compared": _n(r["compared"]),
        "klines_minutes_differing": differing,
        "klines_differences": differences,
        "klines_trades_difference": _n(r["k_total"]) - _n(r["o_total"]),
        "klines_first_difference": first,
        "klines_problems": problems,
    }
    facts["reason"] = _reason(facts, r) if problems else None
    return facts


def _hm(t: datetime | None) -> str:
    return "-" if t is None else t.strftime("%Y-%m-%d %H:%M")


def _reason(facts: dict, r: dict) -> str:
    diff = facts["klines_differences"]
    fields = ", ".join(f"{c} {diff[c]}" for c in DIFFERENCE_FIELDS if diff[c])
    text = (
        f"klines_mismatch: {', '.join(facts['klines_problems'])}: {facts['klines_minutes_differing']} of "
        f"{facts['klines_minutes_compared']} minutes differ ({fields}), first at {_hm(facts['klines_first_difference'])}"
    )
    n = facts["klines_trades_difference"]
    if n:
        text += f"; the klines count {abs(n)} trade(s) {'more' if n > 0 else 'fewer'} than the trades file"
    if _n(r["k_after"]):
        text += f"; the klines hold {_n(r['k_after'])} trade(s) more from the file's last trade's minute {_hm(r['o_last'])} on"
    if _n(r["k_before"]):
        text += f"; the klines hold {_n(r['k_before'])} trade(s) more up to the file's first trade's minute {_hm(r['o_first'])}"
    if diff["out_of_day"]:
        text += f"; {diff['out_of_day']} kline minute(s) lie outside the day ({_hm(r['ood_first'])} .. {_hm(r['ood_last'])})"
    return text


def reconcile(
    trades: pl.DataFrame | pl.LazyFrame,
    klines: pl.DataFrame,
    *,
    market: str,
    day: date | None = None,
    previous_close: float | None = None,
) -> dict:
    """Reconcile one pair-day of normalised trades with the exchange's 1m klines of that day.

    Minute by minute over every minute that holds a kline or one of our trades (klines outside
    ``day`` are counted as ``out_of_day`` and not compared), the 1m aggregation of ``trades``
    (:func:`trade_minutes`) must equal the kline (:func:`kline_minutes` of ``klines``,
    :data:`KLINES_SCHEMA`):

    * open, high, low, close and the trade count exactly;
    * the four volumes to the archive's 8 decimals: the exact decimal sum of the trades' values
      and the kline's value differ by at most half a unit of the 8th decimal; for the volume the
      trades file rounds trade by trade (:data:`DERIVED_VOLUMES`), half a unit more per trade;
    * a minute with trades on one side only differs (``only_in_klines``, ``only_in_trades``);
    * a kline without trades (on both sides) must repeat the close of the kline before it; the
      day's first such minute carries the previous day's last price, which the day's trades do
      not know: it is checked against ``previous_close`` when given, else not priced.

    Returns the ledger facts: ``klines_status`` (``ok`` | ``mismatch``),
    ``klines_minutes_compared``, ``klines_minutes_differing`` (minutes with any difference),
    ``klines_differences`` (minutes differing per field, :data:`DIFFERENCES`),
    ``klines_trades_difference`` (Σ kline counts of the file − our trades), 
    ``klines_first_difference`` (the first differing minute), ``klines_problems`` (what the
    differences look like, from :data:`PROBLEMS`: ``wrong_day`` klines outside the day,
    ``klines_empty``, ``trades_end_early`` the klines hold more trades than ours from our last
    trade's minute on (a truncated file), ``trades_start_late`` likewise up to our first, ``minutes_missing`` minutes with kline trades and
    none of ours, ``minutes_extra`` the reverse, ``counts``, ``prices``, ``volumes`` (base or
    quote, counts agreeing), ``taker_side`` (only the taker-buy volumes differ)); and ``reason``,
    the ledger reason text (``None`` when it reconciles). Pure polars/numpy, no Dagster.
    """
    ours = trade_minutes(trades)
    theirs = kline_minutes(klines.select(list(KLINES_SCHEMA)))
    if day is None:
        times = ours["open_time"] if ours.height else theirs["open_time"]
        if times.len() == 0:
            raise ValueError("reconcile: no trades and no klines: give the day")
        day = times.min().date()  # type: ignore[union-attr]
    key = pl.lit(0, pl.UInt32).alias("key")
    prev = None if previous_close is None else {0: float(previous_close)}
    return compare_minutes(ours.with_columns(key), theirs.with_columns(key), market, day, prev)[0]
