"""Stored data you can trust, under fire: real SIGKILLs of `mnemo` mid-run, and a 60-day soak
with faults injected into the archive files (repaired or recorded), both compared with a clean
run's store, file by file."""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus, RunsFilter
from polars.testing import assert_frame_equal

from mnemo_assets.binance.archive import archive_key, checksum_line
from mnemo_assets.binance.synthetic import SyntheticArchive
from mnemo_assets.defs.execution import RUN_PID_START_TAG, RUN_PID_TAG, _process_start
from mnemo_assets.storage.layout import STAGING_DIR, quality_dataset
from mnemo_assets.storage.parquet import scan_days, verify_partition

REPO = Path(__file__).resolve().parents[1]
MNEMO = str(Path(sys.executable).parent / "mnemo")

CONFIG = """\
data_root: {root}
start_date: 2024-12-01
source:
  kind: {kind}
  mirror_dir: {mirror}
  synthetic: {{seed: 5, n_pairs: 8, trades_per_day: 3000, start: 2024-12-01}}
markets:
  spot: {{pegs: [USDT]}}
grids: {{intervals: [5s, 10m]}}
automation: {{enabled: false}}
backfill: {{days_per_batch: {batch}}}
"""


def workspace(base: Path, kind: str = "synthetic", mirror: Path | None = None, batch: int = 30) -> dict[str, str]:
    """A folder with its own mnemo.yaml, dagster.yaml and store; the environment to run in it."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "mnemo.yaml").write_text(CONFIG.format(root=base / "data", kind=kind, mirror=mirror or "null", batch=batch))
    (base / "home").mkdir(exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", base / "home" / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    env.update(DAGSTER_HOME=str(base / "home"), MNEMO_CONFIG=str(base / "mnemo.yaml"))
    return env


def mnemo(base: Path, env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([MNEMO, *args, "--quiet"], cwd=base, env=env, capture_output=True, text=True, timeout=timeout)


def partitions(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.glob("binance/**/part-0.parquet")}


def assert_same_store(got_root: Path, want_root: Path, ignore: tuple[str, ...] = ()) -> None:
    """Every partition of the clean store exists in the other one with equal content."""
    want, got = partitions(want_root), partitions(got_root)
    assert set(want) == set(got), sorted(set(want) ^ set(got))[:10]
    for name, path in sorted(want.items()):
        if any(part in name for part in ignore):
            continue
        a, b = pl.read_parquet(got[name]), pl.read_parquet(path)
        if name.startswith("binance/quality/"):  # where the file was read from differs, its facts do not
            a, b = a.drop("source", "klines_source"), b.drop("source", "klines_source")
        assert_frame_equal(a, b, check_exact=False, rel_tol=1e-12, abs_tol=0.0), name


def all_readable(root: Path) -> None:
    """Every stored partition verifies (footer, content hash) and reads."""
    for name, path in partitions(root).items():
        dataset, day = name.rsplit("/date=", 1)
        verify_partition(root, dataset, date.fromisoformat(day.split("/")[0]), full=True)
        pl.read_parquet(path)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean run of the same configuration: the reference store."""
    base = tmp_path_factory.mktemp("clean")
    env = workspace(base)
    out = mnemo(base, env, "backfill", "--start", "2024-12-01", "--end", "2024-12-06")
    assert out.returncode == 0, out.stdout + out.stderr
    # a clean archive: --quiet says nothing beyond the plan and the summary (range runs used to
    # warn of a data version mismatch for every trades run)
    assert "WARNING" not in out.stderr + out.stdout, out.stderr[-3000:]
    return base / "data"


def instance_at(home: Path, monkeypatch) -> DagsterInstance:
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the instance's dagster.yaml reads it
    return DagsterInstance.from_config(str(home))


