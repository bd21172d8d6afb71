"""Grid benchmark: the stored trades partition of a day → its 5 s grid, polars vs DuckDB.

Input: the synthetic day stored exactly as the trades asset stores it (``common.build_trades``:
pairs in ``(symbol, peg)`` order, each sorted by ``(time, trade_id)``, one row group per pair).
Engines, each given the same file, all pegs, same 19 columns, rows in ``(symbol, peg, time)``
order, in memory at the end:

* ``polars``  : the library, ``mnemo_assets.clustered.grid_from_parquet(file, "5s")``;
* ``general`` : the library's general path, ``last_trade_grid(pl.scan_parquet(file), "5s").collect()``
  (what ran before, and what any non-clustered file takes);
* ``duckdb``  : one SQL query over ``read_parquet(file)`` (hash aggregate; exact open/close by
  ``arg_min/arg_max(price, epoch_us(time)::HUGEINT << 64 | trade_id)``, the fastest exact key
  found), fetched as a ``pyarrow.Table``;
* ``floor``   : polars decoding the six value columns the grid needs, nothing else.

Outputs are checked against each other after the rounds (same rows and order, every non-sum
column identical, sums within 1e-12). Usage::

    .venv/bin/python bench/grid_bench.py --trades 20000000 --symbols 300 --rounds 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SCRIPT = Path(__file__).resolve()
INTERVAL_US = 5_000_000
ENGINES = ("polars", "general", "duckdb", "floor")
VALUE_COLUMNS = ["trade_id", "price", "qty", "quote_qty", "time", "is_buyer_maker"]

DUCKDB_SQL = """
SELECT symbol, CAST(b AS DATE) AS date, b AS time, peg_symbol, open, high, low, close,
       volume_base, volume_quote, trade_count, last_trade_time,
       taker_buy_volume_quote, taker_sell_volume_quote,
       CASE WHEN n_buy > 0 THEN taker_buy_volume_quote / taker_buy_volume_base END AS vwap_taker_buy,
       CASE WHEN n_sell > 0 THEN taker_sell_volume_quote / taker_sell_volume_base END AS vwap_taker_sell,
       volume_quote / volume_base AS vwap_total_by_base,
       taker_buy_volume_base, taker_sell_volume_base
