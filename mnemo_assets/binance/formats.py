"""The Binance archive's file formats, in one table.

Everything a source needs to know to read or write the archive's bytes lives here: the folder
layout, file names, CSV columns and header spellings, booleans, number formatting and time
units, per market (``spot``, ``um`` = USD-M futures, ``cm`` = COIN-M futures) and per dataset
(``trades``, ``klines`` at ``1m``). The synthetic archive writes with these tables, the klines
parser reads with them, and the trades parser keeps the same names (:data:`TRADES_COLUMNS`,
:data:`HEADER_ALIASES`).

Layout below any archive root (https://data.binance.vision/, a mirror, the synthetic cache)::

    data/{spot|futures/um|futures/cm}/daily/trades/{PAIR}/{PAIR}-trades-{YYYY-MM-DD}.zip
    data/{spot|futures/um|futures/cm}/daily/klines/{PAIR}/1m/{PAIR}-1m-{YYYY-MM-DD}.zip

each zip holding one CSV of the same stem, with ``{file}.zip.CHECKSUM`` beside it.

==========  ==========================  ===========================================
market      trades                      klines (12 columns)
==========  ==========================  ===========================================
spot        no header; 8 decimals;      no header; 8 decimals; times ms before
            ``True``/``False``; times   2025-01-01 and µs from then on
            ms before 2025-01-01 and
            µs from then on
um          header ``id,price,qty,``    header :data:`KLINES_HEADER`; shortest
            ``quote_qty,time,``         decimals; ms
            ``is_buyer_maker``;
            shortest decimals;
            ``true``/``false``; ms
cm          header with ``base_qty``    as um, but ``volume`` and
            (8 decimals) instead of     ``taker_buy_volume`` count **contracts** and
            ``quote_qty``; ``qty`` in   ``quote_volume`` / ``taker_buy_quote_volume``
            contracts                   are in the **base asset** (Binance's README:
                                        "Base asset volume", "Taker buy base asset
                                        volume"); base columns printed with 8 decimals
==========  ==========================  ===========================================

Futures files carry a header since 2022 and none before; readers detect it from the first
field. Time units are detected per file **from the values** (:func:`time_factor`), never from
the date; :func:`file_time_unit` is what a writer uses.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Literal

from mnemo_assets.markets import MARKET_ROOT, MARKETS, check_market  # noqa: F401 - MARKETS re-exported

TRADES = "trades"
KLINES = "klines"
#: datasets every source serves
DATASETS: tuple[str, ...] = (TRADES, KLINES)
#: the kline interval the archive sources serve
KLINE_INTERVAL = "1m"

#: pair names use the archive's alphabet only (also what keeps keys inside a mirror folder)
PAIR_RE = re.compile(r"^[A-Z0-9_]{1,40}$")

# ------------------------------------------------------------------ trades

#: raw trades CSV columns per market; the fourth differs (quote_qty vs base_qty)
TRADES_COLUMNS: dict[str, list[str]] = {
    "spot": ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"],
    "um": ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker"],
    "cm": ["id", "price", "qty", "base_qty", "time", "is_buyer_maker"],
}
#: the header line of a trades file (``None``: the market's files have none)
TRADES_HEADER: dict[str, str | None] = {
    "spot": None,
    "um": "id,price,qty,quote_qty,time,is_buyer_maker",
    "cm": "id,price,qty,base_qty,time,is_buyer_maker",
}

# ------------------------------------------------------------------ klines

KLINES_COLUMNS: list[str] = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
]
KLINES_HEADER = ",".join(KLINES_COLUMNS)
#: the header line of a klines file (``None``: the market's files have none)
KLINES_HEADER_BY_MARKET: dict[str, str | None] = {"spot": None, "um": KLINES_HEADER, "cm": KLINES_HEADER}
#: what the file's volume columns count: (volume & taker_buy_volume, quote_volume & taker_buy_quote_volume)
KLINES_VOLUME_UNITS: dict[str, tuple[str, str]] = {
    "spot": ("base", "quote"),
    "um": ("base", "quote"),
    "cm": ("contracts", "base"),
}

#: header spellings seen in the archive (and its documentation), normalised to the names above
HEADER_ALIASES: dict[str, str] = {
    # trades
    "id": "id",
    "trade_id": "id",
    "price": "price",
    "qty": "qty",
    "quoteqty": "quote_qty",
    "quote_qty": "quote_qty",
    "base_qty": "base_qty",
    "baseqty": "base_qty",
    "time": "time",
    "isbuyermaker": "is_buyer_maker",
    "is_buyer_maker": "is_buyer_maker",
    "isbestmatch": "is_best_match",
    "is_best_match": "is_best_match",
    # klines
    "open_time": "open_time",
    "opentime": "open_time",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "close_time": "close_time",
    "closetime": "close_time",
    "quote_volume": "quote_volume",
    "quote_asset_volume": "quote_volume",
    "quotevolume": "quote_volume",
    "count": "count",
    "number_of_trades": "count",
    "trades": "count",
    "taker_buy_volume": "taker_buy_volume",
    "taker_buy_base_asset_volume": "taker_buy_volume",
    "taker_buy_quote_volume": "taker_buy_quote_volume",
    "taker_buy_quote_asset_volume": "taker_buy_quote_volume",
    "ignore": "ignore",
}

# ------------------------------------------------------------------ values

#: how booleans are spelled: (true, false)
BOOL_TEXT: dict[str, tuple[str, str]] = {"spot": ("True", "False"), "um": ("true", "false"), "cm": ("true", "false")}

#: number formatting: ``fixed8`` = always 8 decimals (``61800.30000000``), ``shortest`` = no
#: trailing zeros (``61800.3``, ``1``); COIN-M ``base_qty`` and base-asset kline columns are fixed8
DECIMALS: dict[str, Literal["fixed8", "shortest"]] = {"spot": "fixed8", "um": "shortest", "cm": "shortest"}

#: first day a market's files carry microseconds (``None``: always milliseconds)
MICROS_FROM: dict[str, date | None] = {"spot": date(2025, 1, 1), "um": None, "cm": None}

#: ms timestamps stay below 1e14 until the year 5138; µs timestamps are above it after 1973
US_THRESHOLD = 100_000_000_000_000


def file_time_unit(market: str, day: date) -> Literal["ms", "us"]:
    """The time unit of a ``market`` file for ``day`` (what a writer uses)."""
    first = MICROS_FROM[check_market(market)]
    return "us" if first is not None and day >= first else "ms"


def time_factor(lo: int, hi: int, where: str) -> int:
    """Microseconds per unit of a file's times (1000 for ms, 1 for µs), from its smallest and
    largest value; raises ``ValueError`` naming ``where`` for negative or mixed units."""
    if lo < 0:
        raise ValueError(f"{where}: negative time {lo}")
    if (lo < US_THRESHOLD) != (hi < US_THRESHOLD):
        raise ValueError(f"{where}: times mix milliseconds and microseconds ({lo} .. {hi})")
    return 1000 if hi < US_THRESHOLD else 1


def contract_size(symbol: str) -> float:
    """COIN-M contract size in USD: 100 for BTC contracts, 10 for the others."""
    return 100.0 if symbol.split("_")[0] == "BTC" else 10.0


# ------------------------------------------------------------------ layout


def check_dataset(dataset: str) -> str:
    """``dataset`` if the archive sources serve it (``trades``, ``klines``), else ``ValueError``."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown archive dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    return dataset


