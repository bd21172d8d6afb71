"""Full-size days in bounded memory, flat in history: the real assets, one stage at a time.

    .venv/bin/python bench/fullsize.py                      # both parts (~35-50 min here, ~6 GB disk)
    .venv/bin/python bench/fullsize.py --part fullsize      # the full-size day only (~25-35 min)
    .venv/bin/python bench/fullsize.py --part history       # day 0 vs day 60 only (~10-15 min)
    .venv/bin/python bench/fullsize.py --quick              # smoke run: 2M trades, 80 pairs, 8 days (~5 min)

Everything lives in one work folder (``--workdir``, default a new ``/tmp/mnemo-fullsize-*``,
removed at the end unless ``--keep``; pass an existing ``--workdir`` with ``--keep`` to reuse its
generated archive: generation is the slow untimed part). Disk: about 0.45 GB of zips and
0.4 GB of parquet per full-size day (two full-size days), plus a few hundred MB for the history.

**Part 1, full-size day.** Its own data root and Dagster home, a configuration with one market
(spot) and one peg (``--pegs``, default USDT), the synthetic archive with ``--pairs`` pairs
(default 530: 404 USDT pairs listed on the day) and ``trades_per_day`` calibrated from the
archive's own daily counts so that day D (default 2025-01-15, a Wednesday: spot files carry µs
times) holds at least ``--trades`` (default 30M) trades on the configured pegs. D is the first
partition, so the returns of D need the grid of D+1 (also full size) and the metadata of D
computes on what exists. The archive's zips of D and D+1 are generated first (untimed, two
processes). Then every stage runs **the real asset** through ``run_request`` (plan → one Dagster
asset backfill → runs in process, as ``mnemo materialize`` does) for one asset and one day, **in
its own fresh subprocess**: ingest (trades + quality), 5 s grid, 10 m grid, returns, metadata
partials (index, returns), metadata; D+1's ingest and 5 s grid run too (rows marked ``D+1``).

**Part 2, flat in history.** A second configuration at the demo's size (``--history-pairs`` 50,
``--history-trades`` 200k a day, same market and pegs), first partition S = 2024-12-01. The
graph is built for S..S+1 (untimed), then every asset of day S is re-materialized alone in a
fresh subprocess (``--repeat`` times); then the graph is built up to S+61 and every asset of
day S+60 is re-materialized the same way. Day S is measured while the store holds 2 days, day
S+60 while it holds 62 days and the instance the runs of all of them, so any cost that grows with
history shows up as a difference. The day S+60 is shifted (``--history-day``) to the nearest day
whose returns carry in stale marks (a symbol absent on D−1 but present on D or D+1), the case
that searches earlier days.

**What is measured, per stage** (each a separate process started by this script):

* ``step``: the Dagster step's own wall time, STEP_START → STEP_SUCCESS from the run's event
  log (the asset's computation, its checks, staging, publishing, event writes);
* ``process``: the subprocess's wall time (interpreter start, imports, code location load,
  planning, the backfill's bookkeeping, the step);
* ``trades/s``: the day's trades (rows of the trades partition) / ``step``;
* ``peak RSS``: the kernel's ``ru_maxrss`` of that subprocess from ``os.wait4`` (its VmHWM:
  everything resident at the peak, interpreter, Dagster and polars included, file-backed mmap
  pages too); ``base`` is its RSS right before the run (after imports and the definitions), so
  ``peak − base`` is the stage's own increment; ``anon`` is the peak anonymous RSS (heap only)
  sampled every 20 ms;
* history only: ``files``: partition files opened for footers or verification, and ``MB hashed``:
  bytes of stored partitions read to verify their content hash (work that would grow with
  history if a stage looked at earlier days).

The machine is shared (2 cores, other jobs running): wall times are noisy (±20 % is common);
RSS is not. The exit status is non-zero when a stage fails or a full-size stage exceeds
``--limit-gib`` (default 4).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MARKET = "spot"
GiB = 1024**3


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- configuration


def write_config(folder: Path, *, pegs: list[str], pairs: int, trades_per_day: int, start: date) -> Path:
    """A configuration file with its own data root (spot only, automation off)."""
    import yaml

    raw = yaml.safe_load((REPO / "mnemo.yaml").read_text())
    raw["data_root"] = str(folder / "data")
    raw["start_date"] = start.isoformat()
    raw["source"]["kind"] = "synthetic"
    raw["source"]["synthetic"].update(n_pairs=pairs, trades_per_day=trades_per_day, start=start.isoformat())
    raw["markets"] = {MARKET: {"pegs": list(pegs)}}
    raw["automation"]["enabled"] = False
    folder.mkdir(parents=True, exist_ok=True)
    # a reused work folder keeps only its generated archive: a fresh store and instance
    shutil.rmtree(folder / "dagster_home", ignore_errors=True)
    if (folder / "data").exists():
        for child in (folder / "data").iterdir():
            if child.name != "archive-synthetic":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    (folder / "dagster_home").mkdir()
    shutil.copyfile(REPO / "dagster.yaml", folder / "dagster_home" / "dagster.yaml")
    path = folder / "mnemo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def load(config: Path):
    from mnemo_assets.config import load_settings

    return load_settings(config, env={})


def day_counts(pairs: int, trades_per_day: int, start: date, pegs: list[str], day: date) -> tuple[int, int]:
    """(trades, pairs) of the configured pegs on ``day``, from the archive's daily counts (no trades drawn)."""
    from mnemo_assets.binance.synthetic import SyntheticArchive

    arch = SyntheticArchive(tempfile.gettempdir(), n_pairs=pairs, trades_per_day=trades_per_day, start=start, end=day)
    listed = [p for p in arch.universe(MARKET) if p.peg in pegs and arch._is_listed(p, day)]
    return sum(arch._count(p, day) for p in listed), len(listed)


