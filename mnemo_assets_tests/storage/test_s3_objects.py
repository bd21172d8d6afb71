"""The parquet store on a real S3 endpoint (``moto_server`` on loopback, see ``s3_server.py``):
atomic publish, readers that never see a partial object, damaged objects reported, and listings
that are never stale, with other processes writing (local roots too)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, Definitions, materialize
from upath import UPath

from mnemo_assets.storage.io_manager import HiveParquetIOManager
from mnemo_assets.storage.layout import partition_file
from mnemo_assets.storage.parquet import (
    Batches,
    CorruptPartitionError,
    MissingPartitionError,
    existing_days,
    list_partitions,
    local_staging_dir,
    scan_days,
    verify_partition,
    write_partition,
)
from mnemo_assets_tests.s3_server import CuttingProxy
from mnemo_assets_tests.storage.test_io_manager import DOWN, UP, down, seen, up

REPO = Path(__file__).resolve().parents[2]
DS = "binance/grids/spot/last_trade/5s/peg_symbol=USDT"
D1, D2, D3, D4, D5 = (date(2024, 12, d) for d in range(1, 6))


def frame(n: int, seed: int, symbols=("BTC", "ETH", "SOL")) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"symbol": rng.choice(list(symbols), n), "x": rng.random(n), "y": rng.integers(0, 10**9, n)})


def strings(lf: pl.LazyFrame) -> pl.DataFrame:
    return lf.collect().with_columns(pl.col("symbol").cast(pl.String))


def bucket_key(root: str, dataset: str, day: date) -> tuple[str, str]:
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    return bucket, f"{prefix}/{partition_file(dataset, day)}"


def python(code: str, timeout: float = 300) -> subprocess.Popen:
    """Another process (the environment of this test: AWS variables included)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=dict(os.environ))


def staged_files() -> list[str]:
    folder = local_staging_dir("s3://any/root")
    return os.listdir(folder) if os.path.isdir(folder) else []


# ----------------------------------------------------------------------------- round trip
def test_partitions_round_trip_at_the_documented_keys(s3_root, moto_server):
    a = frame(1000, 1)
    mark = moto_server.mark()
    result = write_partition(a, s3_root, DS, D1)
    assert moto_server.counts(mark) == {"PUT": 1}  # one PutObject, nothing else
    assert result.path == f"{s3_root}/{DS}/date=2024-12-01/part-0.parquet"
    bucket, key = bucket_key(s3_root, DS, D1)
    assert moto_server.client().head_object(Bucket=bucket, Key=key)["ContentLength"] == result.size
    assert existing_days(s3_root, DS) == [D1]
    assert strings(scan_days(s3_root, DS, [D1])).equals(a)
    assert staged_files() == []  # staged locally, PUT, removed
    # the seed notebooks' glob, with polars' own reader and nothing but the AWS variables
    assert pl.scan_parquet(f"{s3_root}/binance/grids/spot/last_trade/5s/peg_symbol=USDT/date=*/*.parquet").collect().height == 1000


# ----------------------------------------------------------------------------- atomic publish
def test_a_write_failing_mid_stream_publishes_nothing(s3_root, moto_server):
    a = frame(1000, 1)
    write_partition(a, s3_root, DS, D1)

    def batches():
        yield frame(500, 2).select("symbol", "x", "y")
        raise RuntimeError("the source broke half-way")

    mark = moto_server.mark()
    with pytest.raises(RuntimeError, match="half-way"):
        write_partition(Batches(a.schema, batches()), s3_root, DS, D1)
    assert moto_server.counts(mark).get("PUT", 0) == 0
    assert strings(scan_days(s3_root, DS, [D1])).equals(a)
    assert staged_files() == []