def check_pair(pair: str) -> str:
    """``pair`` if it uses the archive's alphabet ``[A-Z0-9_]``, else ``ValueError``.

    This is what keeps a hostile name (``..``, ``/``, ``%2F``, spaces) from ever becoming a
    path or a URL.
    """
    if not isinstance(pair, str) or not PAIR_RE.fullmatch(pair):
        raise ValueError(f"bad pair name {pair!r}: pairs use only A-Z, 0-9 and _ (e.g. BTCUSDT, BTCUSD_PERP)")
    return pair


def dataset_prefix(market: str, dataset: str = TRADES) -> str:
    """Folder holding every pair's folder of a dataset: ``data/spot/daily/klines``."""
    return f"{MARKET_ROOT[check_market(market)]}/{check_dataset(dataset)}"


def pair_folder(market: str, pair: str, dataset: str = TRADES) -> str:
    """Folder of one pair's files: ``data/spot/daily/trades/BTCUSDT``, ``.../klines/BTCUSDT/1m``."""
    folder = f"{dataset_prefix(market, dataset)}/{check_pair(pair)}"
    return f"{folder}/{KLINE_INTERVAL}" if dataset == KLINES else folder


def file_name(pair: str, day: date, dataset: str = TRADES, ext: str = "zip") -> str:
    """``BTCUSDT-trades-2024-08-08.zip`` or ``BTCUSDT-1m-2024-08-08.zip``."""
    tag = "trades" if check_dataset(dataset) == TRADES else KLINE_INTERVAL
    return f"{pair}-{tag}-{day.isoformat()}.{ext}"


_NAME_RE = re.compile(r"^(?P<pair>[A-Z0-9_]+)-(?P<tag>trades|1m)-(?P<day>\d{4}-\d{2}-\d{2})\.(?:zip|csv)(?:\.CHECKSUM)?$")


def parse_file_name(name: str) -> tuple[str, str, date]:
    """``(dataset, pair, day)`` of an archive file name (``.zip``, ``.csv``, ``.zip.CHECKSUM``,
    with an optional ``.partial`` infix before ``.csv``); ``ValueError`` otherwise."""
    base = Path(name).name.replace(".partial.", ".")
    match = _NAME_RE.match(base)
    if not match:
        raise ValueError(f"{name!r} is not an archive file name ({{PAIR}}-trades-{{YYYY-MM-DD}}.zip or {{PAIR}}-1m-{{YYYY-MM-DD}}.zip)")
    try:
        day = date.fromisoformat(match.group("day"))
    except ValueError as exc:
        raise ValueError(f"{name!r}: bad date in the file name ({exc})") from None
    dataset = TRADES if match.group("tag") == "trades" else KLINES
    return dataset, match.group("pair"), day