def calibrate(pairs: int, target: int, start: date, pegs: list[str], days: list[date]) -> int:
    """The smallest round ``trades_per_day`` (100k steps) whose every day of ``days`` holds >= target trades."""
    tpd = target
    for _ in range(20):
        got = min(day_counts(pairs, tpd, start, pegs, d)[0] for d in days)
        if got >= target:
            return tpd
        tpd = int(tpd * target / got / 100_000 + 1) * 100_000
    raise RuntimeError("could not calibrate trades_per_day")


def _fetch(job: tuple[str, str, str]) -> int:
    config, pair, day = job
    from mnemo_assets.binance.archive import source_from_settings

    f = source_from_settings(load(Path(config))).fetch(MARKET, pair, date.fromisoformat(day))
    return f.path.stat().st_size


def generate(config: Path, days: list[date], workers: int) -> tuple[int, float]:
    """Write (or reuse) every archive zip of the configured pegs on ``days``; (files, seconds)."""
    from mnemo_assets.binance.archive import source_from_settings
    from mnemo_assets.binance.trades import plan_day

    settings = load(config)
    source = source_from_settings(settings)
    jobs = []
    for day in days:
        for item in plan_day(source, MARKET, settings.markets[MARKET].pegs, day).present:
            expected = source._count(source.pair_info(MARKET, item.pair), day)
            jobs.append((expected, (str(config), item.pair, day.isoformat())))
    jobs.sort(key=lambda j: -j[0])  # biggest first: balanced workers
    t = time.perf_counter()
    _fetch(jobs[-1][1])  # writes the archive's marker once, before the workers race for it
    # spawn, not fork: a forked child of a process that ran polars can deadlock on its thread pool
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_fetch, [j for _, j in jobs], chunksize=1))
    return len(jobs), time.perf_counter() - t


# --------------------------------------------------------------------------- one stage, in a subprocess


@dataclass
class Stage:
    label: str
    keys: list[str]
    day: date
    end: date | None = None  # a range (builds only)
    missing_only: bool = False
    result: dict = field(default_factory=dict)


