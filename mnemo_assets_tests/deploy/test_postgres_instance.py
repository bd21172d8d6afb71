"""deploy/postgres/dagster.yaml, as written, against a real PostgreSQL server: Dagster loads it with
its own loader, in-process runs record runs, materializations and asset check evaluations there,
and pool limits set with Dagster's CLI live there too."""

import filecmp
import shutil
import subprocess

import pytest
from dagster import AssetCheckKey, DagsterInstance, DagsterRunStatus, materialize
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from mnemo_assets.config import load_settings
from mnemo_assets.definitions import build_definitions
from mnemo_assets_tests.stack import BIN, REPO, SMALL_CONFIG

POSTGRES_YAML = REPO / "deploy" / "postgres" / "dagster.yaml"
DAYS = ["2024-12-01", "2024-12-02"]
RANGE = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]}


@pytest.fixture
def home(tmp_path, pg, monkeypatch):
    """A DAGSTER_HOME holding an unmodified copy of deploy/postgres/dagster.yaml, and its env vars."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(POSTGRES_YAML, home / "dagster.yaml")
    assert filecmp.cmp(POSTGRES_YAML, home / "dagster.yaml", shallow=False)
    for key, value in pg.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_the_postgres_instance_config_loads_as_written(home, pg):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        # the limits the run-queue daemon reads (QueuedRunCoordinatorDaemon uses the instance's concurrency config)
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2
        assert not instance.telemetry_enabled
        # the tables exist in Postgres, created by Dagster itself
        assert (
            pg.count(
                "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('runs', 'event_logs', 'asset_check_executions', 'bulk_actions', 'instigators', 'job_ticks')"
            )
            == 6
        )


def test_materializations_and_check_evaluations_land_in_postgres(home, pg, tmp_path):
    root = tmp_path / "data"
    config = tmp_path / "mnemo.yaml"
    config.write_text(SMALL_CONFIG.format(root=root))
    settings = load_settings(config, env={})
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    selection = sorted((k for k in graph.get_all_asset_keys() if k.path[-1].endswith(("_trades", "_quality", "_grid_5s", "_grid_10m"))), key=str)
    assert len(selection) == 4  # one market (spot), one peg (USDT): trades, its quality ledger and two grids

    # a pool limit for archive downloads, set with Dagster's own CLI on this instance
    out = subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "archive", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr

    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.get_concurrency_info("archive").slot_count == 1
        result = materialize(list(defs.assets), selection=selection, resources=defs.resources, instance=instance, tags=RANGE)
        assert result.success
        run_id = result.run_id

        # through Dagster's own API on the Postgres instance
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS
        for key in selection:
            assert instance.get_materialized_partitions(key) == set(DAYS), key
        check_keys = [ck for key in selection for ck in graph.get(key).check_keys]
        assert check_keys, "the grids declare asset checks"
        for ck in check_keys:
            records = instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(ck.asset_key, ck.name), limit=50)
            by_partition = {r.partition: r.status for r in records if r.partition is not None}
            assert by_partition == dict.fromkeys(DAYS, AssetCheckExecutionRecordStatus.SUCCEEDED), (ck, by_partition)
        events = [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
        materializations = len(events)
        asset_days = {(e.asset_key, e.partition) for e in events}

    # and straight from Postgres, with no Dagster in between
    assert pg.count("SELECT count(*) FROM runs WHERE run_id = %s AND status = 'SUCCESS'", (run_id,)) == 1
    # every asset-day materialized (the trades twice in a range run: the second carries the day's own data version)
    assert len(asset_days) == len(selection) * len(DAYS) and materializations == (len(selection) + 1) * len(DAYS)
    assert (
        pg.count("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'", (run_id,)) == materializations
    )
    assert pg.count(
        "SELECT count(*) FROM asset_check_executions WHERE run_id = %s AND execution_status = 'SUCCEEDED' AND partition IS NOT NULL", (run_id,)
    ) == len(check_keys) * len(DAYS)
    assert pg.count("SELECT count(*) FROM asset_check_executions WHERE run_id = %s AND execution_status <> 'SUCCEEDED'", (run_id,)) == 0
    assert pg.count("""SELECT "limit" FROM concurrency_limits WHERE concurrency_key = 'archive'""") == 1
