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

import polars as pl

from mnemo_assets.binance import formats
from mnemo_assets.binance.archive import ArchiveError
from mnemo_assets.markets import DatasetType

__all__ = ["KLINES_SCHEMA", "KlinesParseError", "minute_bars", "parse_klines_csv", "read_klines_file", "render_klines_csv"]

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


def parse_klines_csv(data: bytes, market: str, where: str, pair: str | None = None) -> pl.DataFrame:
    """Normalised klines of the bytes of one archive klines CSV (header or not).

    ``pair`` is needed for COIN-M (its contract size); ``where`` names the file in errors.
    Raises :class:`KlinesParseError`.
    """
    formats.check_market(market)
    size = None
    if market == "cm":
        if pair is None:
            raise KlinesParseError(f"{where}: COIN-M klines need the pair name (for the contract size)")
        size = formats.contract_size(pair.removesuffix("_PERP").split("_")[0].removesuffix("USD"))
    if not data.strip():
        return pl.DataFrame(schema=KLINES_SCHEMA)
    first_line = data.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    has_header = not first_line.split(",", 1)[0].strip().lstrip("-").isdigit()
    if has_header:
        names = [formats.HEADER_ALIASES.get(n.strip().lower()) for n in first_line.split(",")]
        if names != formats.KLINES_COLUMNS:
            raise KlinesParseError(
                f"{where}: line 1 is neither a kline nor the klines header {formats.KLINES_HEADER!r}: {first_line[:200]!r}"
            )
    try:
        raw = pl.read_csv(
            io.BytesIO(data), has_header=has_header, new_columns=None, schema=_RAW_DTYPES,
            truncate_ragged_lines=False, raise_if_empty=False,
        )
    except Exception as exc:
        raise KlinesParseError(_bad_line(data, has_header, where) + f" ({type(exc).__name__})") from exc
    if raw.drop("ignore").null_count().row(0) != (0,) * (raw.width - 1):
        raise KlinesParseError(_bad_line(data, has_header, where) + " (empty field)")
    if raw.height == 0:
        return pl.DataFrame(schema=KLINES_SCHEMA)
    try:
        factor = formats.time_factor(int(raw["open_time"].min()), int(raw["close_time"].max()), where)
    except ValueError as exc:
        raise KlinesParseError(str(exc)) from None
    if market == "cm":
        volume, quote = pl.col("quote_volume"), pl.col("volume") * size
        taker, taker_quote = pl.col("taker_buy_quote_volume"), pl.col("taker_buy_volume") * size
    else:
        volume, quote = pl.col("volume"), pl.col("quote_volume")
        taker, taker_quote = pl.col("taker_buy_volume"), pl.col("taker_buy_quote_volume")
    return raw.select(
        pl.from_epoch(pl.col("open_time") * factor, time_unit="us").alias("open_time"),
        "open", "high", "low", "close",
        volume.alias("volume"), quote.alias("quote_volume"), pl.col("count"),
        taker.alias("taker_buy_volume"), taker_quote.alias("taker_buy_quote_volume"),
        pl.from_epoch(pl.col("close_time") * factor, time_unit="us").alias("close_time"),
    )


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
