"""Shared pieces of the benchmarks: the synthetic day, its 5 s grid, timing and memory helpers.

Run it alone to build (or reuse) the cached inputs::

    .venv/bin/python bench/common.py --trades 20000000 --symbols 300 --workdir /tmp/mnemo-bench

Inputs are cached under ``--workdir`` by their parameters; a cached file is reused as is.

Measurement model used by every benchmark: see "measuring" below (fresh subprocess per
measurement, one warm-up and one timed run, engines interleaved round-robin, medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
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


def add_common_args(p: argparse.ArgumentParser, rounds: int = 5) -> argparse.ArgumentParser:
    p.add_argument("--trades", type=int, default=20_000_000, help="target trades in the day (default 20M)")
    p.add_argument("--symbols", type=int, default=300, help="distinct symbols in the day (default 300)")
    p.add_argument("--workdir", default=DEFAULT_WORKDIR, help=f"cache folder for inputs (default {DEFAULT_WORKDIR})")
    p.add_argument("--rounds", type=int, default=rounds, help=f"interleaved rounds (one timed run each; default {rounds})")
    p.add_argument("--seed", type=int, default=7, help="synthetic archive seed (default 7)")
    p.add_argument("--day", type=date.fromisoformat, default=DEFAULT_DAY, help=f"the synthetic day (default {DEFAULT_DAY})")
    p.add_argument(
        "--pegs",
        default="USDT,USDC",
        help="spot pegs of the synthetic universe; every symbol trades on the first, ~1/5 also on the others (default USDT,USDC)",
    )
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
    cache = Path(args.workdir) / f"synthetic-archive_n{args.trades}_s{args.symbols}_seed{args.seed}_{args.pegs.replace(',', '-')}"
    while True:
        arch = SyntheticArchive(
            cache,
            seed=args.seed,
            n_pairs=n_pairs,
            trades_per_day=trades_per_day,
            start=date(2024, 12, 20),
            end=args.day + timedelta(days=1),
            pegs=pegs,
        )
        listed = [arch.pair_info("spot", p) for p in arch.list_pairs("spot") if args.day in arch.list_days("spot", p)]
        # a symbol counts when its first-peg pair trades that day; keep every listed peg of it
        symbols = sorted({i.symbol for i in listed if i.peg == pegs[0]})
        if len(symbols) >= args.symbols:
            break
        n_pairs = round(n_pairs * 1.05) + 1
    keep = set(symbols[: args.symbols])
    infos = [i for i in listed if i.symbol in keep]
    # the archive's own daily counts (cheap: no trades drawn) to hit the target total
    expected = sum(arch._count(i, args.day) for i in infos)
    return arch, infos, expected


def build_trades(args: argparse.Namespace) -> Path:
    """The day's normalised trades stored exactly as the trades asset stores them: pairs in
    ``(symbol, peg_symbol)`` order, each pair's trades sorted by ``(time, trade_id)``, written
    batch by batch (one row group per pair, split at pyarrow's 1Mi rows) by
    ``storage.parquet.write_partition`` (zstd, statistics, symbol footer, content hash)."""

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
    _log(
        f"generating {len(infos)} pairs / {len({i.symbol for i in infos})} symbols, ~{expected:,} trades "
        f"(SyntheticArchive trades_per_day={tpd:,}) ..."
    )
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
        "rows": res.rows,
        "pairs": len(infos),
        "symbols": len(res.symbols),
        "pegs": sorted(counts.items()),
        "row_groups": md.num_row_groups,
        "trades_per_day_knob": tpd,
        "file_bytes": path.stat().st_size,
        "build_s": round(t2 - t0, 2),
    }
    meta.write_text(json.dumps(info, indent=1) + "\n")
    _log(f"wrote {path} ({res.rows:,} rows, {md.num_row_groups} row groups, {info['file_bytes'] / 2**20:.0f} MiB) in {t2 - t0:.1f} s")
    return path


def build_grid(args: argparse.Namespace) -> tuple[Path, Path]:
    """The 5 s grid of the day (all pegs) and its first-peg slice (what returns read), as parquet."""
    import polars as pl

    from mnemo_assets.clustered import grid_from_parquet

    trades = build_trades(args)
    full, first = grid_path(args), grid_path(args, args.pegs.split(",")[0])
    if full.exists() and first.exists():
        return full, first
    t0 = time.perf_counter()
    grid = grid_from_parquet(trades, GRID_INTERVAL)
    grid.write_parquet(full)
    grid.filter(pl.col("peg_symbol") == args.pegs.split(",")[0]).write_parquet(first)
    _log(f"wrote {full} ({grid.height:,} rows) and {first.name} in {time.perf_counter() - t0:.1f} s")
    return full, first


def describe_inputs(args: argparse.Namespace) -> dict:
    meta = trades_path(args).with_name("bench.json")
    return json.loads(meta.read_text()) if meta.exists() else {}


# --------------------------------------------------------------------------- measuring
#
# Method (every benchmark): each engine runs in a fresh subprocess per measurement; a
# measurement is one untimed warm-up run and one timed run. Engines are interleaved round-robin
# (the order rotated every round) for ``--rounds`` rounds, so every engine sees the same
# machine weather; the table reports the MEDIAN wall time, the median CPU time (all threads of
# the worker) and the largest peak RSS (VmHWM: interpreter, imports, inputs and the engine's
# peak, warm-up included). The machine is shared: wall times vary with other jobs, CPU times
# vary much less; the "load" column is the 1-minute load average seen during the rounds.


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


def measure(fn: Callable[[], object], describe: Callable[[object], dict] | None = None, **extra) -> None:
    """Worker side: one untimed warm-up call, one timed call; prints the result line."""
    base = _status_kb("VmRSS")
    fn()
    c0, t0 = os.times(), time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    out = {"wall_s": wall, "cpu_s": cpu, "base_rss_kb": base, "hwm_kb": _status_kb("VmHWM"), "load": os.getloadavg()[0], **extra}
    if describe is not None:
        out.update(describe(result))
    print("@@RESULT " + json.dumps(out, default=str), flush=True)


def run_worker(script: Path, worker_args: list[str], timeout: float = 1800) -> dict:
    """Run ``python script --worker ...`` in a fresh process and return its result line."""
    cmd = [sys.executable, str(script), *worker_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {worker_args} failed with {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT ")]
    if not lines:
        raise RuntimeError(f"worker {worker_args} printed no result:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("@@RESULT ") :])


def interleaved(jobs: dict[str, tuple[Path, list[str]]], rounds: int) -> dict[str, dict]:
    """Run every job ``rounds`` times, round-robin with the order rotated each round; per job the
    median wall and CPU time, the largest peak RSS and the runs."""
    names = list(jobs)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            script, wargs = jobs[name]
            res = run_worker(script, wargs)
            runs[name].append(res)
            _log(
                f"round {r + 1}/{rounds} {name}: wall {res['wall_s']:.3f} s, cpu {res['cpu_s']:.2f} s, "
                f"peak {res['hwm_kb'] / 1024:,.0f} MiB, load {res['load']:.1f}"
            )
    out = {}
    for name, rs in runs.items():
        out[name] = {
            "wall_s": statistics.median(x["wall_s"] for x in rs),
            "cpu_s": statistics.median(x["cpu_s"] for x in rs),
            "hwm_kb": max(x["hwm_kb"] for x in rs),
            "load": statistics.median(x["load"] for x in rs),
            "n": len(rs),
            "runs": rs,
        }
    return out


def mib(kb: int | float) -> str:
    return f"{kb / 1024:,.0f} MiB"


def fmt_s(s: float) -> str:
    return f"{s:.3f} s"


def machine_line() -> str:
    import platform

    import psutil

    return (
        f"{platform.node()}: {os.cpu_count()} logical cores, {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, Python {platform.python_version()}"
    )


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
