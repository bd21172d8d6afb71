"""Every benchmark with its same-run baselines, and one table of the targets.

    .venv/bin/python bench/run_all.py            # full: grids at 5M/20M/33M, returns 1M/10M, ingest 5M, a 33M day
    .venv/bin/python bench/run_all.py --quick    # small inputs, 1 round: a smoke run (~3 min)

Inputs are built once and cached under ``--workdir``. The table goes to stdout and, with the
raw runs, to ``<workdir>/run_all_last.json``. Method: see ``common.py`` ("measuring").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import day_bench
import grid_bench
import ingest_bench
import returns_bench


def ns(module, argv: list[str]) -> argparse.Namespace:
    return module.parser().parse_args(argv)


def gib(kb: float) -> str:
    return f"{kb / 2**20:.2f} GiB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small inputs, one round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per benchmark (default 5; 1 with --quick)")
    p.add_argument("--workdir", default=common.DEFAULT_WORKDIR)
    p.add_argument("--only", default="grid,returns,ingest,day", help="comma list of benchmarks to run")
    a = p.parse_args()
    rounds = 1 if a.quick else a.rounds
    base = ["--workdir", a.workdir, "--rounds", str(rounds)]
    grid_sizes = [(2_000_000, 50)] if a.quick else [(5_000_000, 300), (20_000_000, 300), (33_000_000, 420)]
    returns_day = (2_000_000, 50) if a.quick else (20_000_000, 300)
    queries = [100_000] if a.quick else [1_000_000, 10_000_000]
    ingest_n = 500_000 if a.quick else 5_000_000
    day = (2_000_000, 50) if a.quick else (33_000_000, 420)
    only = set(a.only.split(","))
    report: dict = {"machine": common.machine_line(), "versions": common.versions_line(), "rounds": rounds}
    rows: list[tuple] = []  # (benchmark, engine, median wall, cpu, peak, ratio text, target, met)
    lines: list[str] = []

    if "grid" in only:
        report["grid"] = {}
        for n, s in grid_sizes:
            out = grid_bench.run(ns(grid_bench, [*base, "--trades", str(n), "--symbols", str(s)]))
            report["grid"][n] = out
            lines += grid_bench.summary(out, f"{n:,} trades")
            r = out["results"]
            d = r["duckdb"]
            for e in ("polars", "general", "duckdb", "floor"):
                x = r[e]
                ratio = x["wall_s"] / d["wall_s"]
                met = ""
                if e == "polars":
                    met = "yes" if ratio <= 0.7 and x["hwm_kb"] <= 2 * 2**20 else "no"
                rows.append(
                    (
                        f"grid {n / 1e6:.0f}M trades",
                        e,
                        x["wall_s"],
                        x["cpu_s"],
                        x["hwm_kb"],
                        f"{ratio:.2f}x DuckDB (cpu {x['cpu_s'] / d['cpu_s']:.2f}x)",
                        "<= 0.7x DuckDB, <= 2 GB" if e == "polars" else "",
                        met,
                    )
                )
    save = lambda: (Path(a.workdir) / "run_all_partial.json").write_text(json.dumps(report, indent=1, default=str))
    save()
    if "returns" in only:
        n, s = returns_day
        out = returns_bench.run(ns(returns_bench, [*base, "--trades", str(n), "--symbols", str(s)]), queries)
        report["returns"] = out
        lines += returns_bench.summary(out)
        for q, x in out["sizes"].items():
            r = x["results"]
            pol = r["polars"]
            for e in ("polars", "pandas", "duckdb"):
                v = r[e]
                met = ""
                if e == "polars":
                    ok = pol["wall_s"] <= 0.5 * r["pandas"]["wall_s"] and pol["wall_s"] <= 0.3 * r["duckdb"]["wall_s"]
                    met = "yes" if ok else "no"
                    text = (
                        f"{pol['wall_s'] / r['pandas']['wall_s']:.2f}x pandas, {pol['wall_s'] / r['duckdb']['wall_s']:.2f}x DuckDB "
                        f"(cpu {pol['cpu_s'] / r['pandas']['cpu_s']:.2f}x / {pol['cpu_s'] / r['duckdb']['cpu_s']:.2f}x)"
                    )
                else:
                    text = ""
                rows.append(
                    (
                        f"returns {q / 1e6:g}M queries",
                        e,
                        v["wall_s"],
                        v["cpu_s"],
                        v["hwm_kb"],
                        text,
                        "<= 0.5x pandas, <= 0.3x DuckDB" if e == "polars" else "",
                        met,
                    )
                )
    save()
    ingest_out = None
    if "ingest" in only:
        n, s = returns_day
        ingest_out = ingest_bench.run(ns(ingest_bench, [*base, "--trades", str(n), "--symbols", str(s), "--ingest-trades", str(ingest_n)]))
        report["ingest"] = ingest_out
        lines += ingest_bench.summary(ingest_out)
        r = ingest_out["results"]
        pol = r["polars"]
        for e in ("polars", "duckdb", "floor"):
            v = r[e]
            tput = ingest_out["trades"] / v["cpu_s"] / 1e6
            met, text = "", f"{tput:.2f} M trades/cpu-s"
            if e == "polars":
                vd, vf = pol["cpu_s"] / r["duckdb"]["cpu_s"], pol["cpu_s"] / r["floor"]["cpu_s"]
                met = "yes" if vd <= 1.0 and vf <= 1.5 else ("DuckDB yes, floor no" if vd <= 1.0 else "no")
                text += f"; cpu {vd:.2f}x DuckDB, {vf:.2f}x floor"
            rows.append(
                (
                    f"ingest {ingest_out['trades'] / 1e6:.1f}M trades",
                    e,
                    v["wall_s"],
                    v["cpu_s"],
                    v["hwm_kb"],
                    text,
                    "<= 1.0x DuckDB, <= 1.5x floor (per core)" if e == "polars" else "",
                    met,
                )
            )
    save()
    if "day" in only:
        n, s = day
        out = day_bench.run(ns(day_bench, [*base, "--trades", str(n), "--symbols", str(s)]))
        report["day"] = out
        lines += day_bench.summary(out, ingest_out)
        total_rows = []
        if ingest_out is not None:
            per = ingest_out["results"]["polars"]
            scale = out["input"].get("rows", 0) / ingest_out["trades"]
            total_rows.append(("ingest (extrapolated)", per["wall_s"] * scale, per["cpu_s"] * scale, per["hwm_kb"]))
        total_rows += [(k, v["wall_s"], v["cpu_s"], v["hwm_kb"]) for k, v in out["results"].items()]
        total = sum(x[1] for x in total_rows)
        for name, wall, cpu, hwm in total_rows:
            rows.append((f"day {out['input'].get('rows', 0) / 1e6:.0f}M trades", name, wall, cpu, hwm, f"{wall / total:.1%} of the day", "", ""))

    table = ["| benchmark | engine | median wall | median CPU | peak RSS | ratio | target | met |", "|---|---|---|---|---|---|---|---|"]
    for b, e, w, c, h, r, t, m in rows:
        table.append(f"| {b} | {e} | {w:.3f} s | {c:.2f} s | {gib(h)} | {r} | {t} | {m} |")
    print("\n".join(lines))
    print()
    print(report["machine"] + "; " + report["versions"] + f"; {rounds} interleaved rounds, medians")
    print("\n".join(table))
    report["table"] = table
    (Path(a.workdir) / "run_all_last.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
