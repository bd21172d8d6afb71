"""Everything that knows Binance's formats: archive sources, the parser, research readers."""

from mnemo_assets.binance.datasets import BinanceLastTradesGrid, BinanceQuality, BinanceTrades, ParquetDataset
from mnemo_assets.binance.klines import KLINES_SCHEMA, minute_bars, read_klines_file, reconcile
from mnemo_assets.binance.parse import read_trades_file, split_pair
from mnemo_assets.markets import DatasetType

__all__ = [
    "KLINES_SCHEMA",
    "BinanceLastTradesGrid",
    "BinanceQuality",
    "BinanceTrades",
    "DatasetType",
    "ParquetDataset",
    "minute_bars",
    "read_klines_file",
    "read_trades_file",
    "reconcile",
    "split_pair",
]
