"""End to end against the real stack (dagster-webserver + dagster-daemon on loopback), driven the
way a user drives it: the Dagster UI in headless Chromium (Debian's package, through Playwright)
and the exact GraphQL mutation the UI sends.

1. Lineage → *Materialize all…* on the whole graph → *Show all partitions* → a 10-day range →
   *Launch backfill*; then the same on one group over the next 5 days. Both backfills must end
   successfully on the Backfills page, with every asset-day the planner says is runnable
   materialized (files stored, checks passed per partition) and the waiting ones left out with
   their reason, none failed.
2. The request the UI sent is replayed through GraphQL (``assetSelection`` + ``partitionNames``)
   for another range: the same outcome.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from datetime import date, timedelta

import pytest
from dagster import AssetCheckKey, DagsterInstance
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from mnemo_assets.config import load_settings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.defs.planning import inputs_of as inputs
from mnemo_assets.defs.planning import plan, requested_days, store_listing
from mnemo_assets.graphql import DagsterGraphQL
from mnemo_assets_tests.stack import REPO, Stack

pytestmark = pytest.mark.e2e
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

CONFIG = """\
data_root: {root}
start_date: 2024-12-01
source:
  kind: synthetic
  synthetic: {{seed: 11, n_pairs: 8, trades_per_day: 6000, start: 2024-12-01}}
markets:
  spot: {{pegs: [USDT, USDC]}}
  cm: {{pegs: [USD]}}
grids: {{intervals: [5s, 10m]}}
automation: {{enabled: false}}
backfill: {{days_per_batch: 30}}
"""

GROUP_PAGE = "/locations/__repository__@mnemo_assets/asset-groups"
WHOLE = (date(2024, 12, 1), date(2024, 12, 10))
GROUP = ("binance_cm", date(2024, 12, 11), date(2024, 12, 15))
REPLAY = ("binance_spot", date(2024, 12, 11), date(2024, 12, 12))

requires_browser = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("MNEMO_REQUIRE_BROWSER"), reason="Debian's chromium is not installed")


def days(a: date, b: date) -> list[date]:
    return [a + timedelta(days=k) for k in range((b - a).days + 1)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("stack"), config=CONFIG)
    saved = os.environ.get("DAGSTER_HOME")
    try:
        s.start()
        os.environ["DAGSTER_HOME"] = str(s.home)  # the instance's dagster.yaml reads it
        yield s
    finally:
        s.stop()
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved
        ARTIFACTS.mkdir(exist_ok=True)
        for log in s.logs.glob("*.log"):
            shutil.copyfile(log, ARTIFACTS / f"e2e-{log.name}")


@pytest.fixture(scope="module")
def graph(stack):
    settings = load_settings(stack.config, env={})
    return settings, build_definitions(settings).resolve_asset_graph()


class UI:
    """The Dagster UI in headless Chromium, recording the backfill mutations it sends."""

    def __init__(self, stack, browser):
        self.url = stack.url
        self.page = browser.new_page(viewport={"width": 1600, "height": 1000})
        self.sent: list[dict] = []
        self.page.on("request", self._record)

    def _record(self, request) -> None:
        body = request.post_data or ""
        if request.method == "POST" and '"operationName":"LaunchPartitionBackfill"' in body:
            self.sent.append(json.loads(body))

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.url}{path}", wait_until="networkidle")
        skip = self.page.get_by_role("button", name="Skip")  # the one-time welcome dialog
        try:
            skip.click(timeout=2500)
        except Exception:
            pass

    def materialize_range(self, path: str, first: date, last: date) -> str:
        """On a lineage page: Materialize all… → a partition range → Launch backfill; the id."""
        self.goto(path)
        self.page.get_by_role("button", name=re.compile("Materialize all")).first.click()
        dialog = self.page.get_by_role("dialog")
        dialog.get_by_text("Partition selection").wait_for(timeout=30000)
        show_all = dialog.get_by_text("Show all partitions")
        try:  # the dialog opens on the last 90 days: widen it to every partition
            show_all.wait_for(timeout=5000)
            show_all.click()
        except Exception:
            pass
        box = dialog.locator("input[type=text], input:not([type])").first
        box.click()
        box.fill(f"[{first.isoformat()}...{last.isoformat()}]")
        box.press("Enter")
        dialog.get_by_text(f"{(last - first).days + 1} partitions").wait_for(timeout=15000)
        dialog.get_by_role("button", name="Launch backfill").click()
        toast = self.page.get_by_text(re.compile(r"Created backfill \w+"))
        toast.wait_for(timeout=30000)
        return re.search(r"Created backfill (\w+)", toast.inner_text()).group(1)

    def wait_for_backfill(self, backfill_id: str, timeout: float = 900) -> str:
        """The backfill's page until it ends; its status text."""
        deadline = time.monotonic() + timeout
        while True:
            self.goto(f"/runs/b/{backfill_id}")
            status = self.page.get_by_text(re.compile(r"^(Succeeded|Failed|Canceled|Completed with failures|In progress)$")).first
            status.wait_for(timeout=30000)
            text = status.inner_text()
            if text != "In progress" or time.monotonic() > deadline:
                return text
            time.sleep(5)


