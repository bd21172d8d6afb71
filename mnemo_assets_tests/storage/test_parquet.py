"""Partition files: exact paths, atomic replace, footers, one Enum across days."""

import os
from datetime import date

import polars as pl
import pytest

from mnemo_assets.storage.layout import grid_dataset, partition_file, trades_dataset
from mnemo_assets.storage.parquet import (
    Batches,
    existing_days,
    file_symbols,
    scan_days,
    write_partition,
)

D1, D2, D3 = date(2024, 12, 31), date(2025, 1, 1), date(2025, 1, 2)
DS = grid_dataset("spot", "5s", "USDT")


def frame(symbols, day=D1):
    return pl.DataFrame({"symbol": symbols, "date": [day] * len(symbols), "x": list(range(len(symbols)))})


def test_paths_are_specs(data_root):
    assert DS == "binance/grids/spot/last_trade/5s/peg_symbol=USDT"
    assert trades_dataset("um") == "binance/trades/um"
    res = write_partition(frame(["BTC"]), data_root, DS, D1)
    assert res.path == str(data_root / DS / "date=2024-12-31" / "part-0.parquet")
    assert os.path.exists(res.path)
    # the seed notebook's glob keeps working
    assert pl.scan_parquet(f"{data_root}/{DS}/date=*/*.parquet").collect().height == 1


def test_days_with_different_symbols_read_as_one_enum(data_root):
    write_partition(frame(["ETH", "BTC"], D1), data_root, DS, D1)
    write_partition(frame(["ADA", "BTC"], D2), data_root, DS, D2)
    assert file_symbols(data_root / partition_file(DS, D1)) == ("BTC", "ETH")
    lf = scan_days(data_root, DS, [D1, D2])
    assert lf.collect_schema()["symbol"] == pl.Enum(["ADA", "BTC", "ETH"])
    one = scan_days(data_root, DS, [D1]).collect()
    # concat of days read separately with the dataset enum never fails
    enum = pl.Enum(["ADA", "BTC", "ETH"])
    both = pl.concat([scan_days(data_root, DS, [D1], enum=enum).collect(), scan_days(data_root, DS, [D2], enum=enum).collect()])
    assert both.height == 4 and one.height == 2
    # plain scans of every file work too (strings)
    assert pl.scan_parquet(f"{data_root}/{DS}/date=*/*.parquet").collect().schema["symbol"] == pl.String


def test_failed_write_leaves_previous_partition_intact(data_root):
    write_partition(frame(["BTC", "ETH"]), data_root, DS, D1)
    before = (data_root / partition_file(DS, D1)).read_bytes()

    def exploding():
        yield frame(["XRP"])
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_partition(Batches(frame(["x"]).schema, exploding()), data_root, DS, D1)
    assert (data_root / partition_file(DS, D1)).read_bytes() == before
    assert list((data_root / ".staging").iterdir()) == []  # no half-written file left anywhere
    assert [p.name for p in (data_root / DS / "date=2024-12-31").iterdir()] == ["part-0.parquet"]


def test_schema_mismatch_in_batches_is_an_error_and_writes_nothing(data_root):
    bad = Batches(frame(["x"]).schema, iter([frame(["BTC"]), frame(["ETH"]).with_columns(pl.col("x").cast(pl.Float64))]))
    with pytest.raises(TypeError, match="differs"):
        write_partition(bad, data_root, DS, D1)
    assert existing_days(data_root, DS) == []


def test_empty_day_is_an_empty_file(data_root):
    res = write_partition(Batches(frame(["x"]).schema, iter([])), data_root, DS, D3)
    assert res.rows == 0 and res.symbols == ()
    assert scan_days(data_root, DS, [D3]).collect().height == 0
    assert existing_days(data_root, DS) == [D3]


def test_missing_days_are_named(data_root):
    write_partition(frame(["BTC"]), data_root, DS, D1)
    with pytest.raises(FileNotFoundError, match="2025-01-01"):
        scan_days(data_root, DS, [D1, D2])


def test_lazyframe_is_written_in_batches(data_root):
    lf = pl.LazyFrame({"symbol": ["B", "A"] * 50_000, "date": [D1] * 100_000, "x": range(100_000)})
    res = write_partition(lf, data_root, DS, D1)
    assert res.rows == 100_000 and res.symbols == ("A", "B")
    assert scan_days(data_root, DS, [D1]).select(pl.col("x").sum()).collect().item() == sum(range(100_000))
