"""End to end against the real stack: webserver + daemon, a GraphQL asset backfill over 5 days of
the whole graph, then the UI in headless Chromium (Debian's package)."""

import os
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest
from dagster import AssetCheckKey, DagsterInstance
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from mnemo_assets.config import load_settings
from mnemo_assets.defs.planning import plan, requested_days, store_listing
from mnemo_assets.definitions import build_definitions
from mnemo_assets.graphql import DagsterGraphQL
from mnemo_assets.storage.io_manager import DATASET_KEY
from mnemo_assets.storage.layout import partition_file
from mnemo_assets_tests.stack import REPO, Stack

pytestmark = pytest.mark.e2e
DAYS = [date(2024, 12, 1) + timedelta(days=k) for k in range(5)]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("stack"))
    try:
        s.start()
        yield s
    finally:
        s.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        for log in s.logs.glob("*.log"):
            shutil.copyfile(log, ARTIFACTS / f"e2e-{log.name}")


@pytest.fixture(scope="module")
def backfilled(stack):
    settings = load_settings(stack.config, env={})
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    planned = plan(graph, requested_days(graph.get_all_asset_keys(), DAYS), store_listing(graph, settings.data_root), settings.start_date)
    plan_ = planned.run
    client = DagsterGraphQL(stack.url)
    ranges = {k: [(a.isoformat(), b.isoformat()) for a, b in spans] for k, spans in planned.ranges().items()}
    backfill_id = client.launch_asset_backfill(ranges, title="e2e: 5 days of the whole graph")
    status = client.wait_for_backfill(backfill_id, timeout=900, poll=3)
    assert status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), stack.log_tail()
    return settings, defs, plan_, status


def test_backfill_materializes_every_partition_with_files_and_passing_checks(stack, backfilled):
    settings, defs, plan, status = backfilled
    graph = defs.resolve_asset_graph()
    # the whole graph: 5 days where inputs exist; returns and metadata of day 5 wait for day 6
    assert len(plan) == 7  # trades, grid_5s, grid_10m, returns, two partials, metadata
    assert plan[next(k for k in plan if k.path[-1] == "trades")] == DAYS
    assert plan[next(k for k in plan if k.path[-1] == "returns_10m")] == DAYS[:4]
    assert all(a["failed"] == 0 and a["materialized"] == a["targeted"] for a in status["assets"].values()), status
    os.environ["DAGSTER_HOME"] = str(stack.home)
    instance = DagsterInstance.from_config(str(stack.home))
    for key, days in plan.items():
        materialized = instance.get_materialized_partitions(key)
        assert {d.isoformat() for d in days} <= materialized, key
        dataset = graph.assets_def_for_key(key).metadata_by_key[key][DATASET_KEY]
        for day in days:
            assert (Path(settings.data_root) / partition_file(dataset, day)).exists(), (key, day)
        for check_key in graph.get(key).check_keys:
            records = instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(key, check_key.name), limit=500)
            latest: dict[str, AssetCheckExecutionRecordStatus] = {}
            for r in records:  # newest first
                if r.partition is not None:
                    latest.setdefault(r.partition, r.status)
            for day in days:
                assert latest.get(day.isoformat()) == AssetCheckExecutionRecordStatus.SUCCEEDED, (check_key, day, latest)


def test_missing_only_backfill_starts_no_runs(stack, backfilled):
    instance = DagsterInstance.from_config(str(stack.home))
    before = instance.get_runs_count()
    out = subprocess.run(
        [str(REPO / ".venv/bin/mnemo") if (REPO / ".venv/bin/mnemo").exists() else "mnemo", "backfill", "--url", stack.url,
         "--start", DAYS[0].isoformat(), "--end", DAYS[-1].isoformat(), "--quiet"],
        env=stack.env, cwd=stack.base, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "nothing to do" in out.stdout
    assert instance.get_runs_count() == before


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def dismiss_welcome(page) -> None:
    """Dagster shows a one-time community dialog to a new browser profile."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=5000)
        skip.click()
    except Exception:  # noqa: BLE001 - no dialog this time
        pass


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("MNEMO_REQUIRE_BROWSER"), reason="Debian's chromium is not installed")
def test_ui_shows_the_asset_graph_and_a_partition(stack, backfilled):
    """Headless Chromium (Debian's package, driven by Playwright) on the asset graph and a partition page."""
    assert CHROMIUM, "MNEMO_REQUIRE_BROWSER is set but chromium is not installed (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{stack.url}/asset-groups/binance_spot", wait_until="networkidle")
        dismiss_welcome(page)
        graph = page.locator("[data-testid='asset-graph'], svg, main").first
        graph.wait_for(timeout=30000)
        for name in ("trades", "grid_5s", "grid_10m", "returns_10m", "metadata_1h"):
            page.get_by_text(name, exact=True).first.wait_for(timeout=30000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "asset-graph.png"))
        # a partition of a grid: materialized, with its row count and checks
        page.goto(f"{stack.url}/assets/binance/spot/usdt/spot_usdt_grid_5s?view=partitions&partition=2024-12-03", wait_until="networkidle")
        dismiss_welcome(page)
        page.get_by_text("Materialized (5)").wait_for(timeout=30000)
        page.get_by_text("rows_by_day").first.wait_for(timeout=30000)
        body = page.inner_text("body")
        assert "2024-12-03" in body and "grid_5s" in body
        page.screenshot(path=str(ARTIFACTS / "grid-partition.png"))
        page.goto(f"{stack.url}/assets/binance/spot/usdt/spot_usdt_grid_5s?view=checks", wait_until="networkidle")
        dismiss_welcome(page)
        page.get_by_text("nothing_lost").first.wait_for(timeout=30000)
        assert "price_bounds" in page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "grid-checks.png"))
        browser.close()
