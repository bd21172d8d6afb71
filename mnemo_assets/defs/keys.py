"""Asset keys and groups, named once."""

from dagster import AssetKey


#: who answers for the data (shown in the Dagster UI)
OWNERS = ["team:research"]


def trades_key(market: str) -> AssetKey:
    return AssetKey(["binance", market, "trades"])


def grid_key(market: str, peg: str, interval: str) -> AssetKey:
    return AssetKey(["binance", market, peg.lower(), f"grid_{interval}"])


def returns_key(market: str, peg: str, interval: str) -> AssetKey:
    return AssetKey(["binance", market, peg.lower(), f"returns_{interval}"])


def metadata_key(market: str, peg: str, interval: str) -> AssetKey:
    return AssetKey(["binance", market, peg.lower(), f"metadata_{interval}"])


def group(market: str) -> str:
    return f"binance_{market}"
