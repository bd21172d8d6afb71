"""Asset keys and groups, named once.

``binance/{market}/{peg}/{market}_{peg}_{name}``: the catalog nests by market and peg, and the
last component (the only one the lineage graph shows on a node) names market and peg too. Names
stay within 18 characters for the usual pegs, so the zoomed-out graph shows them whole:
``spot_usdt_grid_5s``, ``spot_usdt_ret_10m`` (returns), ``spot_usdt_meta_1h`` (metadata),
``spot_usdt_ipart_1h`` / ``spot_usdt_rpart_1h`` (the metadata's per-hour partials of the grid
and of the returns).
"""

from dagster import AssetKey

#: who answers for the data (shown in the Dagster UI)
OWNERS = ["team:research"]


def trades_key(market: str) -> AssetKey:
    return AssetKey(["binance", market, f"{market}_trades"])


def quality_key(market: str) -> AssetKey:
    """The data-quality ledger of a market's archive."""
    return AssetKey(["binance", market, f"{market}_quality"])


def _per_peg(market: str, peg: str, name: str) -> AssetKey:
    return AssetKey(["binance", market, peg.lower(), f"{market}_{peg.lower()}_{name}"])


def grid_key(market: str, peg: str, interval: str) -> AssetKey:
    return _per_peg(market, peg, f"grid_{interval}")


def returns_key(market: str, peg: str, interval: str) -> AssetKey:
    return _per_peg(market, peg, f"ret_{interval}")


def metadata_key(market: str, peg: str, interval: str) -> AssetKey:
    return _per_peg(market, peg, f"meta_{interval}")


def partials_key(market: str, peg: str, interval: str, source: str) -> AssetKey:
    """Per-hour moments of the grid (``index``) or of the returns (``returns``) for the metadata."""
    return _per_peg(market, peg, f"{source[0]}part_{interval}")


def group(market: str) -> str:
    return f"binance_{market}"
