"""End to end on object storage: dagster-webserver + dagster-daemon with
``data_root: s3://...`` on a real S3 endpoint (``moto_server`` on loopback), ``mnemo backfill
--url`` for days 1-3, then 1-5 (adding days to an existing store): every planned asset-day is
in the store and the summary says so; then an input made invisible between the plan and the
run (a planted skip) ends the command non-zero, naming the asset-day."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from datetime import date, timedelta
from pathlib import Path

import pytest

from mnemo_assets.config import load_settings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.defs.planning import dataset_of
from mnemo_assets.storage.layout import grid_dataset, partition_file
from mnemo_assets.storage.parquet import existing_days
from mnemo_assets_tests.conftest import use_s3
from mnemo_assets_tests.stack import REPO, SMALL_CONFIG, Stack

pytestmark = pytest.mark.e2e
MNEMO = Path(sys.executable).parent / "mnemo"
BUCKET = "mnemo-e2e"
ROOT = f"s3://{BUCKET}/daemon/mnemo"
DAYS = [date(2024, 12, 1) + timedelta(days=k) for k in range(6)]
ARTIFACTS = REPO / "test-artifacts"
ROW = re.compile(r"mnemo: (binance/\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", re.M)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, moto_server):
    base = tmp_path_factory.mktemp("s3stack")
    with pytest.MonkeyPatch.context() as mp:
        use_s3(mp, moto_server, base / "cache")
        moto_server.create_bucket(BUCKET)
        config = SMALL_CONFIG.replace("data_root: {root}", f"data_root: {ROOT}")
        s = Stack(base, env={**moto_server.env, "MNEMO_CACHE_DIR": str(base / "cache")}, config=config)
        try:
            s.start()
            yield s
        finally:
            s.stop()
            ARTIFACTS.mkdir(exist_ok=True)
            for log in s.logs.glob("*.log"):
                shutil.copyfile(log, ARTIFACTS / f"e2e-s3-{log.name}")


def mnemo(stack: Stack, *args: str) -> subprocess.Popen:
    cwd = stack.base / "cwd"
    cwd.mkdir(exist_ok=True)
    return subprocess.Popen(
        [str(MNEMO), "backfill", "--url", stack.url, "--quiet", *args],
        cwd=cwd,
        env={**stack.env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def rows(out: str) -> dict[str, tuple[int, int, int, int]]:
    return {m.group(1): tuple(int(x) for x in m.groups()[1:]) for m in ROW.finditer(out)}


def stored(stack: Stack) -> dict[str, list[date]]:
    settings = load_settings(stack.config, env={})
    graph = build_definitions(settings).resolve_asset_graph()
    return {k.to_user_string(): existing_days(ROOT, dataset_of(graph, k)) for k in graph.get_all_asset_keys()}


def test_incremental_backfill_through_the_daemon_completes_on_s3(stack):
    before = stored(stack)
    assert all(days == [] for days in before.values())
    for end in (DAYS[2], DAYS[4]):
        proc = mnemo(stack, "--start", DAYS[0].isoformat(), "--end", end.isoformat())
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out + "\n" + stack.log_tail()
        assert f"→ {ROOT}" in out
        after = stored(stack)
        table = rows(out)
        assert set(table) == set(after), out
        for asset, (planned, materialized, _waiting, failed) in table.items():
            # the summary matches the store: what was planned is there now, nothing else changed
            assert materialized == planned and failed == 0, (asset, out)
            assert len(after[asset]) == len(before[asset]) + planned, (asset, out, before[asset], after[asset])
        before = after
    # days 1-5: trades, grids and the index partials of every day; returns (and what reads
    # them) up to day 4 (day 5 waits for the grid of day 6)
    for asset, days in before.items():
        expected = DAYS[:5] if asset.endswith(("trades", "quality", "grid_5s", "grid_10m", "ipart_1h")) else DAYS[:4]
        assert days == expected, asset
    assert not list((stack.base / "cwd").rglob("s3:*")) and not list(REPO.glob("s3:*"))


def test_a_planted_skip_through_the_daemon_exits_non_zero_naming_the_asset_day(stack, moto_server):
    """Backfilling day 6 plans the returns of day 5 on the stored grid of day 4; that grid is
    deleted as soon as the plan is printed, before the daemon runs anything."""
    if not stored(stack)["binance/spot/usdt/spot_usdt_grid_5s"]:
        pytest.skip("needs the store of the incremental backfill test")
    key = f"{ROOT.removeprefix(f's3://{BUCKET}/')}/{partition_file(grid_dataset('spot', '5s', 'USDT'), DAYS[3])}"
    client = moto_server.client()
    kept = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    proc = mnemo(stack, "--start", DAYS[0].isoformat(), "--end", DAYS[5].isoformat())
    lines: list[str] = []
    planted = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "asset-day(s) to run" in line and not planted.is_set():
                client.delete_object(Bucket=BUCKET, Key=key)
                planted.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=900)
        reader.join(timeout=30)
    finally:
        client.put_object(Bucket=BUCKET, Key=key, Body=kept)
    out = "".join(lines)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "e2e-s3-planted-skip.txt").write_text(out)
    assert planted.is_set(), out
    assert proc.returncode == 1, out + "\n" + stack.log_tail()
    assert re.search(r"(FAILED|NOT DONE): binance/spot/usdt/spot_usdt_ret_10m 2024-12-05", out), out
    # what did not depend on the deleted grid was done
    table = rows(out)
    assert table["binance/spot/spot_trades"][:2] == (1, 1), out
