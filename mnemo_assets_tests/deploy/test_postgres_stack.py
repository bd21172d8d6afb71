"""dagster-webserver and dagster-daemon on the Postgres instance (deploy/postgres/dagster.yaml as
written): an asset backfill launched through GraphQL runs to success, and the backfill, the runs,
the daemon's heartbeats and a sensor's ticks and cursor are all rows in Postgres."""

import shutil
import subprocess
import time

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.execution.backfill import BulkActionStatus

from mnemo_assets.graphql import DagsterGraphQL
from mnemo_assets_tests.stack import BIN, REPO, Stack

pytestmark = pytest.mark.e2e
POSTGRES_YAML = REPO / "deploy" / "postgres" / "dagster.yaml"
ARTIFACTS = REPO / "test-artifacts"
START, END = "2024-12-01", "2024-12-02"
KEYS = [
    AssetKey(["binance", "spot", "spot_trades"]),
    AssetKey(["binance", "spot", "usdt", "spot_usdt_grid_5s"]),
    AssetKey(["binance", "spot", "usdt", "spot_usdt_grid_10m"]),
]
SENSOR = "mnemo_daily"


@pytest.fixture
def stack(tmp_path, pg, monkeypatch):
    for key, value in pg.env.items():  # for the instance this test process opens
        monkeypatch.setenv(key, value)
    s = Stack(tmp_path / "stack", instance_yaml=POSTGRES_YAML, env=pg.env)
    try:
        s.start()
        yield s
    finally:
        s.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        for log in s.logs.glob("*.log"):
            shutil.copyfile(log, ARTIFACTS / f"postgres-{log.name}")


def dagster_cli(stack: Stack, *args: str) -> str:
    out = subprocess.run([str(BIN / "dagster"), *args], env=stack.env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_backfill_through_the_daemon_on_postgres(stack, pg):
    t0 = time.monotonic()
    client = DagsterGraphQL(stack.url)
    backfill_id = client.launch_asset_backfill({k: [(START, END)] for k in KEYS}, title="postgres: 2 days of trades and grids")
    status = client.wait_for_backfill(backfill_id, timeout=600, poll=2)
    assert status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (status, stack.log_tail())
    assert all(a["failed"] == 0 and a["materialized"] == a["targeted"] == 2 for a in status["assets"].values()), status

    print(f"backfill done after {time.monotonic() - t0:.0f} s")
    # a sensor started with Dagster's CLI: the daemon evaluates it and stores ticks and its cursor
    dagster_cli(stack, "sensor", "start", SENSOR, "-w", str(REPO / "workspace.yaml"))
    with DagsterInstance.from_config(str(stack.home)) as instance:
        state = next(s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) if s.instigator_name == SENSOR)
        deadline = time.monotonic() + 180
        while not (ticks := instance.get_ticks(state.instigator_origin_id, state.selector_id)) or ticks[0].status.value == "STARTED":
            assert time.monotonic() < deadline, "the daemon recorded no finished sensor tick within 180 s\n" + stack.log_tail()
            time.sleep(2)
        print(f"sensor ticked after {time.monotonic() - t0:.0f} s: {ticks[0].status}, runs {ticks[0].run_ids}")
        dagster_cli(stack, "sensor", "stop", SENSOR, "-w", str(REPO / "workspace.yaml"))
        state = instance.get_instigator_state(state.instigator_origin_id, state.selector_id)
        assert state.instigator_data.cursor, "the automation sensor stored no cursor"

        backfill = instance.get_backfill(backfill_id)
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
        runs = instance.get_runs()
        backfill_runs = [r for r in runs if r.tags.get("dagster/backfill") == backfill_id]
        assert backfill_runs and all(r.status == DagsterRunStatus.SUCCESS for r in backfill_runs), [(r.run_id, r.status) for r in backfill_runs]
        for key in KEYS:
            assert instance.get_materialized_partitions(key) == {START, END}, key

    # the same facts, read straight from Postgres
    assert pg.count("SELECT count(*) FROM bulk_actions WHERE key = %s AND status = 'COMPLETED_SUCCESS'", (backfill_id,)) == 1
    assert pg.count(
        "SELECT count(*) FROM runs r JOIN run_tags t ON t.run_id = r.run_id WHERE t.key = 'dagster/backfill' AND t.value = %s AND r.status = 'SUCCESS'",
        (backfill_id,),
    ) == len(backfill_runs)
    for key in KEYS:  # (a range run records a second materialization per day: the day's own data version)
        sql = "SELECT count(DISTINCT partition) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key = %s"
        assert pg.count(sql, (key.to_string(),)) == 2, key
    assert pg.count("SELECT count(*) FROM asset_check_executions WHERE execution_status = 'SUCCEEDED'") > 0
    assert pg.count("SELECT count(*) FROM asset_check_executions WHERE execution_status NOT IN ('SUCCEEDED')") == 0
    assert pg.count("SELECT count(*) FROM job_ticks WHERE selector_id = %s", (state.selector_id,)) >= 1
    assert (
        pg.count(
            "SELECT count(*) FROM instigators WHERE selector_id = %s AND status = 'STOPPED' AND instigator_body LIKE %s",
            (state.selector_id, '%"cursor"%'),
        )
        == 1
    )
    assert pg.count("SELECT count(*) FROM daemon_heartbeats WHERE daemon_type IN ('BACKFILL', 'QUEUED_RUN_COORDINATOR', 'SENSOR')") == 3