def test_an_upload_cut_half_way_leaves_the_previous_object(s3_root, moto_server):
    """The connection drops in the middle of the PUT body (every attempt): the publish fails,
    S3 keeps the previous object whole, the staged file is removed."""
    a, b = frame(50_000, 1), frame(40_000, 2)
    write_partition(a, s3_root, DS, D1)
    proxy = CuttingProxy(moto_server.port, cut="part-0.parquet")
    try:
        via_proxy = UPath(s3_root, client_kwargs={"endpoint_url": proxy.endpoint}, config_kwargs={"retries": {"max_attempts": 2}})
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - whichever error the client raises for a dropped upload
            write_partition(b, via_proxy, DS, D1)
        assert time.monotonic() - started < 120
        assert proxy.cuts >= 1
    finally:
        proxy.close()
    assert staged_files() == []
    verify_partition(s3_root, DS, D1, full=True)
    assert strings(scan_days(s3_root, DS, [D1])).equals(a)


def test_a_reader_polling_during_rewrites_sees_whole_versions(s3_root, tmp_path):
    """Another process re-publishes one day over and over (two versions, different sizes);
    every read here gives one version or the other, whole, and never fails. (Polars reading
    the object directly, footer and column chunks in separate GETs, panics here.)"""
    a, b = frame(100_000, 1), frame(80_000, 2, symbols=("ADA", "BTC"))
    a.write_parquet(tmp_path / "a.parquet")
    b.write_parquet(tmp_path / "b.parquet")
    write_partition(a, s3_root, DS, D1)
    writer = python(f"""
        import polars as pl
        from datetime import date
        from mnemo_assets.storage.parquet import write_partition
        a, b = pl.read_parquet({str(tmp_path / "a.parquet")!r}), pl.read_parquet({str(tmp_path / "b.parquet")!r})
        for i in range(30):
            write_partition(b if i % 2 == 0 else a, {s3_root!r}, {DS!r}, date(2024, 12, 1))
    """)
    reads, versions, errors = 0, set(), []
    try:
        while writer.poll() is None:
            try:
                got = strings(scan_days(s3_root, DS, [D1]))
                info = verify_partition(s3_root, DS, D1, full=True)
            except BaseException as exc:
                errors.append(repr(exc)[:300])
                continue
            reads += 1
            versions.add("a" if got.equals(a) else "b" if got.equals(b) else f"other({got.height})")
            assert info.rows in (a.height, b.height)
    finally:
        writer.wait(timeout=300)
    assert writer.returncode == 0
    assert errors == []
    assert reads >= 10 and versions <= {"a", "b"}, (reads, versions)
    assert len(versions) == 2, versions  # the reads did overlap the rewrites


