"""The store layout, written down once. The IO manager and the research readers both use it.

::

    {root}/binance/trades/{market}/date=YYYY-MM-DD/part-0.parquet
    {root}/binance/quality/{market}/date=YYYY-MM-DD/part-0.parquet
    {root}/binance/grids/{market}/last_trade/{interval}/peg_symbol={PEG}/date=YYYY-MM-DD/part-0.parquet
    {root}/binance/returns/{market}/{interval}/peg_symbol={PEG}/date=YYYY-MM-DD/part-0.parquet
    {root}/binance/metadata/{market}/{interval}/peg_symbol={PEG}/date=YYYY-MM-DD/part-0.parquet
    {root}/binance/metadata_partials/{market}/{interval}/{index|returns}/peg_symbol={PEG}/date=.../part-0.parquet
"""

from __future__ import annotations

import functools
import os
from datetime import date

from mnemo_assets.intervals import interval_name
from mnemo_assets.markets import check_market

#: the one file of a partition; a fixed name makes the replace of a partition atomic
PART_FILE = "part-0.parquet"
#: staging folder for atomic writes, below the data root and outside every dataset
STAGING_DIR = ".staging"


def trades_dataset(market: str) -> str:
    """``binance/trades/{market}``"""
    return f"binance/trades/{check_market(market)}"


def quality_dataset(market: str) -> str:
    """``binance/quality/{market}``: the data-quality ledger (one row per pair and day)."""
    return f"binance/quality/{check_market(market)}"


def grid_dataset(market: str, interval: str, peg: str) -> str:
    """``binance/grids/{market}/last_trade/{interval}/peg_symbol={PEG}``

    >>> grid_dataset("spot", "300s", "USDT")
    'binance/grids/spot/last_trade/5m/peg_symbol=USDT'
    """
    return f"binance/grids/{check_market(market)}/last_trade/{interval_name(interval)}/peg_symbol={peg}"


def returns_dataset(market: str, interval: str, peg: str) -> str:
    """``binance/returns/{market}/{interval}/peg_symbol={PEG}``"""
    return f"binance/returns/{check_market(market)}/{interval_name(interval)}/peg_symbol={peg}"


def metadata_dataset(market: str, interval: str, peg: str) -> str:
    """``binance/metadata/{market}/{interval}/peg_symbol={PEG}``"""
    return f"binance/metadata/{check_market(market)}/{interval_name(interval)}/peg_symbol={peg}"


def metadata_partials_dataset(market: str, interval: str, source: str, peg: str) -> str:
    """``binance/metadata_partials/{market}/{interval}/{index|returns}/peg_symbol={PEG}`` (per-hour moments)."""
    if source not in ("index", "returns"):
        raise ValueError(f"partials source must be index or returns, got {source!r}")
    return f"binance/metadata_partials/{check_market(market)}/{interval_name(interval)}/{source}/peg_symbol={peg}"


def partition_dir(dataset: str, day: date | str) -> str:
    """``{dataset}/date=YYYY-MM-DD``"""
    key = day if isinstance(day, str) else day.isoformat()
    date.fromisoformat(key)  # validate
    return f"{dataset}/date={key}"


def partition_file(dataset: str, day: date | str) -> str:
    """``{dataset}/date=YYYY-MM-DD/part-0.parquet``"""
    return f"{partition_dir(dataset, day)}/{PART_FILE}"


def local_cache_dir() -> str:
    """A local folder for what cannot live below an object-store root (staged partitions
    before their PUT, snapshots of objects read, downloaded archive files):
    ``$MNEMO_CACHE_DIR``, else the configuration's ``cache_dir``, else
    ``$XDG_CACHE_HOME/mnemo_assets``, else ``~/.cache/mnemo_assets``."""
    from mnemo_assets.config import default_cache_dir

    explicit = os.environ.get("MNEMO_CACHE_DIR") or _configured_cache_dir()
    return os.path.abspath(os.path.expanduser(explicit)) if explicit else str(default_cache_dir())


def _configured_cache_dir() -> str | None:
    """``cache_dir`` of the configuration in force (``$MNEMO_CONFIG`` or ``./mnemo.yaml``), if any."""
    from mnemo_assets.config import config_path

    try:
        path = config_path()
        if path is None:
            return None
        stat = path.stat()
        return _cache_dir_of(str(path.resolve()), stat.st_mtime_ns)
    except Exception:
        return None


@functools.lru_cache(maxsize=8)
def _cache_dir_of(path: str, _mtime: int) -> str | None:
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    value = data.get("cache_dir") if isinstance(data, dict) else None
    return str(value) if value else None
