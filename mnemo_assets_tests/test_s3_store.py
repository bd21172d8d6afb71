"""``MNEMO_DATA_ROOT=s3://bucket/prefix``, for real: the whole asset graph backfilled on a real S3
endpoint (``moto_server`` on loopback) in process (``run_request``) and by the ``mnemo`` CLI,
read back by every reader, plain polars and DuckDB, equal to a local-root run of the same
configuration; nothing written to a folder named after the URL; the requests a plan and a
read cost, counted; the metadata engine; a planted skip fails loudly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance
from polars.testing import assert_frame_equal

from mnemo_assets.binance.datasets import BinanceLastTradesGrid, BinanceTrades, ParquetDataset
from mnemo_assets.config import Settings, load_settings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.defs.execution import Request, Summary, run_request
from mnemo_assets.defs.planning import dataset_of, plan, requested_days, store_listing
from mnemo_assets.engines import MetadataEngine, ReturnsEngine
from mnemo_assets.storage import parquet
from mnemo_assets.storage.layout import grid_dataset, partition_file
from mnemo_assets.storage.parquet import existing_days
from mnemo_assets_tests.conftest import use_s3
from mnemo_assets_tests.defs.conftest import persistent_instance
from mnemo_assets_tests.s3_server import MotoServer
from mnemo_assets_tests.stack import SMALL_CONFIG

REPO = Path(__file__).resolve().parents[1]
MNEMO = Path(sys.executable).parent / "mnemo"
DAYS = [date(2024, 12, 1) + timedelta(days=k) for k in range(5)]
BUCKET = "mnemo-store"
ROOT = f"s3://{BUCKET}/research/mnemo"
GRID_5S = grid_dataset("spot", "5s", "USDT")


@dataclass
class Stores:
    server: MotoServer
    base: Path
    cwd: Path
    cache: Path
    s3: Settings
    local: Settings
    first: Summary  # in process, days 1-3
    cli: subprocess.CompletedProcess  # `mnemo backfill` days 1-5 (adds days 4-5)
    full_local: Summary  # the local root, days 1-5 at once
    backfill_requests: dict
    cli_requests: dict

    @property
    def graph(self):
        return build_definitions(self.s3).resolve_asset_graph()

    def instance(self, name: str) -> DagsterInstance:
        return persistent_instance(self.base / name)


def keys(graph) -> list[AssetKey]:
    return sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())


def strings(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col(c).cast(pl.String) for c, t in frame.schema.items() if isinstance(t, (pl.Enum, pl.Categorical)))


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def stores(tmp_path_factory, moto_server) -> Stores:
    base = tmp_path_factory.mktemp("s3store")
    cwd, cache = base / "cwd", base / "cache"
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        use_s3(mp, moto_server, cache)
        mp.chdir(cwd)  # anything written relative to the working directory lands here
        mp.setenv("DAGSTER_HOME", str(base / "home_cli"))
        moto_server.create_bucket(BUCKET)
        (base / "s3.yaml").write_text(SMALL_CONFIG.format(root=ROOT))
        (base / "local.yaml").write_text(SMALL_CONFIG.format(root=base / "local"))
        s3 = load_settings(base / "s3.yaml", env={"MNEMO_CACHE_DIR": str(cache)})
        local = load_settings(base / "local.yaml", env={})
        graph = build_definitions(s3).resolve_asset_graph()

        mark = moto_server.mark()
        instance = persistent_instance(base / "home_s3")
        first = run_request(s3, Request(keys(graph), DAYS[:3], True, "test: s3 days 1-3"), progress=False, echo=quiet, instance=instance)
        instance.dispose()
        backfill_requests = dict(moto_server.counts(mark, BUCKET))

        mark = moto_server.mark()
        env = {**os.environ, "MNEMO_CONFIG": str(base / "s3.yaml"), "PYTHONUNBUFFERED": "1"}
        cli = subprocess.run(
            [str(MNEMO), "backfill", "--start", DAYS[0].isoformat(), "--end", DAYS[-1].isoformat(), "--quiet"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        cli_requests = dict(moto_server.counts(mark, BUCKET))

        instance = persistent_instance(base / "home_local")
        full_local = run_request(local, Request(keys(graph), DAYS, True, "test: local days 1-5"), progress=False, echo=quiet, instance=instance)
        instance.dispose()
        yield Stores(moto_server, base, cwd, cache, s3, local, first, cli, full_local, backfill_requests, cli_requests)


# ----------------------------------------------------------------------------- writing
def test_backfills_complete_and_the_cli_summary_matches_the_store(stores):
    assert stores.first.ok, "\n".join(stores.first.lines())
    assert stores.full_local.ok, "\n".join(stores.full_local.lines())
    out = stores.cli.stdout + stores.cli.stderr
    assert stores.cli.returncode == 0, out
    assert f"→ {ROOT}" in out
    graph = stores.graph
    rows = {m.group(1): [int(x) for x in m.groups()[1:]] for m in re.finditer(r"mnemo: (binance/\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out)}
    assert len(rows) == len(keys(graph)), out
    for key in keys(graph):
        planned, materialized, _waiting, failed = rows[key.to_user_string()]
        assert materialized == planned and failed == 0, (key, out)
        stored_s3 = existing_days(ROOT, dataset_of(graph, key))
        assert stored_s3 == existing_days(stores.local.data_root, dataset_of(graph, key)), key
        # days 1-3 in process + what the CLI added = every day whose inputs exist
        expected = DAYS if key.path[-1].endswith(("trades", "quality", "grid_5s", "grid_10m", "ipart_1h")) else DAYS[:4]
        assert stored_s3 == expected, key


def test_nothing_lands_in_a_folder_named_after_the_url(stores):
    """Derived paths follow the root: archive caches, staging and snapshots are below the
    documented local cache (MNEMO_CACHE_DIR), nothing is named ``s3:``."""
    for where in (stores.base, REPO):
        named = [p for p in where.rglob("s3:*")] if where == stores.base else [p for p in where.glob("s3:*")]
        assert named == [], named
    assert not any(stores.cwd.iterdir()) or {p.name for p in stores.cwd.iterdir()} <= {".dagster_home"}
    local_root = Path(stores.s3.local_root)
    assert local_root.is_relative_to(stores.cache) and "s3:" not in str(local_root)
    assert Path(stores.s3.synthetic_dir).is_relative_to(local_root) and Path(stores.s3.synthetic_dir).exists()
    staging = Path(stores.s3.staging_dir)
    assert staging.is_relative_to(local_root)
    assert staging.exists() and list(staging.iterdir()) == []  # every staged file was PUT and removed
    snapshots = Path(parquet.snapshot_dir())
    assert snapshots.is_relative_to(stores.cache) and any(snapshots.glob("*.parquet"))


# ----------------------------------------------------------------------------- reading
def test_every_reader_reads_back_what_the_local_root_holds(stores):
    graph = stores.graph
    for key in keys(graph):
        dataset = dataset_of(graph, key)
        s3 = ParquetDataset(dataset, ROOT).lazyframe().collect()
        local = ParquetDataset(dataset, stores.local.data_root).lazyframe().collect()
        assert s3.schema == local.schema, key
        if key.path[-1].endswith("quality"):  # where the archive files were cached differs
            s3, local = s3.drop("source", "klines_source"), local.drop("source", "klines_source")
        # incremental (days 1-3, then 4-5) equals full (days 1-5 at once), SPEC's tolerance
        assert_frame_equal(s3, local, rel_tol=1e-9, abs_tol=1e-12), key
    for interval in ("5s", "10m"):
        s3 = BinanceLastTradesGrid("USDT", interval, root=ROOT)
        local = BinanceLastTradesGrid("USDT", interval, root=stores.local.data_root)
        assert s3.partitions == local.partitions == DAYS
        assert s3[s3.partitions[1:4]].collect().equals(local[local.partitions[1:4]].collect())
        assert s3.universe().equals(local.universe())
    assert BinanceTrades(root=ROOT)[DAYS[2]].collect().equals(BinanceTrades(root=stores.local.data_root)[DAYS[2]].collect())
    # the research engines over the S3 grid
    grid_s3 = BinanceLastTradesGrid("USDT", "5s", root=ROOT)
    symbols = grid_s3.symbol_enum.categories.to_list()[:4]
    times = pl.datetime_range(pl.datetime(2024, 12, 2), pl.datetime(2024, 12, 3), "37m", eager=True, time_unit="us")
    queries = pl.DataFrame({"symbol": symbols}).join(pl.DataFrame({"t": times}), how="cross")
    ours = ReturnsEngine(grid_s3.lazyframe()).query(queries, pl.col("t"), "10m", "1m").collect()
    theirs = (
        ReturnsEngine(BinanceLastTradesGrid("USDT", "5s", root=stores.local.data_root).lazyframe()).query(queries, pl.col("t"), "10m", "1m").collect()
    )
    assert ours.equals(theirs) and ours["return"].null_count() < ours.height
    engine = MetadataEngine(backend_dataset=grid_s3, settings=stores.s3)
    assert engine.partitions == DAYS[:4]
    local_engine = MetadataEngine(backend_dataset=BinanceLastTradesGrid("USDT", "5s", root=stores.local.data_root), settings=stores.local)
    assert_frame_equal(engine.lazyframe().collect(), local_engine.lazyframe().collect(), rel_tol=1e-9, abs_tol=1e-12)


def test_plain_polars_reads_the_s3_store_with_the_aws_variables_alone(stores):
    glob = f"{ROOT}/{GRID_5S}/date=*/*.parquet"  # the seed notebooks' glob
    s3 = pl.scan_parquet(glob).collect()  # no storage_options: AWS_ENDPOINT_URL & co. from the environment
    local = pl.scan_parquet(f"{stores.local.data_root}/{GRID_5S}/date=*/*.parquet").collect()
    assert s3.height > 0 and s3.sort("symbol", "time").equals(local.sort("symbol", "time"))


def duckdb_httpfs(con) -> str:
    """Load DuckDB's httpfs extension: the one shipped on PyPI for exactly this DuckDB (CI has
    no network), else the usual ``INSTALL httpfs``. Returns the statement used."""
    import duckdb

    try:
        import duckdb_extension_httpfs

        found = sorted(Path(duckdb_extension_httpfs.__file__).parent.glob(f"extensions/v{duckdb.__version__}/httpfs.duckdb_extension"))
    except ImportError:
        found = []
    statement = f"LOAD '{found[0]}'" if found else "INSTALL httpfs; LOAD httpfs"
    con.execute(statement)
    return statement


def test_duckdb_reads_the_s3_store(stores):
    duckdb = pytest.importorskip("duckdb")
    endpoint = os.environ["AWS_ENDPOINT_URL"]  # http://127.0.0.1:PORT
    con = duckdb.connect()
    duckdb_httpfs(con)
    # exactly what the README shows, values from the usual AWS variables
    con.execute(
        f"""
        CREATE SECRET mnemo_s3 (
            TYPE s3,
            KEY_ID '{os.environ["AWS_ACCESS_KEY_ID"]}',
            SECRET '{os.environ["AWS_SECRET_ACCESS_KEY"]}',
            REGION '{os.environ["AWS_DEFAULT_REGION"]}',
            ENDPOINT '{endpoint.split("://", 1)[1]}',
            URL_STYLE 'path',
            USE_SSL {str(endpoint.startswith("https://")).lower()}
        )
        """
    )
    sql = f"""
        SELECT symbol, date, time, close, volume_quote, trade_count
        FROM read_parquet('{ROOT}/{GRID_5S}/date=*/*.parquet', hive_partitioning = false)
        ORDER BY symbol, time
    """
    s3 = pl.from_arrow(con.sql(sql).arrow())
    local = (
        pl.scan_parquet(f"{stores.local.data_root}/{GRID_5S}/date=*/*.parquet")
        .select("symbol", "date", "time", "close", "volume_quote", "trade_count")
        .sort("symbol", "time")
        .collect()
    )
    assert s3.height == local.height > 0
    assert s3.with_columns(pl.col("time").cast(pl.Datetime("us"))).equals(local)


# ----------------------------------------------------------------------------- requests
def test_plans_and_reads_cost_a_bounded_number_of_requests(stores, capsys):
    server, graph = stores.server, stores.graph
    n_assets = len(keys(graph))
    # a plan: one listing per asset, no object read
    mark = server.mark()
    planned = plan(graph, requested_days(keys(graph), DAYS), store_listing(graph, ROOT), stores.s3.start_date, missing_only=set(keys(graph)))
    assert planned.total == 0
    plan_counts = server.counts(mark, BUCKET)
    assert plan_counts == {"LIST": n_assets}, plan_counts
    # a whole command with nothing to do: the plan's listings only
    mark = server.mark()
    instance = stores.instance("home_requests")
    assert run_request(stores.s3, Request(keys(graph), DAYS, True, "test: nothing"), progress=False, echo=quiet, instance=instance).ok
    instance.dispose()
    idle = server.counts(mark, BUCKET)
    assert set(idle) == {"LIST"} and idle["LIST"] <= 2 * n_assets, idle
    # a read of 5 days of a grid: in a fresh process (no footer, no snapshot) ...
    grid = BinanceLastTradesGrid("USDT", "5s", root=ROOT)
    parquet._VERIFIED.clear()
    parquet._SNAPSHOTS.clear()
    for f in Path(parquet.snapshot_dir()).glob("*.parquet"):
        f.unlink()
    mark = server.mark()
    grid[DAYS].collect()
    cold = server.counts(mark, BUCKET)
    assert cold == {"LIST": 1, "GET": 2 * len(DAYS)}, cold  # footer (ranged GET) + whole object, per day
    # ... in another process on this machine (snapshots are shared, footers are not) ...
    parquet._VERIFIED.clear()
    parquet._SNAPSHOTS.clear()
    mark = server.mark()
    grid[DAYS].collect()
    shared = server.counts(mark, BUCKET)
    assert shared == {"LIST": 1, "GET": len(DAYS)}, shared
    # ... and again in this process: one listing, nothing else
    mark = server.mark()
    grid[DAYS].collect()
    grid[DAYS[2]].collect()
    warm = server.counts(mark, BUCKET)
    assert warm == {"LIST": 2}, warm
    with capsys.disabled():
        print(
            f"\nS3 requests: 3-day backfill in process {stores.backfill_requests}; `mnemo backfill` adding days 4-5 "
            f"{stores.cli_requests}; plan of {n_assets} assets x {len(DAYS)} days {dict(plan_counts)}; idle command "
            f"{dict(idle)}; 5-day grid read cold {dict(cold)}, snapshots shared {dict(shared)}, warm x2 {dict(warm)}"
        )
    # the backfills: no per-file HEAD storm, one PUT per asset-day written
    written = sum(a.materialized for a in stores.first.assets.values())
    assert stores.backfill_requests.get("PUT", 0) == written, stores.backfill_requests
    assert stores.backfill_requests.get("HEAD", 0) == 0, stores.backfill_requests


# ----------------------------------------------------------------------------- the engine and a planted skip
def test_metadata_engine_compute_on_s3(stores):
    grid = BinanceLastTradesGrid("USDT", "5s", root=ROOT)
    engine = MetadataEngine(backend_dataset=grid, settings=stores.s3)
    instance = stores.instance("home_engine")
    summary = engine.compute(recompute=True, start=DAYS[1], end=DAYS[2], progress=False, instance=instance)
    instance.dispose()
    assert summary.ok, "\n".join(summary.lines())
    metadata = summary.assets["binance/spot/usdt/spot_usdt_meta_1h"]
    assert metadata.planned == metadata.materialized == 2 and not metadata.failed and not metadata.unaccounted
    # upstream assets were stored: nothing of them re-ran
    assert summary.assets["binance/spot/usdt/spot_usdt_grid_5s"].planned == 0
    local = MetadataEngine(backend_dataset=BinanceLastTradesGrid("USDT", "5s", root=stores.local.data_root), settings=stores.local)
    assert_frame_equal(engine[DAYS[1:3]].collect(), local[DAYS[1:3]].collect(), rel_tol=1e-9, abs_tol=1e-12)


def test_a_planted_skip_fails_loudly_naming_the_asset_day(stores, monkeypatch, capsys):
    """The planner counted on the grid of day 5 for the returns of day 4; the grid object is
    deleted between the plan and the run: the command does not report success."""
    import mnemo_assets.defs.execution as execution
    from mnemo_assets import cli

    bucket, _, prefix = ROOT.removeprefix("s3://").partition("/")
    key = f"{prefix}/{partition_file(GRID_5S, DAYS[4])}"
    client = stores.server.client()
    kept = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    launch = execution.launch_backfill

    def plant_then_launch(*args, **kwargs):
        client.delete_object(Bucket=bucket, Key=key)
        return launch(*args, **kwargs)

    monkeypatch.setattr(execution, "launch_backfill", plant_then_launch)
    monkeypatch.setenv("MNEMO_CONFIG", str(stores.base / "s3.yaml"))
    monkeypatch.setenv("DAGSTER_HOME", str(stores.base / "home_skip"))
    try:
        code = cli.main(
            [
                "materialize",
                "--select",
                "key:binance/spot/usdt/spot_usdt_ret_10m",
                "--start",
                DAYS[3].isoformat(),
                "--end",
                DAYS[3].isoformat(),
                "--quiet",
            ]
        )
        out = capsys.readouterr()
        assert code == 1, out.out + out.err
        assert "FAILED: binance/spot/usdt/spot_usdt_ret_10m 2024-12-04" in out.out, out.out
    finally:
        client.put_object(Bucket=bucket, Key=key, Body=kept)