def backfill_record(stack, backfill_id: str):
    instance = DagsterInstance.from_config(str(stack.home))
    return instance, instance.get_backfill(backfill_id)


def planned_for(graph, settings, keys, first: date, last: date, stored):
    return plan(graph, requested_days(keys, days(first, last)), stored, settings.start_date)


def assert_backfill_did_the_plan(stack, graph_, backfill_id: str, planned, exact: bool = False) -> None:
    """The backfill succeeded and nothing failed; it materialized every asset-day the planner
    runs for the request (exactly those when ``exact``: a request launched with the plan's
    ranges; a superset from the UI, whose targets Dagster widens downstream), each stored with
    its checks passed for that day, and none whose inputs are not stored; the asset-days left
    out are named in the backfill's description."""
    settings, graph = graph_
    instance, backfill = backfill_record(stack, backfill_id)
    assert backfill.status.value == "COMPLETED_SUCCESS", (backfill.status, stack.log_tail())
    data = backfill.get_asset_backfill_data(graph)
    assert data.failed_and_downstream_subset.num_partitions_and_non_partitioned_assets == 0
    stored = store_listing(graph, settings.data_root)
    done = {
        key: {date.fromisoformat(k) for k in data.materialized_subset.get_partitions_subset(key).get_partition_keys()}
        for key in data.materialized_subset.partitions_subsets_by_asset_key
    }
    for key, run_days in planned.run.items():
        assert set(run_days) <= done.get(key, set()), (key, sorted(set(run_days) - done.get(key, set())))
        if exact:
            assert done.get(key, set()) == set(run_days), key
    for key, materialized in done.items():
        on_disk = stored(key)
        assert materialized <= on_disk, (key, sorted(materialized - on_disk))
        for parent, before, after in inputs(graph, key):
            parent_days = stored(parent)
            for day in materialized:
                for k in range(-before, after + 1):
                    need = day + timedelta(days=k)
                    assert need < settings.start_date or need in parent_days, (
                        f"{key.to_user_string()} {day} ran without {parent.to_user_string()} {need}"
                    )
        for check_key in graph.get(key).check_keys:
            records = instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(key, check_key.name), limit=1000)
            latest: dict[str, AssetCheckExecutionRecordStatus] = {}
            for r in records:  # newest first
                if r.partition is not None:
                    latest.setdefault(r.partition, r.status)
            for day in materialized:
                assert latest.get(day.isoformat()) == AssetCheckExecutionRecordStatus.SUCCEEDED, (check_key, day, latest.get(day.isoformat()))
    if backfill.tags.get("mnemo/waiting_asset_days") not in (None, "0"):
        assert "left out because they wait for inputs" in (backfill.description or ""), backfill.description