def run_stage(config: Path, stage: Stage, logs: Path) -> dict:
    """Run one stage in a fresh subprocess; its JSON result plus ``peak_rss`` from ``os.wait4``."""
    spec = {
        "config": str(config),
        "keys": stage.keys,
        "start": stage.day.isoformat(),
        "end": (stage.end or stage.day).isoformat(),
        "missing_only": stage.missing_only,
        "label": stage.label,
    }
    logs.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() else "_" for c in stage.label)
    err_path = logs / f"{safe}.log"
    t = time.perf_counter()
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=str(config.parent),
            env={**os.environ, "DAGSTER_HOME": str(config.parent / "dagster_home")},
        )
        out = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    result = {"ok": False}
    for line in out.splitlines():
        if line.startswith("FULLSIZE_RESULT "):
            result = json.loads(line[len("FULLSIZE_RESULT ") :])
    result["peak_rss"] = usage.ru_maxrss * 1024  # KiB on Linux
    result["process"] = wall
    result["exit"] = proc.returncode
    if proc.returncode != 0 or not result.get("ok"):
        result["ok"] = False
        tail = err_path.read_text().splitlines()[-15:]
        log(f"stage {stage.label} FAILED (exit {proc.returncode}); log {err_path}:\n  " + "\n  ".join(tail))
    return result


