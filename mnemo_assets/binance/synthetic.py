"""The synthetic archive: seeded, reproducible trade files in the exact Binance archive format.

:class:`SyntheticArchive` is the project's embedded default source. It serves, for every
``(market, pair, day)`` of a seeded universe, the bytes a real archive zip would hold (spot:
no header, 8-decimal numbers, ``True``/``False``, ms before 2025-01-01 and µs from then on;
USD-M and COIN-M: header, shortest decimals, lowercase booleans, ms), plus its ``.CHECKSUM``.

The model, all of it drawn from ``seed``:

- **Universe.** Bases are a few majors (BTC, ETH, SHIB, ...) and generated names (``ZQX``,
  ``1000PEP``) with reference prices from ~1e-5 to ~6e4 on 2024-12-20. Every base trades on the
  first peg (spot), about a fifth of the pairs are the same bases on the other pegs; USD-M
  perpetuals ``{BASE}{PEG}`` exist for the most active bases, COIN-M ``{BASE}USD_PERP`` for a
  handful (BTC, ETH, ...; contract size from :func:`parse.contract_size`). Activity is Zipf-like
  over the activity rank of the base (BTC first, ETH second). A pair has a file on exactly the
  days it is listed: some pairs are listed or delisted at a day drawn between ``start`` and
  ``start + horizon_days`` (spot and USD-M always have one listing and one delisting in the
  first ten days), trading from / until an hour of that day.
- **Prices.** Each base has a daily log random walk (anchored at its reference price on
  2024-12-20, in 64-day blocks seeded by ``(seed, base, block)``); day ``D``'s intraday path is
  a Brownian bridge with jumps from the walk's value at ``D`` to the one at ``D+1``, on a 5 s
  grid seeded by ``(seed, base, D)``, shared by every market and peg of the base (futures and
  second pegs add a small daily basis). Trades print at the tick above (taker buys) or below
  (taker sells) the path, and a taker order that fills several makers walks the book.
- **Trades of a day** are seeded by ``(seed, market, pair, D)``, so any day is generated on
  its own: the count is Poisson around the pair's Zipf share × weekday, market and pair day
  factors; taker orders arrive as an inhomogeneous Poisson process (24 h seasonality, hourly
  noise, whole dead hours for the less active pairs); each order fills 1+ trades sharing its
  timestamp and side; the side's probability varies per pair and day; sizes are lognormal with a
  Pareto tail and round lots, in step-size units (COIN-M: whole contracts). Trade ids are
  contiguous across days: a day's first id is the pair's base id (0 for a new listing) plus the
  counts of its earlier listed days (counts are cheap to draw without the trades).

Zips are deterministic (one member, ZIP_DEFLATED level 5, dated the day at 00:00, fixed
attributes), so the same configuration always gives byte-identical zips and CHECKSUMs.

Numbers are generated as integers of ticks and steps, so every printed decimal is exact and
:meth:`SyntheticArchive.normalised_trades` equals parsing the zip with
:func:`~mnemo_assets.binance.parse.parse_trades_csv`, bit for bit. Bytes depend on every
constructor knob except ``end``, ``cache_dir`` and ``path_cache_size``.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from mnemo_assets.binance import formats
from mnemo_assets.binance.archive import (
    ArchiveError,
    ArchiveFile,
    ArchiveMissingError,
    ArchiveSource,
    LocalMirror,
    archive_key,
    checksum_line,
    trades_file_name,
    verify_zip,
    write_atomic,
)
from mnemo_assets.binance.formats import KLINES, TRADES, check_dataset
from mnemo_assets.binance.parse import TRADES_SCHEMA, contract_size, split_pair
from mnemo_assets.config import SyntheticSettings
from mnemo_assets.markets import MARKETS, check_market

__all__ = ["SyntheticArchive", "SyntheticPair"]

#: bump when the model changes the bytes; part of the cache fingerprint
#: (2: no int64 overflow for tiny prices and huge sizes, prices kept within ×/÷100 of their
#: reference, COIN-M sizes capped so base_qty stays exact, 1m klines)
MODEL_VERSION = 2
_DEFAULTS = SyntheticSettings()
_MARKER = ".synthetic-archive.json"
_EPOCH = date(1970, 1, 1)
_PRICE_ANCHOR = date(2024, 12, 20)  # reference prices hold on this day
_BLOCK = 64  # days per block of daily draws
_DAY_US = 86_400_000_000
_PATH_STEP_S = 5  # resolution of the intraday price path
_PATH_N = 86_400 // _PATH_STEP_S
#: every printed number is an integer of units below this, so that its decimal is the shortest
#: representation of the double a parser reads (below 2**52 the decimal grid is coarser than the
#: doubles), which makes parsing, summing and re-printing exact
_MAX_EXACT = 2**52
#: a base's daily log-price stays within ±_BAND of its reference (×/÷100)
_BAND = float(np.log(100.0))
#: largest notional of one trade (USD), and largest COIN-M base quantity of one trade (coins)
_MAX_NOTIONAL = 2e6
_MAX_CM_BASE = 4e7

# name, reference price (USD, 2024-12-20), daily log-vol; inclusion order for small universes
_MAJORS: tuple[tuple[str, float, float], ...] = (
    ("BTC", 60_000.0, 0.025),
    ("ETH", 3_000.0, 0.032),
    ("SHIB", 1.8e-5, 0.05),
    ("SOL", 150.0, 0.045),
    ("XRP", 0.55, 0.045),
    ("DOGE", 0.12, 0.05),
    ("BNB", 600.0, 0.03),
    ("PEPE", 9.5e-6, 0.06),
    ("ADA", 0.45, 0.045),
    ("LTC", 80.0, 0.04),
    ("LINK", 14.0, 0.045),
    ("AVAX", 30.0, 0.05),
)
_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
_SECOND_PEG_SHARE = 0.2  # share of spot pairs on the pegs after the first
_SECOND_PEG_WEIGHT = 0.15  # activity of a second-peg pair relative to the first-peg pair


def _season(hours: np.ndarray) -> np.ndarray:
    """Intraday activity profile (mean ≈ 1): peak around 14:30 UTC, a secondary 12 h cycle."""
    return 1.0 + 0.45 * np.cos(2 * np.pi * (hours - 14.5) / 24) + 0.15 * np.cos(4 * np.pi * (hours - 2.0) / 24)


_SEASON_MIN = _season((np.arange(1440) + 0.5) / 60)
_SEASON_MIN[::60] *= 1.5  # the first minute of every hour is busier
_SEASON_PATH = _season((np.arange(_PATH_N) + 0.5) * _PATH_STEP_S / 3600)
_SEASON_PATH /= _SEASON_PATH.sum()


def _seed_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:16], "little")


def _rng(*parts: object) -> np.random.Generator:
    """A generator seeded from a tuple (stable across processes and platforms)."""
    return np.random.default_rng(_seed_int(*parts))


def _fixed8(col: str, exp: int = 8) -> pl.Expr:
    """An integer column of ``10**-exp`` units (``exp <= 8``) printed with exactly 8 decimals.

    Whole and fractional parts are taken apart before padding, so no value is ever scaled up
    (a PEPE quantity of 4e11 whole coins never becomes 4e19 units of 1e-8)."""
    c = pl.col(col)
    if exp == 0:
        return pl.concat_str([c.cast(pl.String), pl.lit(".00000000")]).alias(col)
    frac = (c % 10**exp).cast(pl.String).str.zfill(exp)
    if exp < 8:
        frac = pl.concat_str([frac, pl.lit("0" * (8 - exp))])
    return pl.concat_str([(c // 10**exp).cast(pl.String), pl.lit("."), frac]).alias(col)


def _shortest(col: str, exp: int) -> pl.Expr:
    """An integer column of 10**-exp units printed without trailing zeros (``61800.3``, ``1``)."""
    c = pl.col(col)
    if exp == 0:
        return c.cast(pl.String).alias(col)
    frac = (c % 10**exp).cast(pl.String).str.zfill(exp).str.strip_chars_end("0")
    whole = (c // 10**exp).cast(pl.String)
    return pl.when(frac == "").then(whole).otherwise(pl.concat_str([whole, pl.lit("."), frac])).alias(col)


def _zip(member: str, data: bytes, day: date) -> bytes:
    """A deterministic zip holding one member (fixed date, attributes and compression)."""
    info = zipfile.ZipInfo(member, date_time=(day.year, day.month, day.day, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, data, compresslevel=5)
    return buf.getvalue()


@dataclass(frozen=True)
class SyntheticPair:
    """One pair of the synthetic universe.

    Prices are integers of ``10**-price_exp`` (the tick), sizes integers of ``10**-qty_exp``
    (the step; COIN-M: whole contracts of ``contract_size`` USD).
    """

    market: str
    pair: str
    symbol: str
    peg: str
    #: expected trades on a full ordinary day
    expected_trades: float
    #: first day with a file (``start`` for pairs listed before it)
    listed: date
    #: last day with a file, ``None`` while listed
    delisted: date | None
    #: listed after ``start``: ids start at 0 and trading starts at ``open_hour`` of ``listed``
    new_listing: bool
    open_hour: int
    #: trading stops at ``close_hour`` on ``delisted``
    close_hour: int
    price_exp: int
    qty_exp: int
    contract_size: float | None
    first_id: int
    burst_p: float


@dataclass
class _Base:
    name: str
    price: float
    vol: float
    rank: int  # activity rank, 1 = most active
    weight: float  # Zipf weight


@dataclass
class _Day:
    """The trades of one (market, pair, day) as exact integers."""

    info: SyntheticPair
    day: date
    ids: np.ndarray  # int64
    price: np.ndarray  # int64 ticks
    qty: np.ndarray  # int64 steps (cm: contracts)
    time_us: np.ndarray  # int64 µs since epoch
    buyer_maker: np.ndarray  # bool


class SyntheticArchive(ArchiveSource):
    """A deterministic synthetic Binance trade archive (see the module docstring for the model).

    ``trades_per_day`` is the expected number of spot trades per day over all pairs; USD-M and
    COIN-M default to 1/2 and 1/20 of it. ``n_pairs`` counts spot pairs over all ``pegs``.
    ``end`` (default: yesterday UTC) bounds :meth:`list_days` and :meth:`fetch`; pass it
    explicitly for reproducible listings. Files are generated on demand and cached under
    ``cache_dir`` in the archive layout, which is marked with the generating configuration.
    """

    kind = "synthetic"

    def __init__(
        self,
        cache_dir: str | Path,
        seed: int = _DEFAULTS.seed,
        n_pairs: int = _DEFAULTS.n_pairs,
        trades_per_day: int = _DEFAULTS.trades_per_day,
        start: date = _DEFAULTS.start,
        end: date | None = None,
        pegs: tuple[str, ...] = ("USDT", "USDC"),
        *,
        um_trades_per_day: int | None = None,
        cm_trades_per_day: int | None = None,
        n_um_pairs: int | None = None,
        n_cm_pairs: int = 6,
        zipf_exponent: float = 1.0,
        horizon_days: int = 180,
        path_cache_size: int = 256,
    ):
        if n_pairs < 1:
            raise ValueError(f"n_pairs must be at least 1, got {n_pairs}")
        if not pegs or len(set(pegs)) != len(pegs):
            raise ValueError(f"pegs must be distinct and non-empty, got {pegs!r}")
        if start < date(1980, 1, 2):
            raise ValueError(f"start must be after 1980-01-01 (zip dates), got {start}")
        self.cache_dir = Path(cache_dir).expanduser()
        self.seed = int(seed)
        self.n_pairs = int(n_pairs)
        self.trades_per_day = int(trades_per_day)
        self.start = start
        self.end = end if end is not None else datetime.now(UTC).date() - timedelta(days=1)
        self.pegs = tuple(pegs)
        self.market_trades = {
            "spot": float(trades_per_day),
            "um": float(um_trades_per_day if um_trades_per_day is not None else trades_per_day // 2),
            "cm": float(cm_trades_per_day if cm_trades_per_day is not None else trades_per_day // 20),
        }
        self.n_um_pairs = n_um_pairs
        self.n_cm_pairs = int(n_cm_pairs)
        self.zipf_exponent = float(zipf_exponent)
        self.horizon_days = int(horizon_days)
        self._path_cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._path_cache_size = path_cache_size
        self._path_lock = threading.Lock()
        self._block_cache: dict[tuple, np.ndarray] = {}
        self._last_ticks: dict[tuple[str, str, date], int] = {}
        self._marked: set[Path] = set()
        self._bases = self._make_bases()
        self._base_by_name = {b.name: b for b in self._bases}
        self._universe = {m: self._make_universe(m) for m in MARKETS}

    @classmethod
    def from_settings(cls, cache_dir: str | Path, settings: SyntheticSettings, **kw) -> SyntheticArchive:
        """The archive a ``source.synthetic`` section describes, cached in ``cache_dir``."""
        return cls(cache_dir, seed=settings.seed, n_pairs=settings.n_pairs, trades_per_day=settings.trades_per_day, start=settings.start, **kw)

    # ------------------------------------------------------------------ description

    def fingerprint(self) -> dict:
        """Every knob the bytes depend on (written beside cached files)."""
        return {
            "model": MODEL_VERSION,
            "seed": self.seed,
            "n_pairs": self.n_pairs,
            "market_trades": self.market_trades,
            "start": self.start.isoformat(),
            "pegs": list(self.pegs),
            "n_um_pairs": self.n_um_pairs,
            "n_cm_pairs": self.n_cm_pairs,
            "zipf_exponent": self.zipf_exponent,
            "horizon_days": self.horizon_days,
        }

    def describe(self) -> str:
        return f"synthetic:seed={self.seed},pairs={self.n_pairs},trades/day={self.trades_per_day},{self.start}..{self.end}"

    def universe(self, market: str) -> list[SyntheticPair]:
        """Every pair of ``market`` (listed in ``[start, end]`` or not), sorted by pair."""
        return sorted(self._universe[check_market(market)].values(), key=lambda p: p.pair)

    def pair_info(self, market: str, pair: str) -> SyntheticPair:
        """The :class:`SyntheticPair` of a pair; :class:`ArchiveMissingError` if unknown."""
        try:
            return self._universe[check_market(market)][pair]
        except KeyError:
            raise ArchiveMissingError(f"synthetic archive: no {market} pair {pair!r}") from None

    # ------------------------------------------------------------------ universe

    def _make_bases(self) -> list[_Base]:
        n_second = 0 if len(self.pegs) == 1 else round(self.n_pairs * _SECOND_PEG_SHARE)
        n_bases = self.n_pairs - n_second
        rng = _rng(self.seed, "bases")
        names: list[tuple[str, float, float]] = list(_MAJORS[:n_bases])
        taken = {n for n, _, _ in _MAJORS}
        while len(names) < n_bases:
            length = int(rng.integers(3, 6))
            name = "".join(rng.choice(_LETTERS, length))
            if rng.random() < 0.15:  # some names carry digits
                name = name[:-1] + str(int(rng.integers(0, 10)))
            price = float(10 ** rng.uniform(-4.0, 3.3))
            if price < 1e-3 and rng.random() < 0.3:  # a "1000" contract of a tiny coin
                name, price = "1000" + name[:3], price * 1000
            if name in taken or not all(self._splits(name, peg) for peg in self.pegs):
                continue
            taken.add(name)
            names.append((name, price, float(rng.uniform(0.04, 0.09))))
        # activity rank: BTC, ETH, then majors mostly ahead of generated names
        score = [
            -2.0 if i == 0 else -1.0 if i == 1 else rng.uniform(0, 0.6) if i < len(_MAJORS) else rng.uniform(0.3, 1.6) for i in range(len(names))
        ]
        order = np.argsort(score, kind="stable")
        ranks = np.empty(len(names), dtype=int)
        ranks[order] = np.arange(1, len(names) + 1)
        bases = []
        for (name, price, vol), rank in zip(names, ranks, strict=True):
            jitter = float(np.exp(_rng(self.seed, "ref", name).normal(0, 0.15)))
            bases.append(_Base(name, price * jitter, vol, int(rank), 1.0 / rank**self.zipf_exponent))
        return bases

    @staticmethod
    def _splits(base: str, peg: str, market: str = "spot") -> bool:
        """Whether the parser (with its default quote list) splits the pair back into (base, peg)."""
        pair = f"{base}USD_PERP" if market == "cm" else base + peg
        return split_pair(pair, market) == (base, "USD" if market == "cm" else peg)

    def _make_universe(self, market: str) -> dict[str, SyntheticPair]:
        rng = _rng(self.seed, "universe", market)
        by_rank = sorted(self._bases, key=lambda b: b.rank)
        entries: list[tuple[_Base, str, float]] = []  # base, peg, relative weight
        if market == "spot":
            entries += [(b, self.pegs[0], 1.0) for b in self._bases]
            n_second = self.n_pairs - len(self._bases)
            for j, peg in enumerate(self.pegs[1:]):
                k = n_second // (len(self.pegs) - 1) + (1 if j < n_second % (len(self.pegs) - 1) else 0)
                entries += [(b, peg, _SECOND_PEG_WEIGHT) for b in self._pick(rng, by_rank, k)]
        elif market == "um":
            n_um = self.n_um_pairs if self.n_um_pairs is not None else max(1, round(0.6 * self.n_pairs))
            n_first = min(len(by_rank), max(1, round(n_um * 0.85)))
            entries += [(b, self.pegs[0], 1.0) for b in self._pick(rng, by_rank, n_first)]
            rest = n_um - n_first
            for j, peg in enumerate(self.pegs[1:]):
                k = rest // (len(self.pegs) - 1) + (1 if j < rest % (len(self.pegs) - 1) else 0)
                entries += [(b, peg, 0.3) for b in self._pick(rng, by_rank, k)]
        else:
            eligible = [b for b in by_rank if b.price >= 0.05 and self._splits(b.name, "USD", "cm")]
            entries += [(b, "USD", 1.0) for b in self._pick(rng, eligible, self.n_cm_pairs)]
        names = [f"{b.name}USD_PERP" if market == "cm" else b.name + peg for b, peg, _ in entries]
        weights = np.array([b.weight * w for b, _, w in entries])
        weights *= np.exp([_rng(self.seed, "noise", market, name).normal(0, 0.2) for name in names])
        expected_all = self.market_trades[market] * weights / (weights.sum() or 1.0)
        pairs: dict[str, SyntheticPair] = {}
        majors = {name for name, _, _ in _MAJORS}
        candidates = [i for i, (b, _, _) in enumerate(entries) if b.name not in majors]
        if len(candidates) < 3:  # a small universe: any pair but BTC and ETH
            candidates = [i for i, (b, _, _) in enumerate(entries) if b.name not in ("BTC", "ETH")]
        listed = {i: self.start for i in range(len(entries))}
        delisted: dict[int, date | None] = dict.fromkeys(range(len(entries)))
        new = set()
        for i in candidates:
            u = rng.random()
            offset = int(rng.integers(1, self.horizon_days + 1))
            if u < 0.06:
                listed[i] = self.start + timedelta(days=offset)
                new.add(i)
            elif u < 0.11:
                delisted[i] = self.start + timedelta(days=offset)
        if market != "cm" and len(candidates) >= 3:  # one listing and one delisting in the first days
            a, b = (int(x) for x in rng.choice(candidates, 2, replace=False))
            listed[a], delisted[a] = self.start + timedelta(days=int(rng.integers(1, 8))), None
            new.add(a)
            listed[b], delisted[b] = self.start, self.start + timedelta(days=int(rng.integers(2, 10)))
            new.discard(b)
        for i, (b, peg, _) in enumerate(entries):
            pair, expected = names[i], float(expected_all[i])
            prng = _rng(self.seed, "pair", market, pair)
            mag = int(np.floor(np.log10(b.price)))
            if market == "spot":
                price_exp = int(np.clip(5 - mag, 2, 8))
                qty_exp = int(np.clip(np.floor(np.log10(b.price / 0.5)), 0, 8))
                qty_exp = min(qty_exp, 8 - price_exp)  # tick × step ≥ 1e-8: quoteQty is exact
                size = None
            elif market == "um":
                price_exp = int(np.clip(5 - mag, 1, 8))
                qty_exp = int(np.clip(np.ceil(np.log10(b.price / 20)), 0, 3))
                qty_exp = min(qty_exp, 9 - price_exp)  # quote_qty stays an exact double
                size = None
            else:
                price_exp = int(np.clip(5 - mag, 1, 4))
                qty_exp = 0
                size = contract_size(b.name)
            is_new = i in new
            first_id = 0 if is_new else int(expected * prng.uniform(200, 1500)) + int(prng.integers(0, 10**6))
            pairs[pair] = SyntheticPair(
                market=market,
                pair=pair,
                symbol=b.name,
                peg=peg,
                expected_trades=expected,
                listed=listed[i],
                delisted=delisted[i],
                new_listing=is_new,
                open_hour=int(prng.integers(0, 13)) if is_new else 0,
                close_hour=int(prng.integers(4, 24)) if delisted[i] is not None else 24,
                price_exp=price_exp,
                qty_exp=qty_exp,
                contract_size=size,
                first_id=first_id,
                burst_p=float(prng.uniform(0.45, 0.7)),
            )
        return pairs

    @staticmethod
    def _pick(rng: np.random.Generator, by_rank: list[_Base], k: int) -> list[_Base]:
        """``k`` bases: the two most active, then drawn by activity without replacement."""
        k = min(k, len(by_rank))
        head = by_rank[: min(2, k)]
        rest = by_rank[len(head) :]
        if k <= len(head) or not rest:
            return head
        w = np.array([b.weight for b in rest]) ** 0.5
        idx = rng.choice(len(rest), k - len(head), replace=False, p=w / w.sum())
        return head + [rest[i] for i in sorted(idx)]

    # ------------------------------------------------------------------ listing

    def _last_day(self, info: SyntheticPair, end: date) -> date:
        return min(end, info.delisted) if info.delisted is not None else end

    def _days(self, info: SyntheticPair, start: date, end: date) -> list[date]:
        first, last = max(start, info.listed), self._last_day(info, end)
        return [first + timedelta(days=k) for k in range((last - first).days + 1)]

    def _is_listed(self, info: SyntheticPair, day: date, end: date | None = None) -> bool:
        return info.listed <= day <= self._last_day(info, end if end is not None else self.end)

    def list_pairs(self, market: str, dataset: str = TRADES) -> list[str]:
        """Pairs with files in ``[start, end]``; klines exist exactly where trades do."""
        check_dataset(dataset)
        return sorted(p.pair for p in self._universe[check_market(market)].values() if p.listed <= self._last_day(p, self.end))

    def list_days(self, market: str, pair: str, dataset: str = TRADES) -> list[date]:
        check_dataset(dataset)
        info = self._universe[check_market(market)].get(pair)
        return [] if info is None else self._days(info, self.start, self.end)

    def _require(self, market: str, pair: str, day: date, end: date | None = None) -> SyntheticPair:
        info = self._universe[check_market(market)].get(pair)
        if info is None:
            raise ArchiveMissingError(f"synthetic archive: no {market} pair {pair!r} (no file for {pair} on {day})")
        if not self._is_listed(info, day, end):
            last = self._last_day(info, end if end is not None else self.end)
            raise ArchiveMissingError(f"synthetic archive: no {market} trades file for {pair} on {day} (files from {info.listed} to {last})")
        return info

    # ------------------------------------------------------------------ daily draws

    def _block(self, kind: str, key: str, block: int) -> np.ndarray:
        """64 daily draws of a seeded stream (``walk``: log-returns; ``count``: trade counts)."""
        ck = (kind, key, block)
        cached = self._block_cache.get(ck)
        if cached is not None:
            return cached
        rng = _rng(self.seed, kind, key, block)
        days = block * _BLOCK + np.arange(_BLOCK)
        if kind == "walk":
            base = self._base_by_name[key]
            out = rng.normal(0.0, base.vol, _BLOCK)
        elif kind == "mday":  # market-wide daily activity factor
            out = np.exp(rng.normal(-(0.15**2) / 2, 0.15, _BLOCK))
        else:
            market, pair = key.split("/")
            info = self._universe[market][pair]
            weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (3)
            lam = info.expected_trades * np.where(weekday >= 5, 0.8, 1.0)
            lam = lam * np.exp(rng.normal(-(0.3**2) / 2, 0.3, _BLOCK)) * self._mday(market, block)
            first, last = self._ordinal(info.listed), self._ordinal(info.delisted) if info.delisted else None
            if info.new_listing:
                lam = np.where(days == first, lam * 3.0 * (24 - info.open_hour) / 24, lam)
            if last is not None:
                lam = np.where(days == last, lam * info.close_hour / 24, lam)
            out = np.maximum(rng.poisson(lam), 1)
            out[days < first] = 0
            if last is not None:
                out[days > last] = 0
        self._block_cache[ck] = out
        return out

    def _mday(self, market: str, block: int) -> np.ndarray:
        return self._block("mday", market, block)

    @staticmethod
    def _ordinal(day: date) -> int:
        return (day - _EPOCH).days

    def _block_sum(self, kind: str, key: str, lo: int, hi: int) -> float:
        """Sum of the daily draws for day ordinals ``[lo, hi)``."""
        total = 0
        for b in range(lo // _BLOCK, (hi - 1) // _BLOCK + 1) if hi > lo else ():
            arr = self._block(kind, key, b)
            s, e = max(lo - b * _BLOCK, 0), min(hi - b * _BLOCK, _BLOCK)
            total += arr[s:e].sum()
        return total

    def _open_log_price(self, base: _Base, day_ord: int) -> float:
        anchor = self._ordinal(_PRICE_ANCHOR)
        if day_ord >= anchor:
            walk = self._block_sum("walk", base.name, anchor, day_ord)
        else:
            walk = -self._block_sum("walk", base.name, day_ord, anchor)
        return float(np.log(base.price) + np.clip(walk, -_BAND, _BAND))

    def _count(self, info: SyntheticPair, day: date) -> int:
        return int(self._block("count", f"{info.market}/{info.pair}", self._ordinal(day) // _BLOCK)[self._ordinal(day) % _BLOCK])

    def _first_id(self, info: SyntheticPair, day: date) -> int:
        key = f"{info.market}/{info.pair}"
        return info.first_id + int(self._block_sum("count", key, self._ordinal(info.listed), self._ordinal(day)))

    def _path(self, base: _Base, day_ord: int) -> np.ndarray:
        """Intraday log-price of a base on a 5 s grid (``_PATH_N + 1`` points), shared by markets."""
        key = (base.name, day_ord)
        with self._path_lock:
            path = self._path_cache.get(key)
            if path is not None:
                self._path_cache.move_to_end(key)
                return path
        lo0, lo1 = self._open_log_price(base, day_ord), self._open_log_price(base, day_ord + 1)
        rng = _rng(self.seed, "path", base.name, day_ord)
        sigma = base.vol * float(np.exp(rng.normal(0, 0.25)))
        inc = rng.standard_normal(_PATH_N) * (sigma * np.sqrt(_SEASON_PATH))
        n_jumps = int(rng.poisson(0.8))
        np.add.at(inc, rng.integers(0, _PATH_N, n_jumps), rng.normal(0, 0.6 * sigma, n_jumps))
        w = np.concatenate([[0.0], np.cumsum(inc)])
        u = np.arange(_PATH_N + 1) / _PATH_N
        path = lo0 + u * (lo1 - lo0) + w - u * w[-1]
        with self._path_lock:
            self._path_cache[key] = path
            while len(self._path_cache) > self._path_cache_size:
                self._path_cache.popitem(last=False)
        return path

    # ------------------------------------------------------------------ one day of trades

    def _generate(self, market: str, pair: str, day: date, end: date | None = None) -> _Day:
        info = self._require(market, pair, day, end)
        base = self._base_by_name[info.symbol]
        n = self._count(info, day)
        first_id = self._first_id(info, day)
        day_ord = self._ordinal(day)
        rng = _rng(self.seed, "trades", market, pair, day_ord)

        # arrival rate over the day's minutes: seasonality × hourly noise × alive hours
        lam = info.expected_trades
        p_dead = float(np.clip(0.4 * (1 - np.log10(max(lam, 1.0)) / 4.5), 0.0, 0.4))
        alive = rng.random(24) >= p_dead
        lo_h = info.open_hour if (info.new_listing and day == info.listed) else 0
        hi_h = info.close_hour if day == info.delisted else 24
        window = np.zeros(24, dtype=bool)
        window[lo_h:hi_h] = True
        alive &= window
        if not alive.any():
            alive[int(rng.integers(lo_h, hi_h))] = True
        hour_w = np.exp(rng.normal(0, 0.35, 24)) * alive
        cdf = np.concatenate([[0.0], np.cumsum(_SEASON_MIN * np.repeat(hour_w, 60))])
        cdf /= cdf[-1]

        # taker orders (bursts of trades sharing time, side and a walk up/down the book)
        sizes = rng.geometric(info.burst_p, n)
        ends = np.cumsum(sizes)
        m = int(np.searchsorted(ends, n)) + 1
        sizes = sizes[:m]
        sizes[-1] -= ends[m - 1] - n
        gaps = rng.standard_exponential(m + 1)
        cum = np.cumsum(gaps)
        u = np.minimum(cum[:m] / cum[m], np.nextafter(1.0, 0.0))
        minute = np.searchsorted(cdf, u, side="right") - 1
        frac = (u - cdf[minute]) / (cdf[minute + 1] - cdf[minute])
        t_sec = (minute + np.clip(frac, 0.0, 1.0)) * 60.0
        t_us = np.minimum((t_sec * 1e6).astype(np.int64), _DAY_US - 1)
        t_us = np.maximum.accumulate(t_us)
        p_bm = float(np.clip(rng.normal(0.5, 0.08), 0.2, 0.8))
        side_bm = rng.random(m) < p_bm

        # mid log-price at each order: the base's path plus this market/peg's daily basis
        path = self._path(base, day_ord)
        log_mid = np.interp(t_sec / _PATH_STEP_S, np.arange(_PATH_N + 1), path)
        if market != "spot" or info.peg != self.pegs[0]:
            log_mid += _rng(self.seed, "basis", market, info.peg, info.symbol, day_ord).normal(0, 3e-4)
        scaled = np.exp(log_mid) * 10.0**info.price_exp

        # expand orders to trades
        order = np.repeat(np.arange(m), sizes)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        step = (rng.random(n) < 0.35).astype(np.int64)
        step[starts] = 0
        walk = np.cumsum(step)
        walk -= np.repeat(walk[starts], sizes)
        bm = side_bm[order]
        price = np.where(bm, np.floor(scaled)[order] - walk, np.ceil(scaled)[order] + walk)
        price = np.maximum(price, 1).astype(np.int64)

        # sizes: lognormal notional with a Pareto tail, in steps (cm: contracts), some round lots
        median = {"spot": 60.0, "um": 400.0, "cm": 400.0}[market]
        notional = np.exp(rng.normal(np.log(median), 1.5, n))
        tail = rng.random(n) < 0.02
        notional[tail] *= 1.0 + rng.pareto(1.2, int(tail.sum()))
        if market == "cm":
            # at most 100k contracts, and few enough coins that base_qty stays exact
            cap = np.clip(np.floor(_MAX_CM_BASE * price / 10.0**info.price_exp / info.contract_size), 1, 100_000)
            qty = np.clip(np.rint(notional / info.contract_size), 1, cap).astype(np.int64)
        else:
            notional = np.minimum(notional, _MAX_NOTIONAL)
            step_value = price * 10.0 ** (-info.price_exp - info.qty_exp)
            qty = np.maximum(np.rint(notional / step_value), 1).astype(np.int64)
        lots = (rng.random(n) < 0.2) & (qty >= 10)
        mag = 10 ** np.floor(np.log10(qty[lots])).astype(np.int64)
        qty[lots] = np.maximum(np.rint(qty[lots] / mag).astype(np.int64) * mag, mag)

        with self._path_lock:
            self._last_ticks[(market, pair, day)] = int(price[-1])
            while len(self._last_ticks) > 4096:
                self._last_ticks.pop(next(iter(self._last_ticks)))
        return _Day(info, day, np.arange(first_id, first_id + n, dtype=np.int64), price, qty, day_ord * _DAY_US + t_us[order], bm)

    # ------------------------------------------------------------------ rendering

    def _columns(self, d: _Day) -> dict[str, tuple[np.ndarray, int]]:
        """Exact integer columns of the file, each with its decimal exponent: ``(units, exp)``
        stands for ``units / 10**exp``. No value is scaled beyond its own precision."""
        info = d.info
        pe, qe = info.price_exp, info.qty_exp
        if info.market == "cm":
            # base_qty = contracts × size / price, rounded half up to 8 decimals (≤ 2e18 here)
            num = d.qty * int(info.contract_size) * 10 ** (8 + pe)
            cols = {"price": (d.price, pe), "qty": (d.qty, 0), "quote": ((2 * num + d.price) // (2 * d.price), 8)}
        else:
            cols = {"price": (d.price, pe), "qty": (d.qty, qe), "quote": (d.price * d.qty, pe + qe)}
        unit = formats.file_time_unit(info.market, d.day)
        cols["time"] = (d.time_us // 1000 if unit == "ms" else d.time_us, 0)
        if len(d.ids):
            for name in ("price", "qty", "quote"):
                units = cols[name][0]
                if int(units.min()) <= 0 or int(units.max()) >= _MAX_EXACT:
                    raise ArchiveError(
                        f"synthetic {info.market} {info.pair} {d.day}: {name} out of the exact range "
                        f"({int(units.min())} .. {int(units.max())} units of 1e-{cols[name][1]})"
                    )
        return cols

    def _csv(self, d: _Day) -> bytes:
        info, cols = d.info, self._columns(d)
        df = pl.DataFrame({"id": d.ids, **{k: v for k, (v, _) in cols.items()}, "bm": d.buyer_maker})
        exp = {k: e for k, (_, e) in cols.items()}
        true, false = formats.BOOL_TEXT[info.market]
        bm = pl.when(pl.col("bm")).then(pl.lit(true)).otherwise(pl.lit(false)).alias("is_buyer_maker")
        buf = io.BytesIO()
        if info.market == "spot":
            out = df.select(
                "id",
                _fixed8("price", exp["price"]),
                _fixed8("qty", exp["qty"]),
                _fixed8("quote", exp["quote"]),
                "time",
                bm,
                pl.lit("True").alias("best"),
            )
        elif info.market == "um":
            out = df.select(
                "id", _shortest("price", exp["price"]), _shortest("qty", exp["qty"]), _shortest("quote", exp["quote"]).alias("quote_qty"), "time", bm
            )
        else:
            out = df.select("id", _shortest("price", exp["price"]), "qty", _fixed8("quote").alias("base_qty"), "time", bm)
        header = formats.TRADES_HEADER[info.market]
        if header is not None:
            buf.write(header.encode() + b"\n")
        out.write_csv(buf, include_header=False)
        return buf.getvalue()

    def csv_bytes(self, market: str, pair: str, day: date) -> bytes:
        """The CSV inside the day's zip."""
        return self._csv(self._generate(market, pair, day))

    def zip_bytes(self, market: str, pair: str, day: date) -> bytes:
        """The day's zip, byte-identical for the same configuration."""
        return self._zip_of(self._generate(market, pair, day))

    def _zip_of(self, d: _Day) -> bytes:
        return _zip(trades_file_name(d.info.pair, d.day, "csv"), self._csv(d), d.day)

    def checksum_text(self, market: str, pair: str, day: date) -> str:
        """The day's ``.CHECKSUM`` text (``<sha256hex>  <file>.zip`` and a newline)."""
        return checksum_line(self.zip_bytes(market, pair, day), trades_file_name(pair, day))

    def normalised_trades(self, market: str, pair: str, day: date) -> pl.DataFrame:
        """The day's normalised trades (``parse.TRADES_SCHEMA``) without formatting or parsing.

        Equal, value for value, to parsing the day's zip with :func:`parse.parse_trades_csv`.
        """
        return self._normalised(self._generate(market, pair, day))

    def _normalised(self, d: _Day) -> pl.DataFrame:
        # each value is one correctly rounded division of an exact integer below 2**52 by a
        # power of ten: the double a CSV parser reads for the printed decimal
        info, cols = d.info, self._columns(d)
        (price, pe), (qty, qe), (quote, ke) = cols["price"], cols["qty"], cols["quote"]
        if info.market == "cm":
            qty_f = quote / 1e8
            quote_f = d.qty.astype(np.float64) * contract_size(info.symbol)
        else:
            qty_f = qty / 10.0**qe
            quote_f = quote / 10.0**ke
        factor = 1000 if formats.file_time_unit(info.market, d.day) == "ms" else 1
        n = len(d.ids)
        return pl.DataFrame(
            {
                "symbol": pl.repeat(info.symbol, n, dtype=pl.String, eager=True),
                "peg_symbol": pl.repeat(info.peg, n, dtype=pl.String, eager=True),
                "trade_id": d.ids,
                "price": price / 10.0**pe,
                "qty": qty_f,
                "quote_qty": quote_f,
                "time": pl.Series(cols["time"][0] * factor, dtype=pl.Int64).cast(pl.Datetime("us")),
                "is_buyer_maker": d.buyer_maker,
            },
            schema=TRADES_SCHEMA,
        )

    # ------------------------------------------------------------------ klines

    def previous_close(self, market: str, pair: str, day: date, end: date | None = None) -> float | None:
        """The pair's last price before ``day`` (the open of its first 1m kline), ``None`` for a
        new listing's first day (its klines start at its first trade).

        The last trade price of the previous day; on the archive's first day, for a pair that
        existed before it, the price path's value at 00:00 rounded to a tick.
        """
        info = self._require(market, pair, day, end)
        if day > info.listed:
            prev = day - timedelta(days=1)
            ticks = self._last_ticks.get((market, pair, prev))
            if ticks is None:
                self._generate(market, pair, prev, end)
                ticks = self._last_ticks[(market, pair, prev)]
        elif info.new_listing:
            return None
        else:
            day_ord = self._ordinal(day)
            log_mid = self._path(self._base_by_name[info.symbol], day_ord)[0]
            if market != "spot" or info.peg != self.pegs[0]:
                log_mid += _rng(self.seed, "basis", market, info.peg, info.symbol, day_ord).normal(0, 3e-4)
            ticks = max(1, int(np.rint(np.exp(log_mid) * 10.0**info.price_exp)))
        return ticks / 10.0**info.price_exp

    def trading_end(self, market: str, pair: str, day: date) -> datetime | None:
        """When the pair stops trading on ``day`` (its delisting day), else ``None`` (it trades to midnight)."""
        info = self.pair_info(market, pair)
        if info.delisted == day:
            return datetime(day.year, day.month, day.day) + timedelta(hours=info.close_hour)
        return None

    def _klines_csv(self, d: _Day, end: date | None = None) -> bytes:
        from mnemo_assets.binance.klines import render_klines_csv

        m, p = d.info.market, d.info.pair
        return render_klines_csv(
            self._normalised(d),
            m,
            d.day,
            previous_close=self.previous_close(m, p, d.day, end),
            end=self.trading_end(m, p, d.day),
            contract_size=d.info.contract_size,
        )

    def klines_csv_bytes(self, market: str, pair: str, day: date) -> bytes:
        """The CSV inside the day's 1m klines zip, made from the day's trades with
        :func:`~mnemo_assets.binance.klines.minute_bars`."""
        return self._klines_csv(self._generate(market, pair, day))

    def klines_zip_bytes(self, market: str, pair: str, day: date) -> bytes:
        """The day's 1m klines zip, byte-identical for the same configuration."""
        d = self._generate(market, pair, day)
        return _zip(formats.file_name(pair, day, KLINES, "csv"), self._klines_csv(d), day)

    def normalised_klines(self, market: str, pair: str, day: date) -> pl.DataFrame:
        """The day's normalised 1m klines: ``minute_bars`` of its trades, with the pair's
        previous close and trading end (equal to parsing the klines zip)."""
        from mnemo_assets.binance.klines import minute_bars

        trades = self.normalised_trades(market, pair, day)
        return minute_bars(
            trades,
            previous_close=self.previous_close(market, pair, day),
            end=self.trading_end(market, pair, day),
            time_unit=formats.file_time_unit(market, day),
        )

    # ------------------------------------------------------------------ files

    def _check_marker(self, root: Path) -> None:
        """Refuse to mix files of another configuration (or of another source) under ``root``."""
        if root in self._marked:
            return
        marker = root / _MARKER
        mine = self.fingerprint()
        if marker.exists():
            theirs = json.loads(marker.read_text())
            if theirs != mine:
                diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
                raise ArchiveError(
                    f"{root} holds synthetic files of another configuration (theirs, ours: {diff}); delete {root} or use another directory"
                )
        else:
            data_dir = root / "data"
            if data_dir.exists() and any(data_dir.iterdir()):
                raise ArchiveError(f"{root} already holds archive files not made by SyntheticArchive: use another directory")
            write_atomic(marker, (json.dumps(mine, indent=1, sort_keys=True) + "\n").encode())
        self._marked.add(root)

    def _materialise(
        self,
        root: Path,
        market: str,
        pair: str,
        day: date,
        end: date | None = None,
        datasets: Iterable[str] = (TRADES,),
    ) -> list[ArchiveFile]:
        """Write (unless already there and verified) the day's zips and CHECKSUMs below
        ``root``, generating the day's trades at most once for all ``datasets``."""
        self._check_marker(root)
        files: list[ArchiveFile] = []
        day_data: _Day | None = None
        for dataset in datasets:
            path = root / archive_key(market, pair, day, dataset)
            checksum = path.with_name(path.name + ".CHECKSUM")
            if path.exists() and checksum.exists():
                try:
                    files.append(ArchiveFile(market, pair, day, path, verify_zip(path, checksum), dataset=dataset))
                    continue
                except ArchiveError:
                    pass  # a damaged file: the synthetic source regenerates it
            if day_data is None:
                day_data = self._generate(market, pair, day, end)
            if dataset == TRADES:
                data = self._zip_of(day_data)
            else:
                data = _zip(formats.file_name(pair, day, KLINES, "csv"), self._klines_csv(day_data, end), day)
            write_atomic(path, data)
            write_atomic(checksum, checksum_line(data, path.name).encode())
            files.append(ArchiveFile(market, pair, day, path, verify_zip(path, checksum), dataset=dataset))
        return files

    def fetch(self, market: str, pair: str, day: date, dataset: str = TRADES) -> ArchiveFile:
        """The day's verified zip of ``dataset`` in ``cache_dir`` (generated on the first fetch).

        Raises :class:`ArchiveMissingError` when the pair has no file that day.
        """
        check_dataset(dataset)
        self._require(market, pair, day)
        return self._materialise(self.cache_dir, market, pair, day, datasets=(dataset,))[0]

    def fetch_datasets(
        self,
        market: str,
        pair: str,
        day: date,
        datasets: tuple[str, ...] = (TRADES, KLINES),
    ) -> dict[str, ArchiveFile | ArchiveError]:
        """The day's files of ``datasets``, generating the day's trades at most once for all."""
        datasets = tuple(check_dataset(d) for d in datasets)
        try:
            self._require(market, pair, day)
            return dict(zip(datasets, self._materialise(self.cache_dir, market, pair, day, datasets=datasets), strict=True))
        except ArchiveError as exc:
            return dict.fromkeys(datasets, exc)

    def write_mirror(
        self,
        dest: str | Path,
        markets: Iterable[str] = MARKETS,
        start: date | None = None,
        end: date | None = None,
        workers: int = 1,
        datasets: Iterable[str] = (TRADES,),
    ) -> LocalMirror:
        """Write every file of ``[start, end]`` (default: the archive's range) in the archive layout.

        ``datasets``: ``("trades",)`` (default) or ``("trades", "klines")``. Files already there
        and verified are kept. Returns a :class:`LocalMirror` over ``dest``.
        """
        dest = Path(dest).expanduser()
        start = max(start or self.start, self.start)
        end = end or self.end
        datasets = tuple(check_dataset(d) for d in datasets)
        # one job per pair, its days in order: a day's klines reuse the previous day's last price
        jobs = [(m, info.pair, self._days(info, start, end)) for m in markets for info in self.universe(m)]

        def run(job: tuple[str, str, list[date]]) -> None:
            market, pair, days = job
            for day in days:
                self._materialise(dest, market, pair, day, end=end, datasets=datasets)

        self._check_marker(dest)
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(run, jobs))
        else:
            for job in jobs:
                run(job)
        return LocalMirror(dest)
