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

**Reconciliation** (:func:`reconcile`; the pipeline's batched form :func:`compare_minute_arrays`
with :func:`parse_klines_batch`): a pair-day's trades against the exchange's klines of the day,
minute by minute over every minute holding a kline or one of our trades: open, high, low, close
and count exactly; the four volumes as exact decimal sums, to the archive's 8 decimals (half a
unit of the 8th decimal; half a unit more per trade for the volume the trades file rounds trade
by trade, :data:`DERIVED_VOLUMES`); minutes with trades on one side only; a kline without trades
must repeat the close of the kline before it (the day's first minute carries the previous day's
close, which the day's trades cannot know: checked only against a given ``previous_close``);
kline minutes outside the day. The result is a set of ledger facts (``klines_*``) and a
diagnosis (:data:`PROBLEMS`).

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
    "DIFFERENCES",
    "KLINES_SCHEMA",
    "KlinesParseError",
    "compare_minute_arrays",
    "compare_minutes",
    "concat_minutes",
    "kline_minute_arrays",
    "kline_minutes",
    "minute_bars",
    "parse_klines_batch",
    "parse_klines_csv",
    "read_klines_file",
    "reconcile",
    "render_klines_csv",
    "trade_minute_arrays",
    "trade_minutes",
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
    "open_time": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "close_time": pl.Int64,
    "quote_volume": pl.Float64,
    "count": pl.Int64,
    "taker_buy_volume": pl.Float64,
    "taker_buy_quote_volume": pl.Float64,
    "ignore": pl.String,
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
            raise KlinesParseError(f"{where}: line 1 is neither a kline nor the klines header {formats.KLINES_HEADER!r}: {first[:200]!r}")
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
        "open",
        "high",
        "low",
        "close",
        volume.alias("volume"),
        quote.alias("quote_volume"),
        pl.col("count"),
        taker.alias("taker_buy_volume"),
        taker_quote.alias("taker_buy_quote_volume"),
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
            io.BytesIO(data),
            has_header=has_header,
            new_columns=None,
            schema=_RAW_DTYPES,
            truncate_ragged_lines=False,
            raise_if_empty=False,
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
        raw = (
            pl.read_csv(io.BytesIO(joined), has_header=False, new_columns=None, schema=_RAW_DTYPES, truncate_ragged_lines=False, raise_if_empty=False)
            if joined.strip()
            else None
        )
        total = sum(counts)
        if raw is None:
            if total:
                raise KlinesParseError("blank lines")
            return pl.DataFrame(schema=schema), {}
        if raw.height != total or not _no_nulls(raw):
            raise KlinesParseError("rows do not line up")
        keys = np.repeat(np.arange(len(files), dtype=np.int64), counts)
        opens, closes = raw["open_time"].to_numpy(), raw["close_time"].to_numpy()
        micros = opens >= formats.US_THRESHOLD
        if (opens < 0).any() or ((closes >= formats.US_THRESHOLD) != micros).any():
            raise KlinesParseError("a file mixes time units")
        n_micros = np.bincount(keys, weights=micros, minlength=len(files))
        if ((n_micros != 0) & (n_micros != np.asarray(counts))).any():
            raise KlinesParseError("a file mixes time units")
        raw = raw.with_columns(
            key=pl.Series(keys.astype(np.uint32)),
            size=pl.Series(np.repeat(np.asarray(sizes), counts)),
            factor=pl.Series(np.where(micros, 1, 1000)),
        )
        return _normalise(raw, market, pl.col("size"), pl.col("factor")).select(list(schema)), {}
    except Exception:
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
    bars = frame.group_by(pl.col("time").dt.truncate("1m").alias("open_time")).agg(
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
    minutes = pl.DataFrame({"open_time": pl.datetime_range(start, end - timedelta(minutes=1), "1m", time_unit="us", eager=True)})
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
            "volume": contracts("quote_volume"),
            "quote_volume": _fixed8(pl.col("volume")),
            "taker_buy_volume": contracts("taker_buy_quote_volume"),
            "taker_buy_quote_volume": _fixed8(pl.col("taker_buy_volume")),
        }
    out = bars.select(
        times[0],
        num["open"].alias("open"),
        num["high"].alias("high"),
        num["low"].alias("low"),
        num["close"].alias("close"),
        num["volume"].alias("volume"),
        times[1],
        num["quote_volume"].alias("quote_volume"),
        pl.col("count").cast(pl.String),
        num["taker_buy_volume"].alias("taker_buy_volume"),
        num["taker_buy_quote_volume"].alias("taker_buy_quote_volume"),
        pl.lit("0").alias("ignore"),
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
    "wrong_day",
    "klines_empty",
    "klines_duplicate_minutes",
    "trades_end_early",
    "trades_start_late",
    "minutes_missing",
    "minutes_extra",
    "counts",
    "prices",
    "volumes",
    "taker_side",
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


def _minute_sums(x: np.ndarray, maker: np.ndarray, starts: np.ndarray, checked: bool) -> tuple[np.ndarray, ...]:
    """Exact per-minute sums of one volume column, all trades and taker buys (``maker`` false):
    ``(whole, fraction in 1e-12, taker whole, taker fraction)``, each int64 per minute.

    Fast path: when every value is below 2**50 / 1e8 (~1.1e7) and lies within its
    representation error of a whole number of 1e-8 (at most 8 decimals), ``rint(x * 1e8)`` is
    its exact decimal in units of 1e-8 (the error of ``x * 1e8`` is below a quarter unit, and a
    value with more decimals, at most 15 significant digits, is farther than the bound from a
    whole unit); the sums are then one int64 each when they cannot overflow. Otherwise
    :func:`_units` (whole part and fraction) as the general route."""
    n = x.size
    hi = float(x.max()) if n else 0.0
    counts = np.diff(np.r_[starts, n])
    if n and 0 <= hi < 1.1e7 and (checked or float(x.min()) >= 0) and hi * 1e8 * float(counts.max()) < 9e18:
        r = x * 1e8
        u = np.rint(r)
        if (np.abs(r - u) <= x * 2.3e-8 + 1e-6).all():
            units = u.astype(np.int64)
            total = np.add.reduceat(units, starts)
            taker = np.add.reduceat(np.where(maker, 0, units), starts)
            return total // 10**8, total % 10**8 * 10_000, taker // 10**8, taker % 10**8 * 10_000
    w, f = _units(x)
    out = []
    for ws, fs in ((w, f), (np.where(maker, 0, w), np.where(maker, 0, f))):
        whole, part = np.add.reduceat(ws, starts), np.add.reduceat(fs, starts)
        out += [whole + part // _FRAC, part % _FRAC]
    return tuple(out)


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
    price = frame["price"].to_numpy()
    if n == 0:
        cols = {c: np.zeros(0, np.float64) for c in PRICE_FIELDS} | {"open_time": np.zeros(0, np.int64)}
        return cols | {c: np.zeros(0, np.int64) for c in _FACT_COLS if c not in cols}
    minute = t // _MINUTE_US
    starts = np.flatnonzero(np.r_[True, minute[1:] != minute[:-1]])
    maker = frame["is_buyer_maker"].to_numpy()
    cols = {
        "open_time": minute[starts] * _MINUTE_US,
        "open": price[starts],
        "high": np.maximum.reduceat(price, starts),
        "low": np.minimum.reduceat(price, starts),
        "close": price[np.r_[starts[1:], n] - 1],
        "count": np.diff(np.r_[starts, n]).astype(np.int64),
    }
    for name, taker, src in (("volume", "taker_buy_volume", "qty"), ("quote_volume", "taker_buy_quote_volume", "quote_qty")):
        w, f, tw, tf = _minute_sums(frame[src].to_numpy(), maker, starts, checked)
        cols[f"{name}_w"], cols[f"{name}_f"], cols[f"{taker}_w"], cols[f"{taker}_f"] = w, f, tw, tf
    return cols


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
        pl.col("count").cast(pl.Int64),
        *[pl.col(c).cast(pl.Float64) for c in PRICE_FIELDS],
        *[pl.col(f"{c}_{p}").cast(pl.Int64) for c in VOLUME_FIELDS for p in ("w", "f")],
    )


def kline_minute_arrays(klines: pl.DataFrame) -> dict[str, np.ndarray]:
    """Normalised klines (:data:`KLINES_SCHEMA`, and ``key`` if present) in the columns of
    :func:`trade_minute_arrays`: each volume as its exact decimal (the shortest representation
    of the parsed double: the printed decimal, for values of up to 15 significant digits)."""
    cols: dict[str, np.ndarray] = {c: klines[c].to_numpy() for c in (*PRICE_FIELDS, "count")}
    cols["open_time"] = klines["open_time"].to_numpy().view(np.int64)
    if "key" in klines.columns:
        cols["key"] = klines["key"].to_numpy()
    for c in VOLUME_FIELDS:
        cols[f"{c}_w"], cols[f"{c}_f"] = _units(klines[c].to_numpy())
    return cols


def kline_minutes(klines: pl.DataFrame) -> pl.DataFrame:
    """:func:`kline_minute_arrays` as a frame (the columns of :func:`trade_minutes`)."""
    return _facts_frame(kline_minute_arrays(klines))


def concat_minutes(arrays: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Many pairs' :func:`trade_minute_arrays` as one set of arrays, ``key`` = the index in ``arrays``."""
    out = (
        {c: np.concatenate([a[c] for a in arrays]) for c in _FACT_COLS}
        if arrays
        else {c: np.zeros(0, np.float64 if c in PRICE_FIELDS else np.int64) for c in _FACT_COLS}
    )
    out["key"] = np.repeat(np.arange(len(arrays), dtype=np.int64), [len(a["open_time"]) for a in arrays])
    return out


def _frame_arrays(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    out = {c: frame[c].to_numpy() for c in _FACT_COLS if c != "open_time"}
    out["open_time"] = frame["open_time"].to_numpy().view(np.int64)
    out["key"] = frame["key"].to_numpy()
    return out


def compare_minutes(
    ours: pl.DataFrame,
    theirs: pl.DataFrame,
    market: str,
    day: date,
    previous_close: dict[int, float] | None = None,
) -> dict[int, dict]:
    """Reconcile many pairs of one market-day at once (:func:`reconcile` is the one-pair form).
    ``ours`` (:func:`trade_minutes`) and ``theirs`` (:func:`kline_minutes`) carry a ``key``
    column (>= 0) naming the pair; ``previous_close`` optionally gives a key's last price before
    the day. Returns ``{key: facts}`` for every key of either frame (a key without kline rows had
    an empty klines file), facts as :func:`reconcile` returns them."""
    return compare_minute_arrays(_frame_arrays(ours), _frame_arrays(theirs), market, day, previous_close)


def _i64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.int64)


def _distinct(a: np.ndarray) -> np.ndarray:
    """Distinct values of an int array, sorted (cheap when it is sorted already)."""
    if a.size > 1 and not (a[1:] >= a[:-1]).all():
        a = np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]] if a.size else a


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted distinct values of two int64 arrays (each sorted: a merge, no hashing)."""
    c = np.concatenate([a, b])
    c.sort(kind="stable")
    return _distinct(c)


def _per_key(keys: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Σ values per key (int64; bincount's float sums are exact for integers below 2**53)."""
    return np.rint(np.bincount(keys, weights=values, minlength=n)).astype(np.int64)


def _per_key_many(keys: np.ndarray, flags: list[np.ndarray], n: int) -> np.ndarray:
    """Σ of each boolean array per key, for keys sorted ascending: ``(len(flags), n)``."""
    out = np.zeros((len(flags), n), np.int64)
    if keys.size:
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        out[:, keys[starts]] = np.add.reduceat(np.stack(flags).astype(np.int64), starts, axis=1)
    return out


_EPOCH = datetime(1970, 1, 1)


def _us(t: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(t))


def compare_minute_arrays(
    ours: dict[str, np.ndarray],
    theirs: dict[str, np.ndarray],
    market: str,
    day: date,
    previous_close: dict[int, float] | None = None,
) -> dict[int, dict]:
    """:func:`compare_minutes` on :func:`concat_minutes` / :func:`kline_minute_arrays` arrays
    (``key`` >= 0, ``open_time`` µs since the epoch): the pipeline's path, numpy over the
    minutes sorted by (key, minute)."""
    formats.check_market(market)
    start = int((datetime(day.year, day.month, day.day) - _EPOCH) / timedelta(microseconds=1))
    end = start + 86_400_000_000
    okey, kkey = _i64(ours["key"]), _i64(theirs["key"])
    oidx = (okey << 32) | (ours["open_time"] // _MINUTE_US)
    if oidx.size > 1 and not (oidx[1:] > oidx[:-1]).all():
        order = np.argsort(oidx, kind="stable")
        ours, okey, oidx = {c: v[order] for c, v in ours.items()}, okey[order], oidx[order]
        if (oidx[1:] == oidx[:-1]).any():
            raise ValueError("compare_minute_arrays: our trade minutes hold a (key, minute) twice")
    present = _union(_distinct(okey), _distinct(kkey))
    nk = int(present.max()) + 1 if present.size else 0
    k_rows = np.bincount(kkey, minlength=nk)
    k_total, o_total = _per_key(kkey, theirs["count"], nk), _per_key(okey, ours["count"], nk)
    kin = (theirs["open_time"] >= start) & (theirs["open_time"] < end)
    ood = np.bincount(kkey[~kin], minlength=nk)
    ood_range = {}
    for i in np.flatnonzero(ood).tolist():
        times = theirs["open_time"][~kin & (kkey == i)]
        ood_range[i] = (_us(times.min()), _us(times.max()))
    if kin.all():
        k = dict(theirs)
    else:
        k = {c: v[kin] for c, v in theirs.items()}
        kkey = kkey[kin]
    kidx = (kkey << 32) | (k["open_time"] // _MINUTE_US)
    if kidx.size > 1 and not (np.diff(kidx) > 0).all():  # a file out of order, or a minute twice
        order = np.argsort(kidx, kind="stable")
        k, kkey, kidx = {c: v[order] for c, v in k.items()}, kkey[order], kidx[order]
    # a kline without trades repeats the last price: the close of the kline before it (the
    # day's first minute: the previous close, when one is given)
    m = kkey.size
    carried = np.r_[np.nan, k["close"][:-1]].astype(np.float64)[:m]
    first_of_key = np.r_[True, kkey[1:] != kkey[:-1]][:m]
    prev = np.full(nk, np.nan)
    for key, price in (previous_close or {}).items():
        if 0 <= key < nk:
            prev[key] = price
    carried[first_of_key] = prev[kkey[first_of_key]]
    dup = np.r_[False, kidx[1:] == kidx[:-1]][:m]  # a kline minute twice: the first one is compared
    duplicates = np.bincount(kkey[dup], minlength=nk)
    if duplicates.any():
        k, kkey, kidx, carried = {c: v[~dup] for c, v in k.items()}, kkey[~dup], kidx[~dup], carried[~dup]

    u = _union(oidx, kidx)
    ukey, uminute = u >> 32, (u & 0xFFFFFFFF) * _MINUTE_US
    po, pk = np.searchsorted(u, oidx), np.searchsorted(u, kidx)
    n = u.size

    def spread(pos: np.ndarray, values: np.ndarray, fill) -> np.ndarray:
        out = np.full(n, fill, dtype=np.result_type(values.dtype, np.asarray(fill).dtype))
        out[pos] = values
        return out

    o_count, k_count = spread(po, _i64(ours["count"]), 0), spread(pk, _i64(k["count"]), 0)
    has_o, has_k = o_count > 0, spread(pk, np.ones(pk.size, bool), False)
    quiet = has_k & (k_count == 0) & ~has_o
    k_carried = spread(pk, carried, np.nan)
    d: dict[str, np.ndarray] = {}
    for c in PRICE_FIELDS:
        ov, kv = spread(po, np.asarray(ours[c], np.float64), np.nan), spread(pk, np.asarray(k[c], np.float64), np.nan)
        d[c] = (has_o & has_k & (ov != kv)) | (quiet & ~np.isnan(k_carried) & (kv != k_carried))
    d["count"] = has_k & (o_count != k_count)
    derived = DERIVED_VOLUMES[market]
    for c in VOLUME_FIELDS:
        whole = np.clip(spread(po, _i64(ours[f"{c}_w"]), 0) - spread(pk, _i64(k[f"{c}_w"]), 0), -2, 2)
        diff = np.abs(whole * _FRAC + spread(po, _i64(ours[f"{c}_f"]), 0) - spread(pk, _i64(k[f"{c}_f"]), 0))
        tol = _HALF_UNIT * (1 + np.maximum(o_count, k_count)) if c in derived else _HALF_UNIT
        d[c] = has_k & (diff > tol)
    d["only_in_klines"] = has_k & (k_count > 0) & ~has_o
    d["only_in_trades"] = has_o & (~has_k | (k_count == 0))
    any_diff = np.logical_or.reduce(list(d.values()))
    # trades missing at an end of the day (a truncated file): the klines hold more trades than
    # ours from our last trade's minute on (or up to our first); those minutes are explained
    none = np.iinfo(np.int64).max
    o_first, o_last = np.full(nk, none), np.full(nk, -1)
    if okey.size:
        starts = np.flatnonzero(np.r_[True, okey[1:] != okey[:-1]])
        o_first[okey[starts]] = ours["open_time"][starts]
        o_last[okey[starts]] = ours["open_time"][np.r_[starts[1:], okey.size] - 1]
    short = np.clip(k_count - o_count, 0, None)
    traded = o_last[ukey] >= 0  # keys with trades of ours
    after = (uminute >= o_last[ukey]) & traded
    before = (uminute <= o_first[ukey]) & traded
    k_after, k_before = _per_key(ukey, short * after, nk), _per_key(ukey, short * before, nk)
    interior = ~((k_after[ukey] > 0) & after) & ~((k_before[ukey] > 0) & before)
    count_same = ~d["count"]
    sums_same = count_same & ~d["volume"] & ~d["quote_volume"]
    prices = d["open"] | d["high"] | d["low"] | d["close"]
    flags = {
        "p_minutes_missing": interior & d["only_in_klines"],
        "p_counts": interior & has_o & (k_count > 0) & d["count"],
        "p_prices": interior & prices & ~d["only_in_klines"] & ~d["only_in_trades"],
        "p_volumes": interior & has_o & count_same & (d["volume"] | d["quote_volume"]),
        "p_taker_side": interior & has_o & sums_same & (d["taker_buy_volume"] | d["taker_buy_quote_volume"]),
    }
    named = {**d, **flags, "differing": any_diff, "k_in_day": has_k}
    sums = dict(zip(named, _per_key_many(ukey, list(named.values()), nk), strict=True))
    compared = np.bincount(ukey, minlength=nk)
    first = np.full(nk, none)
    np.minimum.at(first, ukey[any_diff], uminute[any_diff])
    out = {}
    for key in present.tolist():
        r = {name: int(v[key]) for name, v in sums.items()}
        r.update(
            compared=int(compared[key]),
            k_rows=int(k_rows[key]),
            k_total=int(k_total[key]),
            o_total=int(o_total[key]),
            out_of_day=int(ood[key]),
            k_after=int(k_after[key]),
            k_before=int(k_before[key]),
            duplicates=int(duplicates[key]),
            first_difference=_us(first[key]) if first[key] != none else None,
            o_first=_us(o_first[key]) if o_last[key] >= 0 else None,
            o_last=_us(o_last[key]) if o_last[key] >= 0 else None,
            ood_first=ood_range[key][0] if key in ood_range else None,
            ood_last=ood_range[key][1] if key in ood_range else None,
        )
        out[key] = _facts(r)
    return out


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
    if _n(r.get("duplicates")):
        problems.append("klines_duplicate_minutes")
    if _n(r["k_in_day"]):  # a file wholly of another day says nothing more
        flags = {
            "trades_end_early": _n(r["k_after"]),
            "trades_start_late": _n(r["k_before"]),
            "minutes_missing": _n(r["p_minutes_missing"]),
            "minutes_extra": differences["only_in_trades"],
            **{name: _n(r[f"p_{name}"]) for name in ("counts", "prices", "volumes", "taker_side")},
        }
        problems += [name for name, n in flags.items() if n]
    elif differences["only_in_trades"] and not problems:
        problems.append("minutes_extra")
    differing = _n(r["differing"]) + _n(r.get("duplicates"))
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
    if _n(r.get("duplicates")):
        text += f"; {_n(r['duplicates'])} kline minute(s) appear twice (the first is compared)"
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
    ``klines_empty``, ``klines_duplicate_minutes`` a kline minute twice (the first is compared),
    ``trades_end_early`` the klines hold more trades than ours from our last trade's minute on (a
    truncated file), ``trades_start_late`` likewise up to our first, ``minutes_missing`` minutes
    with kline trades and none of ours, ``minutes_extra`` the reverse, ``counts``, ``prices``, ``volumes`` (base or
    quote, counts agreeing), ``taker_side`` (only the taker-buy volumes differ)); and ``reason``,
    the ledger reason text (``None`` when it reconciles). Numpy, no Dagster.
    """
    ours = concat_minutes([trade_minute_arrays(trades)])
    theirs = kline_minute_arrays(klines.select(list(KLINES_SCHEMA)))
    theirs["key"] = np.zeros(len(theirs["open_time"]), np.int64)
    if day is None:
        times = ours["open_time"] if ours["open_time"].size else theirs["open_time"]
        if times.size == 0:
            raise ValueError("reconcile: no trades and no klines: give the day")
        day = _us(times.min()).date()
    prev = None if previous_close is None else {0: float(previous_close)}
    return compare_minute_arrays(ours, theirs, market, day, prev)[0]