def test_sigkill_at_any_point_leaves_the_store_readable_and_a_rerun_equal_to_a_clean_run(tmp_path, clean, monkeypatch):
    base = tmp_path / "killed"
    env = workspace(base)
    rng = random.Random(7)
    kills = 0
    for _attempt in range(6):
        proc = subprocess.Popen(
            [MNEMO, "materialize", "--start", "2024-12-01", "--end", "2024-12-06", "--quiet"],
            cwd=base,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(rng.uniform(3.0, 14.0))  # imports take ~3 s; runs write for the rest
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        all_readable(base / "data")  # whatever the moment, every visible partition is whole
    assert kills >= 3, "the kills should land while runs are writing"
    staged = list((base / "data" / STAGING_DIR).glob("*")) if (base / "data" / STAGING_DIR).exists() else []
    out = mnemo(base, env, "backfill", "--start", "2024-12-01", "--end", "2024-12-06", timeout=360)  # a clean run takes ~40 s
    assert out.returncode == 0, out.stdout + out.stderr
    assert_same_store(base / "data", clean)
    # leftovers are gone: staged files of the killed writers, and their runs marked failed
    assert not any(p.exists() for p in staged)
    instance = instance_at(base / "home", monkeypatch)
    assert instance.get_runs_count(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])) == 0
    # ... their backfills canceled, and no pool slot left held by them
    assert not instance.get_backfills(status=BulkActionStatus.REQUESTED)
    assert instance.event_log_storage.get_concurrency_run_ids() == set()


def test_pool_slots_held_by_a_killed_command_do_not_block_the_next_one(tmp_path, monkeypatch):
    """A command killed while its trades steps held the ``archive`` pool's slots: Dagster frees
    slots only from the daemon's run monitoring, so the next in-process command's trades steps
    waited for a slot forever (CI hung 900 s). The next command frees them and completes."""
    base = tmp_path / "ws"
    env = workspace(base)
    instance = instance_at(base / "home", monkeypatch)
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    tags = {RUN_PID_TAG: str(killed.pid), RUN_PID_START_TAG: _process_start(killed.pid) or "1"}  # a reused pid is not it
    killed.kill()
    killed.wait()
    instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id="killed", status=DagsterRunStatus.STARTED, tags=tags))
    instance.event_log_storage.set_concurrency_slots("archive", 2)
    for step in ("a", "b"):
        assert instance.event_log_storage.claim_concurrency_slot("archive", "killed", step).is_claimed

    out = mnemo(base, env, "materialize", "--start", "2024-12-01", "--end", "2024-12-01", "--select", "key:binance/spot/spot_trades", timeout=300)

    assert out.returncode == 0, out.stdout + out.stderr
    assert instance.get_run_by_id("killed").status == DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_run_ids() == set()
    assert (base / "data" / "binance").exists()


def rewrite_zip(mirror: Path, pair: str, day: date, csv: bytes, compresslevel: int = 5) -> None:
    zip_path = mirror / archive_key("spot", pair, day)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            zipfile.ZipInfo(zip_path.name.replace(".zip", ".csv"), date_time=(day.year, day.month, day.day, 0, 0, 0)),
            csv,
            compress_type=zipfile.ZIP_DEFLATED,
            compresslevel=compresslevel,
        )
    zip_path.write_bytes(buf.getvalue())
    zip_path.with_name(zip_path.name + ".CHECKSUM").write_text(checksum_line(buf.getvalue(), zip_path.name))


