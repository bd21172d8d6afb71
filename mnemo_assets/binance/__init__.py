"""Everything that knows Binance's formats: archive sources, the parser, research readers."""

from mnemo_assets.binance.datasets import BinanceLastTradesGrid, BinanceTrades, ParquetDataset
from mnemo_assets.binance.parse import read_trades_file, split_pair
from mnemo_assets.markets import DatasetType

__all__ = ["BinanceLastTradesGrid", "BinanceTrades", "DatasetType", "ParquetDataset", "read_trades_file", "split_pair"]
