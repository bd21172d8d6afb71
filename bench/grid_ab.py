"""Interleaved A/B timing of grid variants in ONE process (round-robin, ``--rounds`` rounds).

On a shared 2-core VM the machine's speed drifts by ±10-20 % over minutes, more than most
knobs of ``bench/grid_variants.py`` change; grid_bench.py runs engines one after the other, so
its variant rows cannot resolve such small effects. Here every round runs each variant once,
in a rotating order, so drift hits all of them alike; reported: min, median and the median of
the per-round ratio to the library. Memory is not measured here (see grid_bench.py).

    .venv/bin/python bench/grid_ab.py --rounds 7 --ab lib,fast,only-key-sort
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> None:
    p = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-foreign", type=float, default=0.10)
    p.add_argument("--ab", default="lib,fast", help="comma list: 'lib', 'duckdb', or names in grid_variants.VARIANTS")
    args = p.parse_args()

    import polars as pl

    from grid_bench import DUCKDB_KEYS, DUCKDB_SQL, INTERVAL_US
    from grid_variants import VARIANTS, last_trade_grid_variant
    from mnemo_assets.grids import last_trade_grid

    trades = common.build_trades(args)
    file = str(trades)
    common.warm_os_cache(trades)
    fns = {}
    for name in args.ab.split(","):
        if name == "lib":
            fns[name] = lambda: last_trade_grid(pl.scan_parquet(file), "5s").collect()
        elif name == "duckdb":
            import duckdb

            con = duckdb.connect()
            sql = DUCKDB_SQL.format(I=INTERVAL_US, KEY=DUCKDB_KEYS["hugeint"], FILE=file)
            fns[name] = lambda sql=sql, con=con: con.sql(sql).to_arrow_table()
        else:
            kw = VARIANTS[name]
            fns[name] = lambda kw=kw: last_trade_grid_variant(pl.scan_parquet(file), "5s", **kw).collect()
    for fn in fns.values():  # warm-up
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    rejected = 0
    r = 0
    while len(times[names[0]]) < args.rounds and r < 3 * args.rounds:
        common.wait_for_quiet(max_wait=90)
        order = names[r % len(names):] + names[: r % len(names)]
        r += 1
        got = {}
        for n in order:
            wall, cpu, fcpu, res = common.timed(fns[n])
            del res
            got[n] = (wall, cpu, fcpu)
        dirty = [n for n, (w, _, f) in got.items() if f > max(args.max_foreign * w, 0.05)]
        if dirty:  # another process competed for the CPUs: redo the round
            rejected += 1
            common._log(f"round rejected (other processes busy during {', '.join(dirty)})")
            continue
        for n, (w, c, _) in got.items():
            times[n].append(w)
            cpus[n].append(c)
        common._log(f"round {len(times[names[0]])}/{args.rounds}: " + ", ".join(f"{n} {got[n][0]:.3f}" for n in names))
    ref = names[0]
    k = len(times[ref])
    print("=" * 100)
    print(f"GRID A/B (interleaved, {k} clean rounds, {rejected} rejected; {trades.name}); ratios vs '{ref}' per round")
    print(common.machine_line())
    print(f"{'variant':28s} {'min':>8s} {'median':>8s} {'median ratio':>13s} {'faster in':>10s} {'median CPU':>11s} {'CPU ratio':>10s}")
    for n in names:
        ratios = [a / b for a, b in zip(times[n], times[ref], strict=True)]
        cratios = [a / b for a, b in zip(cpus[n], cpus[ref], strict=True)]
        faster = sum(a < b for a, b in zip(times[n], times[ref], strict=True))
        print(f"{n:28s} {min(times[n]):7.3f}s {statistics.median(times[n]):7.3f}s {statistics.median(ratios):12.3f}x "
              f"{faster:>6d}/{k:<3d} {statistics.median(cpus[n]):10.2f}s {statistics.median(cratios):9.3f}x")
    print("=" * 100)


if __name__ == "__main__":
    main()
