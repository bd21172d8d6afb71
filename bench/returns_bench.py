"""Returns benchmark: ``ReturnsEngine(pl.scan_parquet(grid)).query(q, pl.col("t"), "10m", "30s").collect()``
vs pandas ``merge_asof`` and DuckDB ``ASOF JOIN``, same inputs, same rounds.

Backend: the 5 s grid of the 20M-trade synthetic day, first peg only (USDT: 2.48M rows, 300
symbols), one parquet file as a grid partition is (rows by symbol then time), **read from the
file inside the timed work** by every engine (polars ``scan_parquet``; pandas ``read_parquet``
of the 3 needed columns; DuckDB ``read_parquet``). Queries: ``--queries`` sizes (default 1M and
10M) of random symbols among the grid's plus 5 unknown ones (1 %), random µs times within the
day; columns ``symbol`` (String) and ``t``; in memory before the timing for every engine.

Every engine computes SPEC.md "Marks and returns" (mark = the symbol's last grid row with
``last_trade_time <= t``, ties to the last row; fair price counts within 30 s; return =
fair(t + 10m) / fair(t) − 1; ``max_tick_to_query_lag`` the larger existing lag; every query row
kept, in order), to an in-memory result in query order. pandas: both ``merge_asof`` on integer
symbol codes after stable sorts, arithmetic in numpy, order restored by index; DuckDB: two
``ASOF LEFT JOIN`` and ``ORDER BY rid``, fetched as a ``pyarrow.Table``. Outputs are compared
after the rounds (identical returns, lags and null pattern)::

    .venv/bin/python bench/returns_bench.py --queries 1000000,10000000 --rounds 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SCRIPT = Path(__file__).resolve()
DURATION = "10m"
TOLERANCE = "30s"
DURATION_US = 600_000_000
TOLERANCE_US = 30_000_000
ENGINES = ("polars", "pandas", "duckdb")


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
    q = pl.DataFrame({"symbol": pl.Series(names[idx], dtype=pl.String), "t": pl.Series(t, dtype=pl.Int64).cast(pl.Datetime("us"))})
    if args.query_symbol == "enum":
        q = q.with_columns(pl.col("symbol").cast(pl.Enum(symbols + unknown)))
    q.write_parquet(path)
    return path


# --------------------------------------------------------------------------- engines (worker side)


def polars_work(grid_file: str, query_file: str):
    import polars as pl

    from mnemo_assets.engines import ReturnsEngine

    q = pl.read_parquet(query_file)

    def run():
        return ReturnsEngine(pl.scan_parquet(grid_file)).query(q, pl.col("t"), DURATION, TOLERANCE).collect()

    def to_check(res):
        return res.select(pl.col("symbol").cast(pl.String), "t", pl.col("max_tick_to_query_lag").dt.total_microseconds().alias("lag_us"), "return")

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
        right = pd.DataFrame(
            {"sym": g["symbol"].cat.codes.to_numpy()[order].astype(np.int32), "mt": mt[order], "fair": g["vwap_total_by_base"].to_numpy()[order]}
        )
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
        return df.select(
            pl.col("symbol").cast(pl.String),
            pl.col("t").cast(pl.Datetime("us")),
            pl.col("max_tick_to_query_lag").cast(pl.Duration("us")).dt.total_microseconds().alias("lag_us"),
            pl.col("return").fill_nan(None),
        )

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
    con.execute(
        f"CREATE TABLE queries AS SELECT row_number() OVER () - 1 AS rid, CAST(symbol AS VARCHAR) AS symbol, t FROM read_parquet('{query_file}')"
    )
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

        return pl.from_arrow(res).select(
            pl.col("symbol").cast(pl.String), pl.col("t").cast(pl.Datetime("us")), pl.col("lag_us").cast(pl.Int64), pl.col("return")
        )

    return run, to_check


def worker(args: argparse.Namespace) -> None:
    work = {"polars": polars_work, "pandas": pandas_work, "duckdb": duckdb_work}[args.worker]
    run, to_check = work(args.grid_file, args.query_file, "scan") if args.worker != "polars" else work(args.grid_file, args.query_file)

    def describe(res) -> dict:
        to_check(res).write_parquet(args.out)
        return {"rows": len(res)}

    common.measure(run, describe=describe)


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
    out["ok"] = (
        out["same_query_columns"]
        and out["return_null_mismatch"] == 0
        and out["return_max_abs_diff"] <= 1e-12
        and out["lag_null_mismatch"] == 0
        and out["lag_value_mismatch"] == 0
    )
    return out


# --------------------------------------------------------------------------- parent side


def run(args: argparse.Namespace, sizes: list[int], engines=ENGINES) -> dict:
    import polars as pl

    _, grid = common.build_grid(args)
    grid_rows = pl.scan_parquet(grid).select(pl.len()).collect().item()
    outdir = Path(args.workdir) / "returns-out"
    outdir.mkdir(parents=True, exist_ok=True)
    out = {"grid": str(grid), "grid_rows": grid_rows, "sizes": {}}
    for n in sizes:
        qfile = build_queries(args, grid, n)
        common.warm_os_cache(grid, qfile)
        jobs = {
            e: (SCRIPT, ["--worker", e, "--grid-file", str(grid), "--query-file", str(qfile), "--out", str(outdir / f"{e}_{n}.parquet")])
            for e in engines
        }
        res = common.interleaved(jobs, args.rounds)
        checks = {e: compare(outdir / f"polars_{n}.parquet", outdir / f"{e}_{n}.parquet", f"{n:,}: polars vs {e}") for e in engines if e != "polars"}
        out["sizes"][n] = {"results": res, "checks": checks}
    return out


def summary(out: dict) -> list[str]:
    lines = [f"returns: backend {Path(out['grid']).name} ({out['grid_rows']:,} rows) read inside the timing"]
    for n, x in out["sizes"].items():
        r = x["results"]
        pol = r["polars"]
        for e, v in r.items():
            lines.append(
                f"  {n:>11,} {e:7s} median {v['wall_s']:7.3f} s  cpu {v['cpu_s']:6.2f} s  peak {v['hwm_kb'] / 2**20:5.2f} GiB"
                f"  polars/this {pol['wall_s'] / v['wall_s']:5.2f}x (cpu {pol['cpu_s'] / v['cpu_s']:5.2f}x)  load {v['load']:.1f}"
            )
        for c in x["checks"].values():
            lines.append(
                f"  check {c['label']}: {'OK' if c['ok'] else 'MISMATCH'} non-null returns {c.get('non_null_returns')}, "
                f"max |Δreturn| {c.get('return_max_abs_diff')}, lag mismatches "
                f"{c.get('lag_null_mismatch', 0) + c.get('lag_value_mismatch', 0)}"
            )
    return lines


def parser() -> argparse.ArgumentParser:
    p = common.add_common_args(argparse.ArgumentParser(description="ReturnsEngine vs pandas merge_asof vs DuckDB ASOF"))
    p.add_argument("--queries", default="1000000,10000000", help="comma list of query counts (default 1M,10M)")
    p.add_argument("--query-symbol", choices=("string", "enum"), default="string", help="query symbol dtype")
    p.add_argument("--unknown-share", type=float, default=0.01, help="share of queries on unknown symbols")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--grid-file", help=argparse.SUPPRESS)
    p.add_argument("--query-file", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.worker:
        worker(args)
        return
    out = run(args, [int(x) for x in args.queries.split(",")], args.engines.split(","))
    print("\n".join(summary(out)))


if __name__ == "__main__":
    main()
