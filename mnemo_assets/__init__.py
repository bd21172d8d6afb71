"""mnemo_assets: a Dagster asset-orchestrated data platform for crypto market research.

Public names: :class:`DatasetType`; readers in :mod:`mnemo_assets.binance`; engines in
:mod:`mnemo_assets.engines`; pure computations in :mod:`mnemo_assets.grids`. Submodules load on
first use (``import mnemo_assets as ms; ms.binance.BinanceLastTradesGrid(...)`` works).
"""

import importlib

from mnemo_assets.markets import DatasetType

__all__ = ["DatasetType", "__version__", "binance", "engines", "grids", "metadata", "returns"]
__version__ = "0.2.0"

_SUBMODULES = {"binance", "engines", "grids", "returns", "metadata", "config", "intervals"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"mnemo_assets.{name}")
    raise AttributeError(f"module 'mnemo_assets' has no attribute {name!r}")