@requires_browser
def test_ui_backfills_of_the_whole_graph_then_of_one_group_succeed(stack, graph):
    """The first week of a user: select everything, Materialize, a range, launch; then one group."""
    assert CHROMIUM, "MNEMO_REQUIRE_BROWSER is set but chromium is not installed (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    settings, g = graph
    ARTIFACTS.mkdir(exist_ok=True)
    everything = sorted(g.get_all_asset_keys(), key=lambda k: k.to_user_string())
    cm_keys = [k for k in everything if k.path[1] == "cm"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        ui = UI(stack, browser)
        # the lineage a user sees first (one box per market group), then each group: every node
        # names its market and peg
        ui.goto("/asset-groups")
        for group_name in ("binance_spot", "binance_cm"):
            ui.page.get_by_text(group_name, exact=True).first.wait_for(timeout=30000)
        ui.page.wait_for_timeout(1000)
        ui.page.screenshot(path=str(ARTIFACTS / "lineage.png"))
        for group_name, market in (("binance_spot", "spot"), ("binance_cm", "cm")):
            ui.goto(f"{GROUP_PAGE}/{group_name}")
            for key in (k for k in everything if k.path[1] == market):
                ui.page.get_by_text(key.path[-1], exact=True).first.wait_for(timeout=30000)
            ui.page.wait_for_timeout(1000)
            ui.page.screenshot(path=str(ARTIFACTS / f"asset-graph-{market}.png"))

        # 1. the whole graph, 10 days
        stored_before = store_listing(g, settings.data_root)
        whole_plan = planned_for(g, settings, everything, *WHOLE, stored_before)
        whole_id = ui.materialize_range("/asset-groups", *WHOLE)
        assert ui.wait_for_backfill(whole_id) == "Succeeded", stack.log_tail()
        ui.page.screenshot(path=str(ARTIFACTS / "backfill-whole-graph.png"), full_page=True)
        assert_backfill_did_the_plan(stack, graph, whole_id, whole_plan)
        assert whole_plan.total_waiting and whole_plan.total > 0

        # 2. one group, the next 5 days (its returns of the 10th ran only now, once the 11th exists)
        group, first, last = GROUP
        group_plan = planned_for(g, settings, cm_keys, first, last, store_listing(g, settings.data_root))
        group_id = ui.materialize_range(f"{GROUP_PAGE}/{group}", first, last)
        assert ui.wait_for_backfill(group_id) == "Succeeded", stack.log_tail()
        assert_backfill_did_the_plan(stack, graph, group_id, group_plan)

        # what the UI sent: the asset selection and the partition names, nothing else planned
        assert len(ui.sent) == 2
        for body, keys, (a, b) in ((ui.sent[0], everything, WHOLE), (ui.sent[1], cm_keys, (first, last))):
            params = body["variables"]["backfillParams"]
            assert sorted(tuple(p["path"]) for p in params["assetSelection"]) == sorted(tuple(k.path) for k in keys)
            assert params["partitionNames"] == [d.isoformat() for d in days(a, b)]
            assert "partitionsByAssets" not in params

        # a day's own numbers on its partition page, also after a batched run
        ui.goto("/assets/binance/spot/usdt/spot_usdt_grid_5s?view=partitions&partition=2024-12-03")
        ui.page.get_by_text("dagster/row_count").first.wait_for(timeout=30000)
        body = ui.page.inner_text("body")
        assert "date=2024-12-03/part-0.parquet" in body and "content_hash" in body
        ui.page.screenshot(path=str(ARTIFACTS / "grid-partition.png"))
        ui.goto(f"/runs/b/{whole_id}")
        ui.page.screenshot(path=str(ARTIFACTS / "backfill-page.png"), full_page=True)
        browser.close()
    # 3. the UI's exact mutation, replayed through GraphQL for another group and range
    group, first, last = REPLAY
    keys = [k for k in everything if k.path[1] == "spot"]
    replay_plan = planned_for(g, settings, keys, first, last, store_listing(g, settings.data_root))
    params = dict(ui.sent[1]["variables"]["backfillParams"])
    params.update(assetSelection=[{"path": list(k.path)} for k in keys], partitionNames=[d.isoformat() for d in days(first, last)])
    query = ui.sent[1]["query"]
    payload = json.dumps({"operationName": "LaunchPartitionBackfill", "variables": {"backfillParams": params}, "query": query}).encode()
    request = urllib.request.Request(f"{stack.url}/graphql", data=payload, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    replay_id = answer["data"]["launchPartitionBackfill"]["backfillId"]
    status = DagsterGraphQL(stack.url).wait_for_backfill(replay_id, timeout=900, poll=3)
    assert status["status"] == "COMPLETED_SUCCESS", (status, stack.log_tail())
    assert_backfill_did_the_plan(stack, graph, replay_id, replay_plan)


def daemon_backfill(stack, first: date, last: date, timeout: float) -> subprocess.CompletedProcess:
    """`mnemo backfill --url` of the spot group over ``first..last``, run by the stack's daemon."""
    mnemo = str(REPO / ".venv/bin/mnemo") if (REPO / ".venv/bin/mnemo").exists() else "mnemo"
    argv = ["backfill", "--url", stack.url, "--select", "group:binance_spot", "--start", first.isoformat(), "--end", last.isoformat(), "--quiet"]
    return subprocess.run([mnemo, *argv], env=stack.env, cwd=stack.base, capture_output=True, text=True, timeout=timeout)


def test_cli_and_daemon_choose_the_same_asset_days(stack, graph, tmp_path):
    """One planner: `mnemo backfill --url` (run by the daemon) and the planner the CLI and the
    UI planner sensor use agree on the asset-days of the same request."""
    settings, g = graph
    keys = [k for k in g.get_all_asset_keys() if k.path[1] == "spot"]
    first, last = date(2024, 12, 13), date(2024, 12, 14)
    expected = plan(g, requested_days(keys, days(first, last)), store_listing(g, settings.data_root), settings.start_date, missing_only=keys)
    out = daemon_backfill(stack, first, last, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    backfill_id = re.search(r"launched backfill (\w+)", out.stdout).group(1)
    assert_backfill_did_the_plan(stack, graph, backfill_id, expected, exact=True)
    # the summary says what happened, per asset
    assert "planned  materialized  waiting  failed" in out.stdout
    # missing-only: nothing left to do the second time, and no run starts
    instance = DagsterInstance.from_config(str(stack.home))
    before = instance.get_runs_count()
    again = daemon_backfill(stack, first, last, timeout=300)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert instance.get_runs_count() == before