def _rss_anon() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def worker(spec: dict) -> int:
    """Run one request through ``run_request`` and print one JSON line (see the module docstring)."""
    peak_anon = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak_anon[0] = max(peak_anon[0], _rss_anon())
            stop.wait(0.02)

    threading.Thread(target=sample, daemon=True).start()
    from dagster import AssetKey, DagsterEventType
    from dagster._core.storage.dagster_run import RunsFilter

    from mnemo_assets.definitions import build_definitions
    from mnemo_assets.defs.execution import Request, run_request
    from mnemo_assets.instance import get_instance
    from mnemo_assets.quiet import quiet_dagster
    from mnemo_assets.storage import parquet

    quiet_dagster()
    # count the work done on stored partitions (footers opened, bytes hashed to verify them)
    counters = {"files": 0, "hashed": 0}
    real_open, real_hash = parquet._open, parquet._content_hash

    def counting_open(path):
        counters["files"] += 1
        return real_open(path)

    def counting_hash(fh, size, stored):
        if stored != parquet._BLANK:  # a read-side verification (writes hash with the blank)
            counters["hashed"] += size
        return real_hash(fh, size, stored)

    parquet._open, parquet._content_hash = counting_open, counting_hash

    settings = load(Path(spec["config"]))
    start, end = date.fromisoformat(spec["start"]), date.fromisoformat(spec["end"])
    days = [start + timedelta(days=k) for k in range((end - start).days + 1)]
    keys = (
        [AssetKey(k.split("/")) for k in spec["keys"]]
        if spec["keys"]
        else sorted(build_definitions(settings).resolve_asset_graph().get_all_asset_keys(), key=lambda k: k.to_user_string())
    )
    build_definitions(settings)  # what run_request builds first (warms imports; counted in base)
    instance = get_instance()
    base = _rss()
    t = time.perf_counter()
    summary = run_request(
        settings,
        Request(keys, days, spec["missing_only"], f"fullsize {spec['label']}"),
        progress=False,
        echo=lambda line: print(line, file=sys.stderr),
        instance=instance,
    )
    wall = time.perf_counter() - t
    stop.set()
    for line in summary.lines() if summary else []:
        print(line, file=sys.stderr)
    steps, runs = 0.0, 0
    if summary is not None and summary.backfill_id:
        records = instance.get_run_records(filters=RunsFilter(tags={"dagster/backfill": summary.backfill_id}))
        runs = len(records)
        for rec in records:
            starts = {}
            for e in instance.all_logs(rec.dagster_run.run_id):
                de = e.dagster_event
                if de is None:
                    continue
                if de.event_type == DagsterEventType.STEP_START:
                    starts[de.step_key] = e.timestamp
                elif de.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE) and de.step_key in starts:
                    steps += e.timestamp - starts.pop(de.step_key)
    trades = 0
    try:
        trades = sum(parquet.verify_partition(settings.data_root, f"binance/trades/{MARKET}", d, full=False).rows for d in days)
    except parquet.PartitionError:
        pass
    result = {
        "ok": bool(summary is not None and summary.ok),
        "step": steps,
        "run_request": wall,
        "runs": runs,
        "base_rss": base,
        "peak_anon": peak_anon[0],
        "trades": trades,
        "files": counters["files"],
        "hashed": counters["hashed"],
    }
    print("FULLSIZE_RESULT " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


# --------------------------------------------------------------------------- the two parts


def keys_of(pegs: list[str]) -> dict[str, list[str]]:
    """Stage name → asset keys (user strings) of the configured pegs, in graph order."""
    from mnemo_assets.defs import keys as K

    out = {"ingest": [K.trades_key(MARKET).to_user_string(), K.quality_key(MARKET).to_user_string()]}
    for peg in pegs:
        p = f" {peg}" if len(pegs) > 1 else ""
        out[f"5s grid{p}"] = [K.grid_key(MARKET, peg, "5s").to_user_string()]
        out[f"10m grid{p}"] = [K.grid_key(MARKET, peg, "10m").to_user_string()]
        out[f"returns 10m{p}"] = [K.returns_key(MARKET, peg, "10m").to_user_string()]
        out[f"index partials 1h{p}"] = [K.partials_key(MARKET, peg, "1h", "index").to_user_string()]
        out[f"returns partials 1h{p}"] = [K.partials_key(MARKET, peg, "1h", "returns").to_user_string()]
        out[f"metadata 1h{p}"] = [K.metadata_key(MARKET, peg, "1h").to_user_string()]
    return out


def gib(n: float) -> str:
    return f"{n / GiB:.2f}"


def fullsize(args, work: Path) -> bool:
    day, nxt = args.day, args.day + timedelta(days=1)
    pegs = args.pegs.split(",")
    log(f"full-size: calibrating trades_per_day for >= {args.trades:,} {'+'.join(pegs)} trades on {day} and {nxt}")
    tpd = calibrate(args.pairs, args.trades, day, pegs, [day, nxt])
    counts = {d: day_counts(args.pairs, tpd, day, pegs, d) for d in (day, nxt)}
    folder = work / "fullsize"
    config = write_config(folder, pegs=pegs, pairs=args.pairs, trades_per_day=tpd, start=day)
    log(
        f"full-size: {config} (n_pairs={args.pairs}, trades_per_day={tpd:,}); "
        + "; ".join(f"{d}: {n:,} trades over {p} pairs" for d, (n, p) in counts.items())
    )
    files, secs = generate(config, [day, nxt], args.workers)
    log(f"full-size: {files} archive zips ready in {secs:.0f}s (untimed)")
    stages = keys_of(pegs)
    # graph order: D and D+1 ingested, their 5 s grids, then everything else of D
    first = [n for n in stages if n == "ingest" or n.startswith("5s grid")]
    plan = [(n, d, "") for n in first for d in (day, nxt)] + [(n, day, "") for n in stages if n not in first]
    # a recompute of a stored day also reads what is stored (pairs, ledger checksums)
    plan.append(("ingest", day, " again (recompute)"))
    rows = []
    ok = True
    for name, d, again in plan:
        label = f"{name} {'D' if d == day else 'D+1'}{again}"
        log(f"full-size: {label} ...")
        r = run_stage(config, Stage(label, stages[name], d), folder / "logs")
        trades = r.get("trades") or counts[d][0]
        rows.append((label, r, trades))
        log(f"full-size: {label}: step {r.get('step', 0):.1f}s, process {r['process']:.1f}s, peak RSS {gib(r['peak_rss'])} GiB")
        ok &= r["ok"]
        if not r["ok"]:
            break
    du = sum(f.stat().st_size for f in (folder / "data").rglob("*") if f.is_file())
    print()
    print(
        f"Full-size day {day} (spot {'/'.join(pegs)}, {counts[day][1]} pairs, {counts[day][0]:,} trades; "
        f"D+1 {counts[nxt][0]:,} trades): each stage alone, a fresh process, the real asset via run_request"
    )
    print(
        f"machine: {os.cpu_count()} cores (shared, times noisy), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GiB:.0f} GiB RAM; "
        f"polars {__import__('polars').__version__}, dagster {__import__('dagster').__version__}; store {du / GiB:.1f} GiB"
    )
    print()
    print("| stage | step (s) | process (s) | trades/s (step) | peak RSS (GiB) | base RSS (GiB) | peak anon (GiB) | ≤ limit |")
    print("|---|---:|---:|---:|---:|---:|---:|:-:|")
    limit = args.limit_gib * GiB
    for label, r, trades in rows:
        within = r["peak_rss"] <= limit
        ok &= within
        rate = f"{trades / r['step']:,.0f}" if r.get("step") else "–"
        print(
            f"| {label} | {r.get('step', 0):.1f} | {r['process']:.1f} | {rate} | {gib(r['peak_rss'])} | "
            f"{gib(r.get('base_rss', 0))} | {gib(r.get('peak_anon', 0))} | {'yes' if within else '**NO**'} |"
        )
    print()
    print(f"every stage ≤ {args.limit_gib:g} GiB peak RSS: {'yes' if ok else 'NO'}")
    (folder / "result.json").write_text(json.dumps({"rows": [(l, r, t) for l, r, t in rows], "tpd": tpd}, indent=1, default=str))
    return ok


def stale_carry_day(config: Path, target: date, first: date, last: date) -> date:
    """The day nearest ``target`` (within [first+1, last-1]) whose returns carry in stale marks:
    a symbol listed on D or D+1 but not on D−1 (a new listing, or a symbol with a missing day)."""
    from mnemo_assets.binance.archive import source_from_settings

    settings = load(config)
    source = source_from_settings(settings)
    pegs = settings.markets[MARKET].pegs
    listed = {}
    for d in [first + timedelta(days=k) for k in range((last - first).days + 1)]:
        listed[d] = {p.symbol for p in source.universe(MARKET) if p.peg == pegs[0] and source._is_listed(p, d)}
    candidates = [d for d in listed if first < d < last and (listed[d] | listed[d + timedelta(days=1)]) - listed[d - timedelta(days=1)]]
    return min(candidates, key=lambda d: (abs((d - target).days), d)) if candidates else target


def history(args, work: Path) -> bool:
    pegs = args.pegs.split(",")
    start = args.history_start
    folder = work / "history"
    config = write_config(folder, pegs=pegs, pairs=args.history_pairs, trades_per_day=args.history_trades, start=start)
    far = start + timedelta(days=args.history_days)
    if not args.history_day_exact:
        far = stale_carry_day(config, far, far - timedelta(days=5), far + timedelta(days=6))
    points = sorted({start, start + timedelta(days=min(args.history_mid, (far - start).days)), far})
    days = [start + timedelta(days=k) for k in range((far - start).days + 2)]
    log(
        f"history: {config} ({args.history_pairs} pairs, {args.history_trades:,} trades/day); measured days "
        + ", ".join(f"{(d - start).days} ({d})" for d in points)
        + f"; archive {days[0]}..{days[-1]}"
    )
    files, secs = generate(config, days, args.workers)
    log(f"history: {files} archive zips ready in {secs:.0f}s (untimed)")
    stages = keys_of(pegs)
    measured: dict[str, dict[int, list[dict]]] = {}
    ok = True
    for d in points:
        # the store holds exactly the days up to D+1 (what the returns of D need) when D is measured
        build_to = d + timedelta(days=1)
        t = time.perf_counter()
        r = run_stage(config, Stage(f"build {start}..{build_to}", [], start, build_to, missing_only=True), folder / "logs")
        ok &= r["ok"]
        log(f"history: graph built for {start}..{build_to} in {time.perf_counter() - t:.0f}s (untimed; ok={r['ok']})")
        for rep in range(args.repeat):
            for name, keys in stages.items():
                res = run_stage(config, Stage(f"{name} day{(d - start).days} rep{rep}", keys, d), folder / "logs")
                ok &= res["ok"]
                measured.setdefault(name, {}).setdefault((d - start).days, []).append(res)
    offsets = [(d - start).days for d in points]

    def best(rs: list[dict], k: str) -> float:  # times: the best of the repeats (least disturbed)
        return min(r.get(k, 0) for r in rs)

    def med(rs: list[dict], k: str) -> float:
        vals = sorted(r.get(k, 0) for r in rs)
        return vals[len(vals) // 2]

    def cells(name: str, fn, k: str, fmt: str) -> str:
        return " / ".join(format(fn(measured[name][o], k), fmt) for o in offsets)

    def mb_hashed(name: str) -> list[float]:
        return [med(measured[name][o], "hashed") for o in offsets]

    slash = " / ".join(str(o) for o in offsets)
    print()
    print(
        f"Flat in history (spot {'/'.join(pegs)}, {args.history_pairs} pairs, {args.history_trades:,} trades/day, first partition {start}): "
        f"every asset's partition of day {slash}, re-materialized alone in a fresh process while the store holds the days up to D+1 "
        f"(day {offsets[-1]} = {far}: its returns carry in stale marks from earlier days); times: best of {args.repeat}, "
        f"other columns: median"
    )
    print()
    print(f"| asset | step (s), day {slash} | day {offsets[-1]} / day {offsets[0]} | process (s) | peak RSS (GiB) | files opened | MB hashed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in stages:
        first, last = best(measured[name][offsets[0]], "step"), best(measured[name][offsets[-1]], "step")
        print(
            f"| {name} | {cells(name, best, 'step', '.2f')} | {last / first if first else float('nan'):.2f} | "
            f"{cells(name, best, 'process', '.1f')} | {' / '.join(gib(med(measured[name][o], 'peak_rss')) for o in offsets)} | "
            f"{cells(name, med, 'files', '.0f')} | {' / '.join(f'{hashed / 1e6:.1f}' for hashed in mb_hashed(name))} |"
        )
    (folder / "result.json").write_text(json.dumps({str(k): v for k, v in measured.items()}, indent=1, default=str))
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--part", choices=["all", "fullsize", "history"], default="all")
    p.add_argument("--workdir", type=Path, help="work folder (default: a new /tmp/mnemo-fullsize-*)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (reuse it with --workdir)")
    p.add_argument("--workers", type=int, default=2, help="processes generating the archive (default 2)")
    p.add_argument("--pegs", default="USDT", help="spot pegs (default USDT)")
    p.add_argument("--trades", type=int, default=30_000_000, help="at least this many trades on D and D+1 (default 30M)")
    p.add_argument("--pairs", type=int, default=530, help="synthetic n_pairs (default 530: 404 USDT pairs on D)")
    p.add_argument("--day", type=date.fromisoformat, default=date(2025, 1, 15), help="the full-size day D (default 2025-01-15)")
    p.add_argument("--limit-gib", type=float, default=4.0, help="peak RSS bound per stage (default 4)")
    p.add_argument("--history-start", type=date.fromisoformat, default=date(2024, 12, 1))
    p.add_argument("--history-days", type=int, default=60, help="the later day's offset (default 60)")
    p.add_argument("--history-mid", type=int, default=31, help="a day in between (default 31: the metadata's 30-day windows are full)")
    p.add_argument("--history-day-exact", action="store_true", help="measure exactly day --history-days (no shift)")
    p.add_argument("--history-pairs", type=int, default=50)
    p.add_argument("--history-trades", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3, help="history: fresh processes per asset-day (times: best; default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2M trades over 80 pairs, history of 8 days, 1 repeat")
    args = p.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    if args.quick:
        args.trades, args.pairs, args.history_days, args.history_mid, args.repeat = 2_000_000, 100, 8, 4, 1
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mnemo-fullsize-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work folder {work}")
    ok = True
    try:
        if args.part in ("all", "fullsize"):
            ok &= fullsize(args, work)
        if args.part in ("all", "history"):
            ok &= history(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
