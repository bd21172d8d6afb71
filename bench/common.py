"""Shared pieces of the benchmarks: the synthetic day, its 5 s grid, timing and memory helpers.

Run it alone to build (or reuse) the cached inputs::

    .venv/bin/python bench/common.py --trades 20000000 --symbols 300 --workdir /tmp/mnemo-bench

Inputs are cached under ``--workdir`` by their parameters; a cached file is reused as is.

Measurement model used by every benchmark:

* the parent process builds inputs, warms the OS page cache (one untimed full read of every file
  involved), then runs **each engine in its own fresh subprocess** (``python bench/<script>.py
  --worker ...``);
* the worker does one untimed warm-up run of its work, then ``--repeat`` timed runs and reports
  the best (min) wall time; it prints one JSON line;
* the parent gets the worker's peak RSS from ``os.wait4`` (the kernel's ``ru_maxrss`` of exactly
  that child, i.e. its VmHWM: interpreter + imports + the engine's peak, file-backed mmap pages
  included). The worker also samples its anonymous RSS (``RssAnon``, heap only, mmapped file
  pages excluded) every 5 ms and reports its peak, and the RSS right after imports/preload
  (before any timed work) so the engine's own increment can be read off.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_WORKDIR = "/tmp/mnemo-bench"
DEFAULT_DAY = date(2025, 1, 15)  # spot files carry µs times from 2025-01-01
GRID_INTERVAL = "5s"


# --------------------------------------------------------------------------- arguments


def add_common_args(p: argparse.ArgumentParser, repeat: int = 3) -> argparse.ArgumentParser:
    p.add_argument("--trades", type=int, default=20_000_000, help="target trades in the day (default 20M)")
    p.add_argument("--symbols", type=int, default=300, help="distinct symbols in the day (default 300)")
    p.add_argument("--workdir", default=DEFAULT_WORKDIR, help=f"cache folder for inputs (default {DEFAULT_WORKDIR})")
    p.add_argument("--repeat", type=int, default=repeat, help=f"timed runs per engine, best reported (default {repeat})")
    p.add_argument("--seed", type=int, default=7, help="synthetic archive seed (default 7)")
    p.add_argument("--day", type=date.fromisoformat, default=DEFAULT_DAY, help=f"the synthetic day (default {DEFAULT_DAY})")
    p.add_argument("--pegs", default="USDT,USDC",
                   help="spot pegs of the synthetic universe; every symbol trades on the first, ~1/5 also on the others "
                        "(default USDT,USDC)")
    return p


# --------------------------------------------------------------------------- inputs


def _log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def store_root(args: argparse.Namespace) -> Path:
    """A store root holding the synthetic day as the trades asset writes it."""
    pegs = args.pegs.replace(",", "-")
    return Path(args.workdir) / f"store_n{args.trades}_s{args.symbols}_seed{args.seed}_{pegs}"


def trades_path(args: argparse.Namespace) -> Path:
    """The stored trades partition of the synthetic day (``binance/spot/trades/date=.../part-0.parquet``)."""
    from mnemo_assets.storage.layout import partition_file, trades_dataset

    return store_root(args) / partition_file(trades_dataset("spot"), args.day)


def grid_path(args: argparse.Namespace, peg: str | None = None) -> Path:
    suffix = "" if peg is None else f"_{peg}"
    return store_root(args) / f"grid{GRID_INTERVAL}{suffix}.parquet"


def _pick_pairs(args: argparse.Namespace, trades_per_day: int):
    """(archive, pairs listed on the day for the chosen symbols, expected total trades)."""
    from mnemo_assets.binance.synthetic import SyntheticArchive

    pegs = tuple(args.pegs.split(","))
    second_share = 0.0 if len(pegs) == 1 else 0.2
    n_pairs = max(1, round(args.symbols / (1 - second_share) * 1.08))  # listings/delistings lose a few
    cache = Path(args.workdir) / "synthetic-archive"
    while True:
        arch = SyntheticArchive(cache, seed=args.seed, n_pairs=n_pairs, trades_per_day=trades_per_day,
                                start=date(2024, 12, 20), end=args.day + timedelta(days=1), pegs=pegs)
        listed = [arch.pair_info("spot", p) for p in arch.list_pairs("spot") if args.day in arch.list_days("spot", p)]
        # a symbol counts when its first-peg pair trades that day; keep every listed peg of it
        symbols = sorted({i.symbol for i in listed if i.peg == pegs[0]})
        if len(symbols) >= args.symbols:
            break
        n_pairs = round(n_pairs * 1.05) + 1
    keep = set(symbols[: args.symbols])
    infos = [i for i in listed if i.symbol in keep]
    # the archive's own daily counts (cheap: no trades drawn) to hit the target total
    expected = sum(arch._count(i, args.day) for i in infos)  # noqa: SLF001 - benchmark helper
    return arch, infos, expected


def build_trades(args: argparse.Namespace) -> Path:
    """The day's normalised trades stored exactly as the trades asset stores them: pairs in
    ``(symbol, peg_symbol)`` order, each pair's trades sorted by ``(time, trade_id)``, written
    batch by batch (one row group per pair, split at pyarrow's 1Mi rows) by
    ``storage.parquet.write_partition`` (zstd, statistics, symbol footer, content hash)."""
    import polars as pl

    from mnemo_assets.binance.parse import TRADES_SCHEMA
    from mnemo_assets.storage.layout import trades_dataset
    from mnemo_assets.storage.parquet import Batches, write_partition

    path = trades_path(args)
    meta = path.with_name("bench.json")
    if path.exists() and meta.exists():
        return path
    t0 = time.perf_counter()
    tpd = args.trades
    arch, infos, expected = _pick_pairs(args, tpd)
    for _ in range(4):  # rescale trades_per_day until the day's total is within 1 % of the target
        if abs(expected - args.trades) <= 0.01 * args.trades:
            break
        tpd = max(1, round(tpd * args.trades / max(expected, 1)))
        arch, infos, expected = _pick_pairs(args, tpd)
    _log(f"generating {len(infos)} pairs / {len({i.symbol for i in infos})} symbols, ~{expected:,} trades "
         f"(SyntheticArchive trades_per_day={tpd:,}) ...")
    counts: dict[str, int] = {}

    def frames():
        for i in sorted(infos, key=lambda i: (i.symbol, i.peg)):  # as defs/trades.py: (symbol, peg) order
            df = arch.normalised_trades("spot", i.pair, args.day).sort("time", "trade_id", maintain_order=True)
            counts[i.peg] = counts.get(i.peg, 0) + df.height
            yield df

    res = write_partition(Batches(TRADES_SCHEMA, frames()), store_root(args), trades_dataset("spot"), args.day)
    t2 = time.perf_counter()
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    info = {
        "rows": res.rows, "pairs": len(infos), "symbols": len(res.symbols), "pegs": sorted(counts.items()),
        "row_groups": md.num_row_groups, "trades_per_day_knob": tpd, "file_bytes": path.stat().st_size,
        "build_s": round(t2 - t0, 2),
    }
    meta.write_text(json.dumps(info, indent=1) + "\n")
    _log(f"wrote {path} ({res.rows:,} rows, {md.num_row_groups} row groups, {info['file_bytes'] / 2**20:.0f} MiB) "
         f"in {t2 - t0:.1f} s")
    return path


def build_grid(args: argparse.Namespace) -> tuple[Path, Path]:
    """The 5 s grid of the day (all pegs) and its first-peg slice (what returns read), as parquet."""
    import polars as pl

    from mnemo_assets.grids import last_trade_grid

    trades = build_trades(args)
    full, first = grid_path(args), grid_path(args, args.pegs.split(",")[0])
    if full.exists() and first.exists():
        return full, first
    t0 = time.perf_counter()
    grid = last_trade_grid(pl.scan_parquet(trades), GRID_INTERVAL).collect()
    grid.write_parquet(full)
    grid.filter(pl.col("peg_symbol") == args.pegs.split(",")[0]).write_parquet(first)
    _log(f"wrote {full} ({grid.height:,} rows) and {first.name} in {time.perf_counter() - t0:.1f} s")
    return full, first


def describe_inputs(args: argparse.Namespace) -> dict:
    meta = trades_path(args).with_name("bench.json")
    return json.loads(meta.read_text()) if meta.exists() else {}


# --------------------------------------------------------------------------- measuring


def warm_os_cache(*paths: Path) -> float:
    """One untimed full read of each file (so every engine starts from a warm page cache)."""
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass
    return time.perf_counter() - t0


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Samples this process's ``RssAnon`` (heap, no file pages) every ``interval`` s in a thread."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_anon_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_anon_kb = max(self.peak_anon_kb, _status_kb("RssAnon"))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon_kb = max(self.peak_anon_kb, _status_kb("RssAnon"))


def _busy_ticks() -> int:
    """Busy CPU ticks of the whole machine so far (``/proc/stat``: all but idle and iowait)."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    return sum(f) - f[3] - f[4]


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def timed(fn: Callable[[], object]) -> tuple[float, float, float, object]:
    """(wall s, own CPU s, foreign CPU s, result) of one call; foreign = CPU other processes used
    meanwhile (another job on this small machine makes a run unrepresentative)."""
    b0, c0 = _busy_ticks(), os.times()
    t0 = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    b1, c1 = _busy_ticks(), os.times()
    own = (c1.user - c0.user) + (c1.system - c0.system)
    foreign = max(0.0, (b1 - b0) / _TICK - own)
    return wall, own, foreign, result


def time_runs(fn: Callable[[], object], repeat: int, warmup: bool = True, max_foreign: float = 0.10,
              max_attempts: int | None = None) -> dict:
    """One untimed call, then timed calls until ``repeat`` *clean* runs (other processes used at
    most ``max_foreign`` × wall, or 0.05 s (tick granularity), CPU seconds meanwhile) or
    ``max_attempts`` (default 3 × repeat).
    Best = min wall over the clean runs (over all runs, flagged, when none was clean)."""
    if warmup:
        fn()
    runs: list[dict] = []
    max_attempts = max_attempts or 3 * repeat
    while len(runs) < max_attempts and sum(r["clean"] for r in runs) < repeat:
        wall, own, foreign, result = timed(fn)
        del result  # free it before the next run
        runs.append({"wall_s": round(wall, 4), "cpu_s": round(own, 3), "foreign_cpu_s": round(foreign, 3),
                     "clean": foreign <= max(max_foreign * wall, 0.05)})
    clean = [r for r in runs if r["clean"]]
    best = min(clean or runs, key=lambda r: r["wall_s"])
    return {"best_s": best["wall_s"], "best_cpu_s": best["cpu_s"], "best_foreign_cpu_s": best["foreign_cpu_s"],
            "clean_runs": len(clean), "runs": runs}


def wait_for_quiet(max_wait: float = 120.0, busy_share: float = 0.15, probe: float = 1.0) -> float:
    """Wait (at most ``max_wait`` s) until other processes use under ``busy_share`` of the machine's
    CPUs over a ``probe`` window; returns the seconds waited. Benchmarks share this machine."""
    ncpu = os.cpu_count() or 1
    t0 = time.perf_counter()
    while True:
        b0 = _busy_ticks()
        time.sleep(probe)
        share = (_busy_ticks() - b0) / _TICK / (probe * ncpu)
        waited = time.perf_counter() - t0
        if share < busy_share or waited >= max_wait:
            if share >= busy_share:
                _log(f"machine still busy ({share:.0%} of {ncpu} CPUs used by others) after {waited:.0f} s; going on")
            return waited


def worker_report(timing: dict, base_rss_kb: int, sampler: RssSampler, **extra) -> None:
    """The worker's one JSON line (stdout), read by :func:`run_worker`."""
    out = {**timing, "base_rss_kb": base_rss_kb, "peak_anon_kb": sampler.peak_anon_kb,
           "hwm_kb": _status_kb("VmHWM"), **extra}
    print("@@RESULT " + json.dumps(out), flush=True)


def current_rss_kb() -> int:
    return _status_kb("VmRSS")


def run_worker(script: Path, worker_args: list[str], env: dict | None = None, timeout: float = 900) -> dict:
    """Run ``python script --worker ...`` in a fresh process; its JSON report plus ``maxrss_kb``
    (that child's peak RSS from ``os.wait4``) and the wall time of the whole process."""
    cmd = [sys.executable, str(script), *worker_args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"worker {worker_args} failed with {proc.returncode}:\n{out}")
    lines = [ln for ln in out.splitlines() if ln.startswith("@@RESULT ")]
    if not lines:
        raise RuntimeError(f"worker {worker_args} printed no result:\n{out}")
    res = json.loads(lines[-1][len("@@RESULT "):])
    res["maxrss_kb"] = usage.ru_maxrss  # kB on Linux
    res["process_wall_s"] = wall
    for ln in out.splitlines():
        if not ln.startswith("@@RESULT "):
            print(ln)
    return res


def mib(kb: int | float) -> str:
    return f"{kb / 1024:,.0f} MiB"


def fmt_s(s: float) -> str:
    return f"{s:.3f} s"


def machine_line() -> str:
    import platform

    import psutil

    return (f"{platform.node()}: {os.cpu_count()} logical cores, {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
            f"Python {platform.python_version()}")


def versions_line() -> str:
    import duckdb
    import pandas
    import polars
    import pyarrow

    return f"polars {polars.__version__}, duckdb {duckdb.__version__}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}"


def main() -> None:
    p = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = p.parse_args()
    build_trades(args)
    full, first = build_grid(args)
    print(json.dumps(describe_inputs(args), indent=1))
    print(trades_path(args))
    print(full)
    print(first)


if __name__ == "__main__":
    main()
