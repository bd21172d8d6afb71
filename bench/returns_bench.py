"""Returns benchmark: ``ReturnsEngine(grid).query(q, pl.col("t"), "10m", "30s").collect()`` vs
pandas ``merge_asof`` and DuckDB ``ASOF JOIN``, same inputs, same run.

Backend: the 5 s grid of the synthetic day, first peg only (USDT: one row per symbol and
bucket, what the seeds read from ``.../last_trade/5s/peg_symbol=USDT/``), ``symbol`` Enum.
Queries: ``--queries`` sizes (default 1M and 10M) of random symbols among the grid's symbols
plus a few unknown ones (``--unknown-share``, default 1 %), random µs times within the day;
columns ``symbol`` (String, or Enum with ``--query-symbol enum``: the grid's categories plus the
unknown names) and ``t``. Same query file for every engine.

Semantics computed by every engine (SPEC.md "Marks and returns"): for each query row, the mark at
``t0 = t`` and at ``t1 = t + 10m`` is the grid row of the symbol with the largest
``last_trade_time <= t``; lag = t − that time, computed whatever the tolerance; the fair price
(``vwap_total_by_base``) counts only when lag <= 30 s; ``return = fair1 / fair0 − 1``;
``max_tick_to_query_lag`` = the larger of the lags that exist; every query row kept, in order.

Engines: ``polars`` (the library, as above), ``polars-fast`` (the same call with
``query_marks`` replaced by the bench-local rewrite in ``bench/returns_variants.py``: one Int128
sort key, order restored by a sort on the row index), ``pandas`` (``merge_asof`` twice, integer
symbol codes as ``by``), ``duckdb`` (two ``ASOF LEFT JOIN``). The "faster baseline" is the faster
of pandas and DuckDB.

Two modes, both timed for every engine:

* ``mem`` : the grid is already in the engine's memory (polars ``DataFrame`` from
  ``read_parquet``; pandas ``DataFrame``; DuckDB native table) — reading it is NOT timed;
* ``scan``: the grid is read from its parquet file INSIDE the timed region (polars
  ``pl.scan_parquet``; ``pd.read_parquet`` of the 3 needed columns; DuckDB ``read_parquet``).

The queries are in memory in both modes (polars ``DataFrame``, pandas ``DataFrame``, DuckDB
native table), loaded before timing. Each engine's timed work includes every step to an
in-memory result in query order (pandas: sorting grid and queries, both ``merge_asof``, the
arithmetic, restoring query order; DuckDB: fetched as a ``pyarrow.Table``).

Usage::

    .venv/bin/python bench/returns_bench.py                        # 1M and 10M, 3 runs
    .venv/bin/python bench/returns_bench.py --queries 1000000 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

SCRIPT = Path(__file__).resolve()
DURATION = "10m"
TOLERANCE = "30s"
DURATION_US = 600_000_000
TOLERANCE_US = 30_000_000
ENGINES = ("polars", "polars-fast", "pandas", "duckdb")
BASELINES = ("pandas", "duckdb")
MODES = ("mem", "scan")


# --------------------------------------------------------------------------- inputs


def query_path(args: argparse.Namespace, n: int) -> Path:
    grid = common.grid_path(args, args.pegs.split(",")[0])
    return grid.with_name(grid.stem + f"_q{n}_{args.query_symbol}_u{args.unknown_share}_seed{args.seed}.parquet")


def build_queries(args: argparse.Namespace, grid: Path, n: int) -> Path:
    import numpy as np
    import polars as pl

    path = query_path(args, n)
    if path.exists():
        return path
    symbols = pl.read_parquet(grid, columns=["symbol"])["symbol"].cast(pl.String).unique().sort().to_list()
    unknown = [f"NOPE{i}" for i in range(5)]
    rng = np.random.default_rng(args.seed + n)
    known = rng.integers(0, len(symbols), n)
    is_unknown = rng.random(n) < args.unknown_share
    names = np.array(symbols + unknown, dtype=object)
    idx = np.where(is_unknown, len(symbols) + rng.integers(0, len(unknown), n), known)
    day_us = int((np.datetime64(args.day.isoformat(), "us") - np.datetime64("1970-01-01", "us")).astype(np.int64))
    t = day_us + rng.integers(0, 86_400_000_000, n)
    q = pl.DataFrame({"symbol": pl.Series(names[idx], dtype=pl.String),
                      "t": pl.Series(t, dtype=pl.Int64).cast(pl.Datetime("us"))})
    if args.query_symbol == "enum":
        q = q.with_columns(pl.col("symbol").cast(pl.Enum(symbols + unknown)))
    q.write_parquet(path)
    return path


# --------------------------------------------------------------------------- engines (worker side)


def polars_work(grid_file: str, query_file: str, mode: str, fast: bool = False):
    import polars as pl

    from mnemo_assets.engines import ReturnsEngine
    from returns_variants import engine_query_variant

    q = pl.read_parquet(query_file)
    grid = pl.read_parquet(grid_file) if mode == "mem" else None

    def run():
        backend = grid if mode == "mem" else pl.scan_parquet(grid_file)
        if fast:  # the bench-local rewrite of query_marks (bench/returns_variants.py)
            return engine_query_variant(backend, q, pl.col("t"), DURATION, TOLERANCE).collect()
        return ReturnsEngine(backend).query(q, pl.col("t"), DURATION, TOLERANCE).collect()

    def to_check(res):
        return res.select(pl.col("symbol").cast(pl.String), "t",
                          pl.col("max_tick_to_query_lag").dt.total_microseconds().alias("lag_us"), "return")

    return run, to_check


def pandas_work(grid_file: str, query_file: str, mode: str):
    import numpy as np
    import pandas as pd

    cols = ["symbol", "last_trade_time", "vwap_total_by_base"]
    # queries as pandas holds them after read_parquet: symbol str, t datetime64[us]
    q = pd.read_parquet(query_file)
    q["symbol"] = q["symbol"].astype(str)
    q_sym = q["symbol"].to_numpy()
    q_t = q["t"].to_numpy()
    n = len(q)

    def load_grid():  # the Enum symbol comes back as a pandas categorical
        return pd.read_parquet(grid_file, columns=cols)

    grid_mem = load_grid() if mode == "mem" else None
    dur = np.timedelta64(DURATION_US, "us")
    tol = np.timedelta64(TOLERANCE_US, "us")

    def run():
        g = grid_mem if mode == "mem" else load_grid()
        g = g[g["last_trade_time"].notna() & g["symbol"].notna()]
        cats = g["symbol"].cat.categories
        # right: integer symbol codes (the fastest `by` for merge_asof), stably sorted by time so
        # equal times keep grid order (merge_asof backward takes the last of them)
        mt = g["last_trade_time"].to_numpy()
        order = np.argsort(mt, kind="stable")
        right = pd.DataFrame({"sym": g["symbol"].cat.codes.to_numpy()[order].astype(np.int32), "mt": mt[order],
                              "fair": g["vwap_total_by_base"].to_numpy()[order]})
        # left: the query symbols as codes of the grid's categories (-1: unknown, never matches)
        codes = pd.Categorical(q_sym, categories=cats).codes.astype(np.int32)
        ok = (codes >= 0) & ~np.isnat(q_t)
        rid = np.flatnonzero(ok)
        rid = rid[np.argsort(q_t[rid], kind="stable")]
        t0 = q_t[rid]
        left = pd.DataFrame({"sym": codes[rid], "t0": t0, "t1": t0 + dur})
        m0 = pd.merge_asof(left, right, left_on="t0", right_on="mt", by="sym", direction="backward")
        m1 = pd.merge_asof(left[["sym", "t1"]], right, left_on="t1", right_on="mt", by="sym", direction="backward")
        lag0 = t0 - m0["mt"].to_numpy()
        lag1 = (t0 + dur) - m1["mt"].to_numpy()
        f0 = np.where(lag0 <= tol, m0["fair"].to_numpy(), np.nan)  # NaT <= tol is False
        f1 = np.where(lag1 <= tol, m1["fair"].to_numpy(), np.nan)
        lag_out = np.full(n, np.timedelta64("NaT"), dtype="timedelta64[us]")
        ret_out = np.full(n, np.nan)
        lag_out[rid] = np.fmax(lag0, lag1)  # NaT-skipping max
        ret_out[rid] = f1 / f0 - 1.0
        return pd.DataFrame({"symbol": q["symbol"], "t": q["t"], "max_tick_to_query_lag": lag_out, "return": ret_out})

    def to_check(res):
        import polars as pl

        df = pl.from_pandas(res)
        return df.select(pl.col("symbol").cast(pl.String), pl.col("t").cast(pl.Datetime("us")),
                         pl.col("max_tick_to_query_lag").cast(pl.Duration("us")).dt.total_microseconds().alias("lag_us"),
                         pl.col("return").fill_nan(None))

    return run, to_check


DUCKDB_SQL = """
WITH q AS (SELECT rid, symbol, t, epoch_us(t) AS t0 FROM queries),
g AS (SELECT CAST(symbol AS VARCHAR) AS symbol, epoch_us(last_trade_time) AS mt, vwap_total_by_base AS fair
      FROM {GRID} WHERE last_trade_time IS NOT NULL),
