"""A month of the whole graph through the Dagster UI's path, against the same work done by the pure
functions in one process, measured in the same run (the target: the UI/daemon path takes at most
1.5× the pure computation).

    python bench/backfill_bench.py [--days 30] [--start 2024-12-01] [--instance sqlite|postgres]

1. The demo configuration (the repository's ``mnemo.yaml``: spot USDT/USDC, USD-M USDT/USDC,
   COIN-M USD; 50 spot pairs, 200k spot trades a day) with a fresh data root; the synthetic
   archive's zips for the days are generated first (untimed), so both paths read the same files.
2. **Pure**: in one process, the same days through the library's pure functions: every pair file
   read and judged (``read_pair_day``), grids, gridded returns, hourly partials, metadata; every
   result written as the store does (``stage_partition`` + ``publish``).
3. **UI path**: ``dagster-webserver`` + ``dagster-daemon`` on the repository's ``dagster.yaml``,
   the exact mutation the UI's Materialize dialog sends (``assetSelection`` = every asset,
   ``partitionNames`` = the days), timed from the launch to the backfill's end.

Prints both times, their ratio, the runs launched and where the difference goes: waiting for the
backfill daemon (it iterates every 30 s), run process start and code loading, and the runs' own
steps (compute, IO and event writes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mnemo_assets.quiet import quiet_dagster  # noqa: E402

quiet_dagster()


def settings_for(root: Path, start: date):
    import yaml

    from mnemo_assets.config import load_settings

    raw = yaml.safe_load((REPO / "mnemo.yaml").read_text())
    raw["data_root"] = str(root)
    raw["start_date"] = start.isoformat()
    raw.setdefault("automation", {})["enabled"] = False
    path = root.parent / "mnemo.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, load_settings(path, env={})


def pregenerate(settings, days: list[date]) -> int:
    """Generate (and cache) every archive file of the days: untimed, shared by both paths."""
    from mnemo_assets.binance.archive import source_from_settings
    from mnemo_assets.binance.formats import KLINES, TRADES
    from mnemo_assets.binance.trades import plan_day

    source = source_from_settings(settings)
    # the exchange's 1m klines too, when the trades asset reconciles with them (the synthetic
    # archive makes them from its trades: the exchange's work, not ours, so untimed)
    datasets = (TRADES, KLINES) if settings.reconciliation.enabled else (TRADES,)
    n = 0
    for market, ms in settings.markets.items():
        for day in days:
            for item in plan_day(source, market, ms.pegs, day, ms.contracts).present:
                got = source.fetch_datasets(market, item.pair, day, datasets)
                n += len(got)
    return n


def pure(settings, days: list[date]) -> dict[str, float]:
    """The same asset-days as the backfill, through the pure functions in this process."""
    import polars as pl
    from upath import UPath

    from mnemo_assets.binance.archive import source_from_settings
    from mnemo_assets.binance.formats import KLINES, TRADES
    from mnemo_assets.binance.quality import KlinesReconciler, ledger_frame, read_pair_day
    from mnemo_assets.binance.trades import plan_day
    from mnemo_assets.grids import GRID_SCHEMA, last_trade_grid
    from mnemo_assets.metadata import compile_plan, metadata_from_partials, partials
    from mnemo_assets.returns import RETURNS_SCHEMA, gridded_returns
    from mnemo_assets.storage import layout
    from mnemo_assets.storage.parquet import publish, stage_partition

    root = UPath(settings.data_root)
    source = source_from_settings(settings)
    spec = settings.metadata.load_spec(settings.metadata.intervals[0])
    iplan, rplan = compile_plan(spec.index), compile_plan(spec.returns)
    write = lambda frame, dataset, day: publish(stage_partition(frame, root, dataset, day))
    times: dict[str, float] = {}

    def timed(name: str, fn):
        t = time.perf_counter()
        out = fn()
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        return out

    # the same work as the trades asset: every pair-day also reconciled with its 1m klines
    reconcile = settings.reconciliation.enabled
    datasets = (TRADES, KLINES) if reconcile else (TRADES,)
    ret_days = days[:-1]  # the last day's returns wait for the next day
    for market, ms in settings.markets.items():
        trades_by_day = {}
        for day in days:

            def ingest(day=day):
                rows, frames = [], []
                plan = plan_day(source, market, ms.pegs, day, ms.contracts)
                reconciler = KlinesReconciler(market, day) if reconcile else None
                for item in sorted(plan.present, key=lambda p: (p.symbol, p.peg)):
                    got = source.fetch_datasets(market, item.pair, day, datasets)
                    pd_ = read_pair_day(got[TRADES], ms.pegs)
                    rows.append(pd_.row)
                    frames.append(pd_.trades)
                    if reconciler is not None:
                        reconciler.add(pd_.row, pd_.trades, got[KLINES])
                if reconciler is not None:
                    reconciler.done_adding()
                    reconciler.finish()
                    reconciler.close()
                trades = pl.concat(frames)
                write(trades, layout.trades_dataset(market), day)
                write(ledger_frame(rows), layout.quality_dataset(market), day)
                return trades

            trades_by_day[day] = timed("ingest", ingest)
        for peg in ms.pegs:
            grids = {}
            for interval in settings.grids.intervals:
                for day in days:

                    def grid(day=day, interval=interval):
                        g = last_trade_grid(trades_by_day[day].filter(pl.col("peg_symbol") == peg), interval)
                        write(g, layout.grid_dataset(market, interval, peg), day)
                        return g

                    grids[(interval, day)] = timed("grids", grid)
            mark_grid = pl.concat([grids[(settings.returns.grid_interval, d)].with_columns(pl.col("symbol").cast(pl.String)) for d in days])

            def returns():
                out = gridded_returns(mark_grid.lazy(), ret_days[0], ret_days[-1] + timedelta(days=1), settings.returns.intervals[0])
                for day in ret_days:
                    write(out.filter(pl.col("date") == day), layout.returns_dataset(market, settings.returns.intervals[0], peg), day)
                return out

            rets = timed("returns", returns)

            def metadata():
                iparts, rparts = [], []
                for day in days:
                    ip = partials(
                        grids[(settings.metadata.grid_interval, day)].lazy(), iplan, "last_trade_time", spec.interval, last_time=True
                    ).collect()
                    write(ip, layout.metadata_partials_dataset(market, spec.interval, "index", peg), day)
                    iparts.append(ip)
                for day in ret_days:
                    rp = partials(rets.filter(pl.col("date") == day).lazy(), rplan, "returns_grid_time", spec.interval).collect()
                    write(rp, layout.metadata_partials_dataset(market, spec.interval, "returns", peg), day)
                    rparts.append(rp)
                ip_all = pl.concat([p.with_columns(pl.col("symbol").cast(pl.String)) for p in iparts])
                rp_all = pl.concat([p.with_columns(pl.col("symbol").cast(pl.String)) for p in rparts])
                out = metadata_from_partials(
                    ip_all, rp_all, spec, ret_days[0], ret_days[-1] + timedelta(days=1), grid_schema=GRID_SCHEMA, returns_schema=RETURNS_SCHEMA
                )
                for day in ret_days:
                    write(out.filter(pl.col("grid_time").dt.date() == day), layout.metadata_dataset(market, spec.interval, peg), day)

            timed("metadata", metadata)
    return times


def graphql(url: str, query: str, variables: dict) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    req = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


LAUNCH = """mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) { __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } }
}"""


def ui_path(config: Path, work: Path, days: list[date], instance_yaml: Path | None, env: dict[str, str], poll: float = 5.0) -> dict:
    from dagster import DagsterInstance

    from mnemo_assets.graphql import DagsterGraphQL
    from mnemo_assets_tests.stack import Stack

    stack = Stack(work / "stack", instance_yaml=instance_yaml, env=env, config=config.read_text().replace("{", "{{").replace("}", "}}"))
    stack.start()
    try:
        nodes = graphql(stack.url, "{ assetNodes { assetKey { path } } }", {})["data"]["assetNodes"]
        params = {
            "tags": [{"key": "dagster/from_ui", "value": "true"}],
            "assetSelection": [{"path": n["assetKey"]["path"]} for n in nodes],
            "partitionNames": [d.isoformat() for d in days],
            "fromFailure": False,
        }
        cpu = CpuSampler(stack.procs)
        cpu.start()
        t0 = time.time()
        answer = graphql(stack.url, LAUNCH, {"backfillParams": params})["data"]["launchPartitionBackfill"]
        backfill_id = answer["backfillId"]
        status = DagsterGraphQL(stack.url).wait_for_backfill(backfill_id, timeout=7200, poll=poll)
        wall = time.time() - t0
        cpu.stop()
        print("CPU seconds during the backfill by process: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.by_role().items()), flush=True)
        print(f"ui path: backfill {backfill_id} {status['status']} after {wall:.1f}s", flush=True)
        os.environ["DAGSTER_HOME"] = str(stack.home)  # the instance's dagster.yaml reads it
        instance = DagsterInstance.from_config(str(stack.home))
        return {"wall": wall, "status": status["status"], **breakdown(instance, backfill_id, t0, t0 + wall)}
    finally:
        stack.stop()


class CpuSampler:
    """CPU time (user + system) of the stack's process trees, sampled every second, per role:
    the webserver, the daemon, code servers, and run workers (each run's process)."""

    def __init__(self, procs):
        import threading

        self.roots = list(procs)
        self.last: dict[int, tuple[str, float]] = {}
        self.base: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._sample(first=True)
        self._thread.start()

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        import psutil

        for root in self.roots:
            try:
                top = psutil.Process(root.pid)
                tree = [top, *top.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in tree:
                try:
                    cmd = " ".join(proc.cmdline())
                    t = proc.cpu_times()
                except psutil.Error:
                    continue
                used = t.user + t.system
                role = (
                    "webserver" if proc.pid == self.roots[0].pid
                    else "daemon" if proc.pid == self.roots[-1].pid
                    else "code servers" if "grpc" in cmd or "code-server" in cmd
                    # a code server executes each run in a spawned multiprocessing child
                    else "run workers" if "spawn_main" in cmd
                    else "other"
                )  # fmt: skip
                if first:
                    self.base[proc.pid] = used
                self.last[proc.pid] = (role, used)

    def by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, (role, used) in self.last.items():
            out[role] = out.get(role, 0.0) + used - self.base.get(pid, 0.0)
        return out


def _kind(step_key: str) -> str:
    """The asset kind of a step (``grid_5s``, ``ret_10m``, ``trades``, ...): the step key is the
    asset key joined by ``__`` (``binance__spot__usdt__spot_usdt_grid_5s``), its last name
    prefixed with the path between (``spot_usdt_``)."""
    *path, name = step_key.split("__")
    return name.removeprefix("_".join(path[1:]) + "_")


def breakdown(instance, backfill_id: str, t0: float, t1: float) -> dict:
    """Where the UI path's time goes, from the runs' event logs: per run (daemon wait, start),
    per asset kind, and per phase of each step: loading inputs (``LOADED_INPUT``), computing
    (to ``STEP_OUTPUT``), writing + auditing + publishing the output (to ``HANDLED_OUTPUT``), and
    the rest (materialization and check events, step end)."""
    from collections import defaultdict

    from dagster import DagsterEventType as T
    from dagster._core.storage.dagster_run import RunsFilter

    records = instance.get_run_records(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
    busy, startup, steps = [], 0.0, 0.0
    by_kind: dict[str, float] = defaultdict(float)
    phases: dict[str, float] = defaultdict(float)
    events_written = 0
    timeline: list[str] = []
    for rec in sorted(records, key=lambda r: r.create_timestamp):
        run_id = rec.dagster_run.run_id
        events = instance.all_logs(run_id)
        events_written += len(events)
        first_step = min((e.timestamp for e in events if e.dagster_event and e.dagster_event.event_type == T.STEP_START), default=None)
        created = rec.create_timestamp.timestamp()
        end = rec.end_time or t1
        busy.append((created, end))
        if first_step:
            startup += first_step - created
        kinds = sorted({_kind(e.dagster_event.step_key) for e in events if e.dagster_event and e.dagster_event.step_key})
        timeline.append(
            f"run {run_id[:8]}: created +{created - t0:.1f}s, first step +{(first_step or created) - t0:.1f}s, "
            f"ended +{end - t0:.1f}s; {len(rec.dagster_run.asset_selection or [])} assets ({', '.join(kinds)})"
        )
        per_step: dict[str, list] = defaultdict(list)
        for e in events:
            if e.dagster_event is not None and e.dagster_event.step_key:
                per_step[e.dagster_event.step_key].append((e.timestamp, e.dagster_event.event_type))
        for key, evs in per_step.items():
            start = next((t for t, k in evs if k == T.STEP_START), None)
            stop = next((t for t, k in evs if k in (T.STEP_SUCCESS, T.STEP_FAILURE)), None)
            if start is None or stop is None:
                continue
            steps += stop - start
            by_kind[_kind(key)] += stop - start
            loaded = max((t for t, k in evs if k == T.LOADED_INPUT), default=start)
            output = min((t for t, k in evs if k == T.STEP_OUTPUT), default=loaded)
            handled = max((t for t, k in evs if k == T.HANDLED_OUTPUT), default=output)
            phases["load inputs"] += loaded - start
            phases["compute"] += output - loaded
            phases["write, audit, publish"] += handled - output
            phases["events, checks, end"] += stop - handled
    # time with no run of the backfill queued or running: waiting for the daemon's next iteration
    busy.sort()
    covered, cursor = 0.0, t0
    for a, b in busy:
        a, b = max(a, cursor), max(b, cursor)
        covered += b - a
        cursor = max(cursor, b)
    return {
        "runs": len(records),
        "daemon_wait": (t1 - t0) - covered,
        "run_start_and_code_load": startup,
        "steps": steps,
        "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
        "phases": dict(phases),
        "events": events_written,
        "timeline": timeline,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 12, 1))
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between backfill status queries (the UI polls too)")
    args = parser.parse_args()
    days = [args.start + timedelta(days=k) for k in range(args.days)]
    work = Path(tempfile.mkdtemp(prefix="mnemo-backfill-bench-"))
    try:
        # 1. the archive, generated once, copied to both data roots
        gen_root = work / "gen" / "data"
        gen_root.mkdir(parents=True)
        _, gen_settings = settings_for(gen_root, args.start)
        t = time.perf_counter()
        files = pregenerate(gen_settings, days)
        print(f"archive: {files} files generated in {time.perf_counter() - t:.1f}s (untimed)", flush=True)
        roots = {}
        for name in ("pure", "ui"):
            root = work / name / "data"
            root.parent.mkdir(parents=True)
            shutil.copytree(gen_root / "archive-synthetic", root / "archive-synthetic")
            roots[name] = root
        # 2. pure, in this process
        _, pure_settings = settings_for(roots["pure"], args.start)
        t = time.perf_counter()
        stages = pure(pure_settings, days)
        pure_wall = time.perf_counter() - t
        print(f"pure: {pure_wall:.1f}s  " + "  ".join(f"{k} {v:.1f}s" for k, v in stages.items()), flush=True)
        # 3. the UI's path: webserver + daemon
        config, _ = settings_for(roots["ui"], args.start)
        ui = ui_path(config, work / "ui", days, None, {}, poll=args.poll)
        ratio = ui["wall"] / pure_wall
        print()
        print("| path | wall | runs | waiting for the daemon | run start + code load | steps (compute, IO, events) |")
        print("|---|---|---|---|---|---|")
        print(f"| pure functions, one process | {pure_wall:.1f} s | – | – | – | {pure_wall:.1f} s |")
        print(
            f"| UI backfill (webserver + daemon) | {ui['wall']:.1f} s | {ui['runs']} | {ui['daemon_wait']:.1f} s | "
            f"{ui['run_start_and_code_load']:.1f} s | {ui['steps']:.1f} s |"
        )
        print(f"\nratio UI / pure: {ratio:.2f} (target ≤ 1.5); backfill status {ui['status']}")
        print(
            f"\nUI path, step time per asset kind (summed over steps: one at a time within a run, up to 2 runs at once); {ui['events']} events written:"
        )
        print("pure path: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
        print("\n".join(ui["timeline"]))
        print("| asset kind | step time |\n|---|---|")
        for kind, secs in ui["by_kind"].items():
            print(f"| {kind} | {secs:.1f} s |")
        print("\n| step phase | time |\n|---|---|")
        for phase, secs in ui["phases"].items():
            print(f"| {phase} | {secs:.1f} s |")
        return 0 if ui["status"] in ("COMPLETED", "COMPLETED_SUCCESS") else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
