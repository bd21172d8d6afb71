"""Reading a stored partition a batch of whole symbols at a time (bounded memory)."""

from datetime import date

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mnemo_assets.storage.layout import partition_file, trades_dataset
from mnemo_assets.storage.parquet import Batches, CorruptPartitionError, symbol_batch_plan, symbol_batches, write_partition

DAY = date(2025, 1, 15)
DS = trades_dataset("spot")


def rows(symbol: str, n: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"symbol": [symbol] * n, "x": list(range(start, start + n))})


def store(root, frames: list[pl.DataFrame]) -> pl.DataFrame:
    """One partition with one row group per frame; the frames concatenated."""
    write_partition(Batches(frames[0].schema, iter(frames)), root, DS, DAY)
    return pl.concat(frames)


def symbols_of(batches: list[pl.DataFrame]) -> list[list[str]]:
    return [sorted(set(b["symbol"])) for b in batches]


def test_whole_symbols_per_batch_in_symbol_order(data_root):
    # BTC spans two row groups; every symbol's rows contiguous (a symbol-clustered file)
    data = store(data_root, [rows("ADA", 3), rows("BTC", 5), rows("BTC", 4, 5), rows("ETH", 2), rows("XRP", 1)])
    one = list(symbol_batches(data_root, DS, DAY, min_rows=1))
    assert symbols_of(one) == [["ADA"], ["BTC"], ["ETH"], ["XRP"]]
    assert pl.concat(one).equals(data)  # every row once, in file order
    packed = list(symbol_batches(data_root, DS, DAY, min_rows=6))
    assert [b.height for b in packed] == [12, 3]  # ADA+BTC reach 6 rows; ETH+XRP is the rest
    assert symbols_of(packed) == [["ADA", "BTC"], ["ETH", "XRP"]]
    assert [b.height for b in symbol_batches(data_root, DS, DAY, min_rows=10**9)] == [15]
    assert list(symbol_batches(data_root, DS, DAY, columns=["x"], min_rows=1))[0].columns == ["x"]


def test_overlapping_row_groups_are_read_together(data_root):
    # not clustered: ADA..BTC and AAA..ETH overlap, so BTC never appears in two batches
    data = store(data_root, [pl.concat([rows("ADA", 2), rows("BTC", 2)]), pl.concat([rows("AAA", 1), rows("BTC", 1), rows("ETH", 1)]),
                             rows("XRP", 2)])
    batches = list(symbol_batches(data_root, DS, DAY, min_rows=1))
    assert symbols_of(batches) == [["AAA", "ADA", "BTC", "ETH"], ["XRP"]]
    assert pl.concat(batches).sort("symbol", "x").equals(data.sort("symbol", "x"))


def test_without_statistics_or_symbols_the_file_is_one_batch(tmp_path):
    path = tmp_path / "f.parquet"
    table = pa.table({"symbol": ["A", "A", "B"], "x": [1, 2, 3]})
    pq.write_table(table, path, row_group_size=1, write_statistics=False)
    assert symbol_batch_plan(pq.ParquetFile(path).metadata, 1) == [[0, 1, 2]]
    pq.write_table(pa.table({"x": [1, 2, 3]}), path, row_group_size=1)
    assert symbol_batch_plan(pq.ParquetFile(path).metadata, 1) == [[0, 1, 2]]
    pq.write_table(table, path, row_group_size=1)
    assert symbol_batch_plan(pq.ParquetFile(path).metadata, 1) == [[0, 1], [2]]


def test_the_file_is_verified_first(data_root):
    store(data_root, [rows("ADA", 3), rows("BTC", 5)])
    path = data_root / partition_file(DS, DAY)
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptPartitionError):
        next(symbol_batches(data_root, DS, DAY))
