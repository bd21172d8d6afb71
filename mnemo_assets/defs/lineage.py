"""Column lineage (``dagster/column_lineage``): which upstream columns each column comes from."""

from dagster import AssetKey, TableColumnDep, TableColumnLineage

from mnemo_assets.metadata import MetadataSpec

_GRID_FROM_TRADES = {
    "symbol": ["symbol"],
    "date": ["time"],
    "time": ["time"],
    "peg_symbol": ["peg_symbol"],
    "open": ["price", "time", "trade_id"],
    "high": ["price"],
    "low": ["price"],
    "close": ["price", "time", "trade_id"],
    "volume_base": ["qty"],
    "volume_quote": ["quote_qty"],
    "trade_count": ["trade_id"],
    "last_trade_time": ["time"],
    "taker_buy_volume_quote": ["quote_qty", "is_buyer_maker"],
    "taker_sell_volume_quote": ["quote_qty", "is_buyer_maker"],
    "vwap_taker_buy": ["quote_qty", "qty", "is_buyer_maker"],
    "vwap_taker_sell": ["quote_qty", "qty", "is_buyer_maker"],
    "vwap_total_by_base": ["quote_qty", "qty"],
    "taker_buy_volume_base": ["qty", "is_buyer_maker"],
    "taker_sell_volume_base": ["qty", "is_buyer_maker"],
}


def _lineage(deps: dict[str, list[tuple[AssetKey, str]]]) -> TableColumnLineage:
    return TableColumnLineage(deps_by_column={col: [TableColumnDep(asset_key=k, column_name=c) for k, c in src] for col, src in deps.items()})


def grid_lineage(trades: AssetKey) -> TableColumnLineage:
    return _lineage({col: [(trades, c) for c in src] for col, src in _GRID_FROM_TRADES.items()})


def returns_lineage(grid: AssetKey) -> TableColumnLineage:
    return _lineage(
        {
            "symbol": [(grid, "symbol")],
            "date": [(grid, "date")],
            "returns_grid_time": [(grid, "date")],
            "max_tick_to_query_lag": [(grid, "last_trade_time")],
            "return": [(grid, "vwap_total_by_base"), (grid, "last_trade_time")],
        }
    )


def metadata_lineage(spec: MetadataSpec, grid: AssetKey, returns: AssetKey) -> TableColumnLineage:
    """Metadata columns back to the grid (index metrics) and the returns (returns metrics)."""
    deps: dict[str, list[tuple[AssetKey, str]]] = {
        "symbol": [(grid, "symbol")],
        "last_trade_time": [(grid, "last_trade_time")],
    }
    for source, windows in ((grid, spec.index), (returns, spec.returns)):
        for exprs in windows.values():
            for expr in exprs:
                deps[expr.meta.output_name()] = [(source, c) for c in dict.fromkeys(expr.meta.root_names())]
    return _lineage(deps)


def with_quantiles(lineage: TableColumnLineage, columns: list[str]) -> TableColumnLineage:
    """Add ``{c}_q`` columns with the lineage of ``c``."""
    deps = dict(lineage.deps_by_column)
    for c in columns:
        if c in deps:
            deps[f"{c}_q"] = deps[c]
    return TableColumnLineage(deps_by_column=deps)