FROM (
    SELECT symbol, peg_symbol,
           make_timestamp((epoch_us(time) // {I}) * {I}) AS b,
           arg_min(price, k) AS open, max(price) AS high, min(price) AS low, arg_max(price, k) AS close,
           sum(qty) AS volume_base, sum(quote_qty) AS volume_quote, count(*)::UINTEGER AS trade_count,
           max(time) AS last_trade_time,
           sum(CASE WHEN NOT is_buyer_maker THEN quote_qty ELSE 0.0 END) AS taker_buy_volume_quote,
           sum(CASE WHEN is_buyer_maker THEN quote_qty ELSE 0.0 END) AS taker_sell_volume_quote,
           sum(CASE WHEN NOT is_buyer_maker THEN qty ELSE 0.0 END) AS taker_buy_volume_base,
           sum(CASE WHEN is_buyer_maker THEN qty ELSE 0.0 END) AS taker_sell_volume_base,
           count_if(NOT is_buyer_maker) AS n_buy, count_if(is_buyer_maker) AS n_sell
    FROM (SELECT *, (epoch_us(time)::HUGEINT * 18446744073709551616 + trade_id::HUGEINT) AS k FROM read_parquet('{FILE}'))
    GROUP BY ALL
)
ORDER BY symbol, peg_symbol, time
"""


def work(engine: str, file: str):
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads = {common.os.cpu_count()}")
        sql = DUCKDB_SQL.format(I=INTERVAL_US, FILE=file.replace("'", "''"))
        return lambda: con.sql(sql).to_arrow_table()
    import polars as pl

    if engine == "polars":
        from mnemo_assets.clustered import grid_from_parquet

        return lambda: grid_from_parquet(file, "5s")
    if engine == "general":
        from mnemo_assets.grids import last_trade_grid

        return lambda: last_trade_grid(pl.scan_parquet(file), "5s").collect()
    if engine == "floor":
        return lambda: pl.read_parquet(file, columns=VALUE_COLUMNS)
    raise ValueError(engine)


def worker(args: argparse.Namespace) -> None:
    fn = work(args.worker, args.file)

    def describe(res) -> dict:
        if args.out:
            import polars as pl

            (pl.from_arrow(res) if args.worker == "duckdb" else res).write_parquet(args.out)
        return {"rows": res.num_rows if args.worker == "duckdb" else res.height}

    common.measure(fn, describe=describe)


def compare(a_path: str, b_path: str) -> dict:
    import numpy as np
    import polars as pl

    sums = [
        "volume_base",
        "volume_quote",
        "taker_buy_volume_quote",
        "taker_sell_volume_quote",
        "vwap_taker_buy",
        "vwap_taker_sell",
        "vwap_total_by_base",
        "taker_buy_volume_base",
        "taker_sell_volume_base",
    ]
    a = pl.read_parquet(a_path).with_columns(pl.col("symbol").cast(pl.String))
    b = pl.read_parquet(b_path).with_columns(pl.col("symbol").cast(pl.String))
    if a.height != b.height:
        return {"ok": False, "why": f"rows {a.height} vs {b.height}"}
    exact = [c for c in a.columns if c not in sums]
    mismatched = [c for c in exact if not a.get_column(c).equals(b.get_column(c).cast(a.schema[c]), check_names=False)]
    rel, bits = 0.0, 0
    for c in sums:
        x, y = a.get_column(c).to_numpy(), b.get_column(c).to_numpy()
        both = ~(np.isnan(x) | np.isnan(y))
        if (np.isnan(x) != np.isnan(y)).any():
            mismatched.append(c)
        bits += int((x[both].view("u8") != y[both].view("u8")).sum())
        d = np.abs(x[both] - y[both]) / np.maximum(np.abs(y[both]), 1e-300)
        rel = max(rel, float(d.max()) if d.size else 0.0)
    return {
        "ok": not mismatched and rel <= 1e-12,
        "rows": a.height,
        "mismatched": mismatched,
        "max_rel": rel,
        "sum_cells_differing_in_bits": bits,
        "sum_cells": a.height * len(sums),
    }


def run(args: argparse.Namespace, engines=ENGINES) -> dict:
    trades = common.build_trades(args)
    info = common.describe_inputs(args)
    common.warm_os_cache(trades)
    outdir = Path(args.workdir) / "grid-out"
    outdir.mkdir(parents=True, exist_ok=True)
    jobs = {}
    for e in engines:
        wargs = ["--worker", e, "--file", str(trades)]
        if e != "floor":
            wargs += ["--out", str(outdir / f"{e}_{args.trades}.parquet")]
        jobs[e] = (SCRIPT, wargs)
    res = common.interleaved(jobs, args.rounds)
    checks = {}
    for other in ("general", "duckdb"):
        if other in res and "polars" in res:
            checks[other] = compare(str(outdir / f"polars_{args.trades}.parquet"), str(outdir / f"{other}_{args.trades}.parquet"))
    return {"input": info, "file": str(trades), "results": res, "checks": checks}


def summary(out: dict, label: str) -> list[str]:
    r = out["results"]
    info = out["input"]
    duck = r["duckdb"]["wall_s"]
    lines = [
        f"grid, {label}: {info.get('rows', 0):,} trades, {info.get('pairs')} pairs, {info.get('row_groups')} row groups, "
        f"{info.get('file_bytes', 0) / 2**20:.0f} MiB"
    ]
    for e, x in r.items():
        lines.append(
            f"  {e:8s} median {x['wall_s']:7.3f} s  cpu {x['cpu_s']:6.2f} s  peak {x['hwm_kb'] / 2**20:5.2f} GiB  "
            f"vs duckdb {x['wall_s'] / duck:5.2f}x (cpu {x['cpu_s'] / r['duckdb']['cpu_s']:5.2f}x)  load {x['load']:.1f}  n={x['n']}"
        )
    for k, c in out["checks"].items():
        lines.append(f"  check polars vs {k}: {'OK' if c['ok'] else 'MISMATCH'} {c}")
    return lines


def parser() -> argparse.ArgumentParser:
    p = common.add_common_args(argparse.ArgumentParser(description="stored trades partition -> 5 s grid: polars vs DuckDB"))
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.worker:
        worker(args)
        return
    out = run(args, args.engines.split(","))
    print("\n".join(summary(out, f"{args.trades:,} trades")))


if __name__ == "__main__":
    main()