m0 AS (SELECT q.rid, q.symbol, q.t, q.t0, q.t0 + {D} AS t1, g.mt AS mt0, g.fair AS f0
       FROM q ASOF LEFT JOIN g ON q.symbol = g.symbol AND q.t0 >= g.mt),
m1 AS (SELECT m0.*, g.mt AS mt1, g.fair AS f1
       FROM m0 ASOF LEFT JOIN g ON m0.symbol = g.symbol AND m0.t1 >= g.mt)
SELECT symbol, t,
       greatest(t0 - mt0, t1 - mt1) AS lag_us,
       (CASE WHEN t1 - mt1 <= {TOL} THEN f1 END) / (CASE WHEN t0 - mt0 <= {TOL} THEN f0 END) - 1.0 AS "return"
FROM m1
ORDER BY rid
"""


def duckdb_work(grid_file: str, query_file: str, mode: str):
    import os

    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    f = grid_file.replace("'", "''")
    con.execute(f"CREATE TABLE queries AS SELECT row_number() OVER () - 1 AS rid, CAST(symbol AS VARCHAR) AS symbol, t "
                f"FROM read_parquet('{query_file}')")
    if mode == "mem":
        con.execute(f"CREATE TABLE grid AS SELECT symbol, last_trade_time, vwap_total_by_base FROM read_parquet('{f}')")
        src = "grid"
    else:
        src = f"read_parquet('{f}')"
    sql = DUCKDB_SQL.format(GRID=src, D=DURATION_US, TOL=TOLERANCE_US)

    def run():
        return con.sql(sql).to_arrow_table()

    def to_check(res):
        import polars as pl

        return pl.from_arrow(res).select(pl.col("symbol").cast(pl.String), pl.col("t").cast(pl.Datetime("us")),
                                         pl.col("lag_us").cast(pl.Int64), pl.col("return"))

    return run, to_check


def worker(args: argparse.Namespace) -> None:
    if args.worker == "polars-fast":
        run, to_check = polars_work(args.grid_file, args.query_file, args.mode, fast=True)
    else:
        work = {"polars": polars_work, "pandas": pandas_work, "duckdb": duckdb_work}[args.worker]
        run, to_check = work(args.grid_file, args.query_file, args.mode)
    base_rss = common.current_rss_kb()  # interpreter + imports + preloaded inputs, before any timed work
    with common.RssSampler() as sampler:
        timing = common.time_runs(run, args.repeat, max_foreign=args.max_foreign)
    hwm = common._status_kb("VmHWM")
    res = run()
    rows = len(res)
    if args.out:  # untimed, after the peak was read
        to_check(res).write_parquet(args.out)
    common.worker_report(timing, base_rss, sampler, rows=rows, hwm_before_output_kb=hwm)


# --------------------------------------------------------------------------- checks


def compare(ref_path: Path, other_path: Path, label: str) -> dict:
    import polars as pl

    a, b = pl.read_parquet(ref_path), pl.read_parquet(other_path)
    out = {"label": label, "rows": (a.height, b.height), "ok": False}
    if a.height != b.height:
        return out
    out["same_query_columns"] = a.select("symbol", "t").equals(b.select("symbol", "t"))
    ra, rb = a["return"], b["return"]
    out["return_null_mismatch"] = int((ra.is_null() != rb.is_null()).sum())
    both = ra.is_not_null() & rb.is_not_null()
    out["return_max_abs_diff"] = float(((ra - rb).abs().filter(both)).max() or 0.0)
    out["lag_null_mismatch"] = int((a["lag_us"].is_null() != b["lag_us"].is_null()).sum())
    out["lag_value_mismatch"] = int((a["lag_us"] != b["lag_us"]).fill_null(False).sum())
    out["non_null_returns"] = int(ra.is_not_null().sum())
    out["ok"] = (out["same_query_columns"] and out["return_null_mismatch"] == 0 and out["return_max_abs_diff"] <= 1e-12
                 and out["lag_null_mismatch"] == 0 and out["lag_value_mismatch"] == 0)
    return out


# --------------------------------------------------------------------------- parent side


def main() -> None:
    p = common.add_common_args(argparse.ArgumentParser(description="ReturnsEngine vs pandas merge_asof vs DuckDB ASOF"))
    p.add_argument("--queries", default="1000000,10000000", help="comma list of query counts (default 1M,10M)")
    p.add_argument("--query-symbol", choices=("string", "enum"), default="string", help="query symbol dtype")
    p.add_argument("--unknown-share", type=float, default=0.01, help="share of queries on unknown symbols")
    p.add_argument("--modes", default="mem,scan", help="mem (grid preloaded), scan (grid read inside the timing)")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--max-foreign", type=float, default=0.10)
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--grid-file", help=argparse.SUPPRESS)
    p.add_argument("--query-file", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    import polars as pl

    _, grid = common.build_grid(args)
    grid_info = pl.scan_parquet(grid).select(pl.len(), pl.col("symbol").n_unique()).collect().row(0)
    sizes = [int(x) for x in args.queries.split(",")]
    modes = args.modes.split(",")
    engines = args.engines.split(",")
    outdir = Path(args.workdir) / "returns-out"
    outdir.mkdir(parents=True, exist_ok=True)
    results: dict[tuple, dict] = {}
    checks = []
    for n in sizes:
        qfile = build_queries(args, grid, n)
        common.warm_os_cache(grid, qfile)
        for mode in modes:
            for eng in engines:
                if not args.no_wait:
                    common.wait_for_quiet()
                out = outdir / f"{eng}_{mode}_{n}.parquet"
                common._log(f"running {eng} {mode} {n:,} queries ...")
                res = common.run_worker(SCRIPT, ["--worker", eng, "--mode", mode, "--grid-file", str(grid),
                                                 "--query-file", str(qfile), "--repeat", str(args.repeat),
                                                 "--max-foreign", str(args.max_foreign), "--out", str(out)])
                res["out"] = str(out)
                results[(n, mode, eng)] = res
                common._log(f"{eng} {mode} {n:,}: best {res['best_s']:.3f} s, peak RSS {common.mib(res['hwm_before_output_kb'])}")
            ref = results[(n, mode, engines[0])]["out"]
            for eng in engines[1:]:
                checks.append(compare(Path(ref), Path(results[(n, mode, eng)]["out"]), f"{n:,} {mode}: {engines[0]} vs {eng}"))
        if "mem" in modes and "scan" in modes:
            for eng in engines:
                checks.append(compare(Path(results[(n, "mem", eng)]["out"]), Path(results[(n, "scan", eng)]["out"]),
                                      f"{n:,}: {eng} mem vs scan"))

    # ------------------------------------------------------------------ summary
    lines = ["=" * 110]
    lines.append(f"RETURNS BENCHMARK: ReturnsEngine(grid).query(q, pl.col('t'), '{DURATION}', '{TOLERANCE}').collect() "
                 "vs pandas merge_asof vs DuckDB ASOF JOIN")
    lines.append(common.machine_line())
    lines.append(common.versions_line())
    lines.append(f"backend: {grid.name}: {grid_info[0]:,} grid rows, {grid_info[1]} symbols (first peg only)")
    lines.append(f"queries: random symbol among the grid's + 5 unknown ({args.unknown_share:.0%} of rows), random µs "
                 f"time in {args.day}; query symbol dtype {args.query_symbol}; queries preloaded in memory for every engine")
    lines.append("modes: mem = grid preloaded in the engine's memory (read NOT timed); "
                 "scan = grid read from parquet INSIDE the timed region")
    lines.append(f"each engine: own subprocess, 1 untimed warm-up run, best of {args.repeat} clean timed runs; "
                 "peak RSS = worker VmHWM (interpreter + preloaded inputs included; 'base' = RSS before the timed work)")
    lines.append("-" * 110)
    lines.append(f"{'queries':>11s} {'mode':5s} {'engine':8s} {'best':>9s} {'cpu':>7s} {'clean':>6s} {'peak RSS':>11s} "
                 f"{'peak anon':>11s} {'base':>10s}  {'polars/this':>11s}")
    for (n, mode, eng), r in results.items():
        pol = results.get((n, mode, "polars"))
        ratio = f"{pol['best_s'] / r['best_s']:10.2f}x" if pol else ""
        lines.append(f"{n:>11,} {mode:5s} {eng:8s} {r['best_s']:8.3f}s {r['best_cpu_s']:6.2f}s "
                     f"{r['clean_runs']:>3d}/{len(r['runs']):<2d} {common.mib(r['hwm_before_output_kb']):>11s} "
                     f"{common.mib(r['peak_anon_kb']):>11s} {common.mib(r['base_rss_kb']):>10s}  {ratio}")
    lines.append("-" * 110)
    for c in checks:
        if "return_max_abs_diff" in c:
            lines.append(f"check {c['label']:32s}: {'OK' if c['ok'] else 'MISMATCH'}  rows {c['rows'][0]:,}, "
                         f"non-null returns {c['non_null_returns']:,}, return null-pattern mismatches {c['return_null_mismatch']}, "
                         f"max |Δreturn| {c['return_max_abs_diff']:.1e}, lag mismatches {c['lag_null_mismatch'] + c['lag_value_mismatch']}")
        else:
            lines.append(f"check {c['label']:32s}: MISMATCH rows {c['rows']}")
    lines.append("-" * 110)
    for n in sizes:
        for mode in modes:
            bases = [(e, results[(n, mode, e)]) for e in BASELINES if (n, mode, e) in results]
            if not bases:
                continue
            be, br = min(bases, key=lambda x: x[1]["best_s"])
            for pe in ("polars", "polars-fast"):
                if (n, mode, pe) not in results:
                    continue
                pol = results[(n, mode, pe)]
                speedup = br["best_s"] / pol["best_s"]
                lines.append(f"{n:>11,} queries, {mode:4s}: {pe:11s} {pol['best_s']:.3f} s vs faster baseline {be} "
                             f"{br['best_s']:.3f} s -> {pe}/baseline {pol['best_s'] / br['best_s']:.2f}x, speed-up "
                             f"{speedup:.2f}x (target >= 2x: {'MET' if speedup >= 2 else 'NOT MET'}); peak RSS {pe} "
                             f"{common.mib(pol['hwm_before_output_kb'])}, {be} {common.mib(br['hwm_before_output_kb'])}")
    lines.append("=" * 110)
    print("\n".join(lines))
    (Path(args.workdir) / "returns_bench_last.json").write_text(json.dumps(
        {"results": {f"{k[0]}/{k[1]}/{k[2]}": v for k, v in results.items()}, "checks": checks}, indent=1, default=str))


if __name__ == "__main__":
    main()