# ----------------------------------------------------------------------------- damaged objects
def test_damaged_objects_are_reported_never_read(s3_root, moto_server):
    good = frame(20_000, 1)
    write_partition(good, s3_root, DS, D1)
    bucket, key = bucket_key(s3_root, DS, D1)
    client = moto_server.client()
    data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    for day, body in ((D2, b""), (D3, data[: len(data) // 2]), (D4, b"not a parquet file at all"), (D5, bytes(flipped))):
        client.put_object(Bucket=bucket, Key=bucket_key(s3_root, DS, day)[1], Body=body)
    assert existing_days(s3_root, DS) == [D1, D2, D3, D4, D5]
    assert verify_partition(s3_root, DS, D1).rows == 20_000
    with pytest.raises(CorruptPartitionError, match="empty"):
        verify_partition(s3_root, DS, D2)
    for day in (D3, D4):  # size and footer are always checked
        with pytest.raises(CorruptPartitionError, match="not a readable parquet file"):
            verify_partition(s3_root, DS, day)
    # a flipped byte inside the data pages: the footer is fine (the default check on object
    # stores), the full check and every read (verified snapshots) catch it
    assert verify_partition(s3_root, DS, D5).rows == 20_000
    with pytest.raises(CorruptPartitionError, match="2024-12-05"):
        verify_partition(s3_root, DS, D5, full=True)
    with pytest.raises(CorruptPartitionError, match="2024-12-05"):
        scan_days(s3_root, DS, [D1, D5]).collect()
    with pytest.raises(MissingPartitionError, match="2024-12-06"):
        scan_days(s3_root, DS, [date(2024, 12, 6)])


# ----------------------------------------------------------------------------- never stale
@pytest.fixture(params=["local", "s3"])
def any_root(request, tmp_path):
    if request.param == "local":
        root = tmp_path / "store"
        root.mkdir()
        return str(root)
    return request.getfixturevalue("s3_root")


def test_listings_reflect_what_other_processes_wrote(any_root):
    """Objects made before other processes write (a reader, the planner's listing, the IO
    manager) see those writes at once: new days, a re-materialized day, a deleted day."""
    from mnemo_assets.binance.datasets import ParquetDataset

    a = frame(300, 1, symbols=("BTC", "ETH"))
    write_partition(a, any_root, DS, D1)
    dataset = ParquetDataset(DS, any_root)
    assert dataset.partitions == [D1]
    assert strings(dataset[D1]).equals(a)
    assert dataset.symbol_enum == pl.Enum(["BTC", "ETH"])
    stamps = list_partitions(any_root, DS)

    b = frame(200, 2, symbols=("ADA", "BTC", "XRP"))  # what the other process writes
    writer = python(f"""
        import numpy as np, polars as pl
        from datetime import date
        from mnemo_assets.storage.parquet import write_partition
        rng = np.random.default_rng(2)
        b = pl.DataFrame({{"symbol": rng.choice(["ADA", "BTC", "XRP"], 200), "x": rng.random(200), "y": rng.integers(0, 10**9, 200)}})
        for day in (date(2024, 12, 1), date(2024, 12, 2), date(2024, 12, 3)):
            write_partition(b, {any_root!r}, {DS!r}, day)
    """)
    assert writer.wait(timeout=120) == 0
    assert dataset.partitions == [D1, D2, D3]
    assert list_partitions(any_root, DS)[D1] != stamps[D1]  # a new version of day 1
    assert strings(dataset[D1]).equals(b)  # re-read, not a cached footer or snapshot
    assert dataset.symbol_enum == pl.Enum(["ADA", "BTC", "XRP"])
    assert strings(dataset.lazyframe()).height == 600
    glob = f"{any_root}/{DS}/date=*/*.parquet"
    assert pl.scan_parquet(glob).collect().height == 600  # polars' own listing

    deleter = python(f"""
        from upath import UPath
        from mnemo_assets.storage.layout import partition_file
        p = UPath({any_root!r}) / partition_file({DS!r}, "2024-12-03")
        p.fs.rm(p.path)
    """)
    assert deleter.wait(timeout=120) == 0
    assert dataset.partitions == [D1, D2]
    with pytest.raises(MissingPartitionError, match="2024-12-03"):
        dataset[D3]


def test_the_planner_and_the_io_manager_see_days_other_processes_wrote(any_root):
    from mnemo_assets.defs.planning import plan

    io_manager = HiveParquetIOManager(base_dir=any_root)
    instance = DagsterInstance.ephemeral()
    key = "2025-01-01"
    seen.clear()
    # `down` of 2025-01-01 reads `up` of 2024-12-30..2025-01-01: not stored yet
    failed = materialize([up, down], selection=[down], partition_key=key, resources={"io": io_manager}, instance=instance, raise_on_error=False)
    assert not failed.success

    graph = Definitions(assets=[up, down], resources={"io": io_manager}).resolve_asset_graph()
    listing = lambda k: set(existing_days(any_root, UP if k == AssetKey("up") else DOWN))
    first = date(2024, 12, 30)
    assert plan(graph, {AssetKey("down"): [date(2025, 1, 1)]}, listing, first).waiting

    writer = python(f"""
        from mnemo_assets.storage.parquet import write_partition
        from mnemo_assets_tests.storage.test_io_manager import frame_for
        for day in ("2024-12-30", "2024-12-31", "2025-01-01"):
            write_partition(frame_for(day), {any_root!r}, {UP!r}, day)
    """)
    assert writer.wait(timeout=120) == 0
    planned = plan(graph, {AssetKey("down"): [date(2025, 1, 1)]}, listing, first)
    assert planned.run[AssetKey("down")] == [date(2025, 1, 1)] and not planned.waiting
    done = materialize([up, down], selection=[down], partition_key=key, resources={"io": io_manager}, instance=instance)
    assert done.success and len(seen["days"]) == 3
    assert existing_days(any_root, DOWN) == [date(2025, 1, 1)]
