"""Markets and dataset types: the one place that names spot, USD-M and COIN-M."""

from __future__ import annotations

from enum import Enum

MARKETS: tuple[str, ...] = ("spot", "um", "cm")

#: archive folder of each market below any archive root (``binance.formats`` has the rest of the layout)
MARKET_ROOT: dict[str, str] = {
    "spot": "data/spot/daily",
    "um": "data/futures/um/daily",
    "cm": "data/futures/cm/daily",
}

#: trades folder of each market below any archive root (klines: ``binance.formats.dataset_prefix``)
ARCHIVE_PREFIX: dict[str, str] = {m: f"{MARKET_ROOT[m]}/trades" for m in MARKETS}


class DatasetType(Enum):
    """The Binance trade datasets, as the seed notebooks name them.

    >>> DatasetType.BinanceSpotTrades.market
    'spot'
    """

    BinanceSpotTrades = "spot"
    BinanceUMFuturesTrades = "um"
    BinanceCMFuturesTrades = "cm"

    @property
    def market(self) -> str:
        """Market name used in paths and configuration (``spot``, ``um``, ``cm``)."""
        return self.value

    @classmethod
    def from_market(cls, market: str | DatasetType) -> DatasetType:
        """The dataset type of a market name (``"spot"``, ``"um"``, ``"cm"``)."""
        if isinstance(market, DatasetType):
            return market
        for member in cls:
            if member.value == market:
                return member
        raise ValueError(f"unknown market {market!r}: expected one of {', '.join(MARKETS)}")


def check_market(market: str) -> str:
    """Return ``market`` if it is a known market name, else raise a clear error."""
    if market not in MARKETS:
        raise ValueError(f"unknown market {market!r}: expected one of {', '.join(MARKETS)}")
    return market
