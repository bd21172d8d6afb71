"""One full-size day through the chain: where a day's time goes.

On the full-size synthetic day (default 33M trades, 420 symbols, ~500 pairs, stored as the
trades asset stores it), each step as its asset computes it, in its own subprocess, steps
interleaved round-robin (median of ``--rounds``):

* ``grid``     : ``grid_from_parquet(trades file, "5s", peg="USDT", start=D, end=D+1)`` (the
  grid asset's call);
* ``returns``  : ``gridded_returns(USDT grid of D, D, D+1, "10m")`` from the stored grid
  (``pl.scan_parquet``; the asset also reads D−1 and D+1 when they exist);
* ``metadata`` : the per-hour index partials of the grid day, the returns partials of the
  returns day and ``metadata_from_partials`` for D with the default spec (what the three
  metadata assets compute for one day; the 7d/30d lookback holds only D here).

The ingest step (archive zips → stored trades) comes from ``ingest_bench.py`` (its median wall
time per trade × the day's trades; it is measured on a 5M-trade subset) when run together by
``run_all.py``; shares are of the sum of the four::

    .venv/bin/python bench/day_bench.py --trades 33000000 --symbols 420 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SCRIPT = Path(__file__).resolve()
STEPS = ("grid", "returns", "metadata")


def work(step: str, trades: str, grid: str, returns: str, day):
    import polars as pl

    start = datetime(day.year, day.month, day.day)
    if step == "grid":
        from mnemo_assets.clustered import grid_from_parquet

        return lambda: grid_from_parquet(trades, "5s", peg="USDT", start=start, end=start + timedelta(days=1))
    if step == "returns":
        from mnemo_assets.returns import gridded_returns

        return lambda: gridded_returns(pl.scan_parquet(grid), day, day + timedelta(days=1), "10m")
    if step == "metadata":
        from mnemo_assets.grids import GRID_SCHEMA
        from mnemo_assets.metadata import compile_plan, default_metadata, metadata_from_partials, partials
        from mnemo_assets.returns import RETURNS_SCHEMA

        spec = default_metadata("10m", "1h")
        iplan, rplan = compile_plan(spec.index), compile_plan(spec.returns)

        def run():
            ip = partials(pl.scan_parquet(grid), iplan, "last_trade_time", spec.interval, last_time=True).collect()
            rp = partials(pl.scan_parquet(returns), rplan, "returns_grid_time", spec.interval).collect()
            return metadata_from_partials(ip, rp, spec, day, day + timedelta(days=1), grid_schema=GRID_SCHEMA, returns_schema=RETURNS_SCHEMA)

        return run
    raise ValueError(step)


def worker(args: argparse.Namespace) -> None:
    fn = work(args.worker, args.file, args.grid_file, args.returns_file, args.day)
    common.measure(fn, describe=lambda res: {"rows": res.height})


def run(args: argparse.Namespace) -> dict:
    import polars as pl

    from mnemo_assets.returns import gridded_returns

    trades = common.build_trades(args)
    _, grid = common.build_grid(args)
    returns = grid.with_name(grid.stem + "_returns10m.parquet")
    if not returns.exists():
        gridded_returns(pl.scan_parquet(grid), args.day, args.day + timedelta(days=1), "10m").write_parquet(returns)
    common.warm_os_cache(trades, grid, returns)
    jobs = {
        s: (
            SCRIPT,
            [
                "--worker",
                s,
                "--file",
                str(trades),
                "--grid-file",
                str(grid),
                "--returns-file",
                str(returns),
                "--trades",
                str(args.trades),
                "--symbols",
                str(args.symbols),
                "--day",
                args.day.isoformat(),
            ],
        )
        for s in STEPS
    }
    res = common.interleaved(jobs, args.rounds)
    return {"input": common.describe_inputs(args), "results": res}


def summary(out: dict, ingest: dict | None = None) -> list[str]:
    r = dict(out["results"])
    trades = out["input"].get("rows", 0)
    rows = []
    if ingest is not None:
        per = ingest["results"]["polars"]
        scale = trades / ingest["trades"]
        rows.append(("ingest (extrapolated)", per["wall_s"] * scale, per["cpu_s"] * scale, per["hwm_kb"]))
    rows += [(s, x["wall_s"], x["cpu_s"], x["hwm_kb"]) for s, x in r.items()]
    total = sum(x[1] for x in rows)
    lines = [f"day: {trades:,} trades, {out['input'].get('pairs')} pairs"]
    for name, wall, cpu, hwm in rows:
        lines.append(f"  {name:22s} median {wall:7.3f} s  cpu {cpu:6.2f} s  peak {hwm / 2**20:5.2f} GiB  share {wall / total:6.1%}")
    lines.append(f"  {'total':22s}        {total:7.3f} s")
    return lines


def parser() -> argparse.ArgumentParser:
    p = common.add_common_args(argparse.ArgumentParser(description="one full-size day: grid, returns, metadata"), rounds=3)
    p.set_defaults(trades=33_000_000, symbols=420)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--grid-file", help=argparse.SUPPRESS)
    p.add_argument("--returns-file", help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.worker:
        worker(args)
        return
    print("\n".join(summary(run(args))))


if __name__ == "__main__":
    main()