@pytest.mark.slow
def test_soak_sixty_days_with_injected_faults_end_equal_to_a_clean_run_and_named_in_the_ledger(tmp_path, monkeypatch):
    start, n = date(2024, 12, 1), 60
    days = [start + timedelta(days=k) for k in range(n)]
    end = days[-1]
    gen = SyntheticArchive(tmp_path / "gen", seed=5, n_pairs=8, trades_per_day=3000, start=start, end=end + timedelta(days=1))
    pristine, mirror = tmp_path / "pristine", tmp_path / "mirror"
    gen.write_mirror(pristine, markets=("spot",), start=start, end=end, datasets=("trades", "klines"))
    shutil.copytree(pristine, mirror)
    # the clean run
    clean_base = tmp_path / "clean"
    clean_env = workspace(clean_base, kind="mirror", mirror=pristine, batch=20)
    out = mnemo(clean_base, clean_env, "backfill", "--start", str(start), "--end", str(end))
    assert out.returncode == 0, out.stdout + out.stderr

    rng = random.Random(11)
    pairs = {d: [p for p in gen.list_pairs("spot") if p.endswith("USDT") and d in gen.list_days("spot", p)] for d in days}
    cells = [(d, p) for d in days for p in pairs[d]]
    chosen = rng.sample(cells, 12)
    blocking, recorded = chosen[:6], chosen[6:]
    # faults that must stop a day and be repaired: corrupt zip, checksum mismatch, missing file
    for k, (day, pair) in enumerate(blocking):
        zip_path = mirror / archive_key("spot", pair, day)
        if k % 3 == 0:
            zip_path.write_bytes(b"PK\x03\x04 corrupt")
            zip_path.with_name(zip_path.name + ".CHECKSUM").write_text(checksum_line(zip_path.read_bytes(), zip_path.name))
        elif k % 3 == 1:
            zip_path.write_bytes(zip_path.read_bytes()[:-7] + b"garbage")
        else:
            zip_path.unlink()
            zip_path.with_name(zip_path.name + ".CHECKSUM").unlink()
    # a fault the data survives and the ledger records: identical duplicate rows
    duplicated, republished = recorded[:3], recorded[3:]
    for day, pair in duplicated:
        lines = gen.csv_bytes("spot", pair, day).splitlines(keepends=True)
        rewrite_zip(mirror, pair, day, b"".join(lines[:3] + lines[1:3] + lines[3:]))

    base = tmp_path / "faulty"
    env = workspace(base, kind="mirror", mirror=mirror, batch=20)
    first = mnemo(base, env, "backfill", "--start", str(start), "--end", str(end))
    assert first.returncode != 0, "blocking faults must fail the run"
    report = first.stdout + first.stderr
    # the runs that failed name every blocking fault (the file and the day)
    instance = instance_at(base / "home", monkeypatch)
    failures = " ".join(
        str(e.dagster_event.event_specific_data.error)
        for r in instance.get_run_records(filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
        for e in instance.all_logs(r.dagster_run.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    )
    for day, pair in blocking:
        assert f"{pair}-trades-{day}" in failures or pair in failures, (day, pair, report[-2000:])
    # repaired (the archive fixed its files): the missing days are backfilled, everything is equal
    for day, pair in blocking:
        for suffix in ("", ".CHECKSUM"):
            src = pristine / (archive_key("spot", pair, day) + suffix)
            shutil.copyfile(src, mirror / (archive_key("spot", pair, day) + suffix))
    second = mnemo(base, env, "backfill", "--start", str(start), "--end", str(end))
    assert second.returncode == 0, second.stdout + second.stderr
    # the archive re-publishes stored days with the same trades (new bytes, new checksum); the
    # days are re-ingested (what the recheck sensor asks for) and the ledger records both checksums
    for day, pair in republished:
        rewrite_zip(mirror, pair, day, gen.csv_bytes("spot", pair, day), compresslevel=9)
        again = mnemo(
            base,
            env,
            "materialize",
            "--start",
            str(day),
            "--end",
            str(day),
            "--select",
            "key:binance/spot/spot_trades or key:binance/spot/spot_quality",
        )
        assert again.returncode == 0, again.stdout + again.stderr
    assert_same_store(base / "data", clean_base / "data", ignore=("binance/quality/",))
    # the ledger names every recorded fault
    ledger = scan_days(base / "data", quality_dataset("spot"), days).collect()
    for day, pair in recorded:
        row = ledger.filter((pl.col("date") == day) & (pl.col("pair") == pair)).row(0, named=True)
        assert row["status"] == "degraded", (day, pair, row)
        if (day, pair) in duplicated:
            assert row["duplicate_ids_dropped"] == 2 and any("duplicate" in r for r in row["reasons"]), row
        else:
            before = (pristine / (archive_key("spot", pair, day) + ".CHECKSUM")).read_text().split()[0]
            assert row["previous_sha256"] == before != row["sha256"] and any("re-published" in r for r in row["reasons"]), row
    # and nothing else is degraded
    others = ledger.filter(pl.col("status") != "ok").select("date", "pair").rows()
    assert sorted(others) == sorted(recorded)
