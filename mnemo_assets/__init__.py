"""mnemo_assets: a Dagster asset-orchestrated data platform for crypto market research.

Public names: :class:`DatasetType`; readers in :mod:`mnemo_assets.binance`; engines in
:mod:`mnemo_assets.engines`; pure computations in :mod:`mnemo_assets.grids`.
"""

from mnemo_assets.markets import DatasetType

__all__ = ["DatasetType", "__version__"]
__version__ = "0.1.0"
