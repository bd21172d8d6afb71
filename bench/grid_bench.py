"""Grid benchmark: ``last_trade_grid(pl.scan_parquet(file), "5s").collect()`` vs DuckDB.

Same synthetic day (one parquet file), same run, each engine in its own fresh subprocess:

* ``polars``      : the library, ``mnemo_assets.grids.last_trade_grid`` (streaming engine: the
                    default of ``LazyFrame.collect`` in polars 2), output a ``pl.DataFrame``;
* ``duckdb``      : one SQL query over ``read_parquet(file)`` computing the same 19 columns in the
                    same row order (``ORDER BY symbol, peg_symbol, time``), fetched as a
                    ``pyarrow.Table`` (``.to_arrow_table()``); open/close exact via
                    ``arg_min/arg_max(price, epoch_us(time)::HUGEINT * 2^64 + trade_id)``;
* ``floor8`` / ``floor5``: polars reading the 8 columns the grid reads / 5 of them
                    (symbol, price, qty, quote_qty, time) into memory, nothing else;
* ``variant:<name>`` (``--variants``, default ``group-raw+n_sell``): bench-local rewrites of
                    the grid (``bench/grid_variants.py``), same output. ``bench/grid_ab.py`` times
                    them interleaved in one process, which resolves their small differences far
                    better than these one-after-the-other runs on a shared machine.

The outputs of ``polars`` and ``duckdb`` (and of each variant) are checked against each other
after the timed runs. Usage::

    .venv/bin/python bench/grid_bench.py                       # 20M trades, 300 symbols, 3 runs
    .venv/bin/python bench/grid_bench.py --trades 2000000 --symbols 50 --repeat 2   # quick
    .venv/bin/python bench/grid_bench.py --variants all        # also every knob of grid_variants
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

SCRIPT = Path(__file__).resolve()
INTERVAL_US = 5_000_000

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
           arg_min(price, {KEY}) AS open,
           max(price) AS high,
           min(price) AS low,
           arg_max(price, {KEY}) AS close,
           sum(qty) AS volume_base,
           sum(quote_qty) AS volume_quote,
           count(*)::UINTEGER AS trade_count,
           max(time) AS last_trade_time,
           sum(CASE WHEN NOT is_buyer_maker THEN quote_qty ELSE 0.0 END) AS taker_buy_volume_quote,
           sum(CASE WHEN is_buyer_maker THEN quote_qty ELSE 0.0 END) AS taker_sell_volume_quote,
           sum(CASE WHEN NOT is_buyer_maker THEN qty ELSE 0.0 END) AS taker_buy_volume_base,
           sum(CASE WHEN is_buyer_maker THEN qty ELSE 0.0 END) AS taker_sell_volume_base,
           count_if(NOT is_buyer_maker) AS n_buy,
           count_if(is_buyer_maker) AS n_sell
    FROM read_parquet('{FILE}')
    GROUP BY ALL
)
ORDER BY symbol, peg_symbol, time
"""
#: exact (time, trade_id) order as one HUGEINT (the fastest exact key tried; a struct key
#: ``(time, trade_id)`` took 4.1-4.4 s instead of 3.0-3.2 s here)
DUCKDB_KEYS = {
    "hugeint": "(epoch_us(time)::HUGEINT * 18446744073709551616 + trade_id::HUGEINT)",
    "struct": "(time, trade_id)",
}


# --------------------------------------------------------------------------- worker side


def _work(engine: str, file: str, variant: str | None, duckdb_key: str):
    """A zero-argument callable doing one run of ``engine`` and returning its result."""
    if engine in ("polars", "floor8", "floor5") or engine.startswith("variant"):
        import polars as pl

        if engine == "polars":
            from mnemo_assets.grids import last_trade_grid

            return lambda: last_trade_grid(pl.scan_parquet(file), "5s").collect()
        if engine == "floor8":
            cols = ["symbol", "peg_symbol", "trade_id", "price", "qty", "quote_qty", "time", "is_buyer_maker"]
            return lambda: pl.scan_parquet(file).select(cols).collect()
        if engine == "floor5":
            return lambda: pl.scan_parquet(file).select("symbol", "price", "qty", "quote_qty", "time").collect()
        from grid_variants import VARIANTS, last_trade_grid_variant

        kw = VARIANTS[variant]
        return lambda: last_trade_grid_variant(pl.scan_parquet(file), "5s", **kw).collect()
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads = {common.os.cpu_count()}")
        sql = DUCKDB_SQL.format(I=INTERVAL_US, KEY=DUCKDB_KEYS[duckdb_key], FILE=file.replace("'", "''"))
        return lambda: con.sql(sql).to_arrow_table()
    raise ValueError(engine)


def worker(args: argparse.Namespace) -> None:
    base_rss = 0
    fn = _work(args.worker, args.file, args.variant, args.duckdb_key)
    base_rss = common.current_rss_kb()  # interpreter + imports, before any work
    with common.RssSampler() as sampler:
        timing = common.time_runs(fn, args.repeat, max_foreign=args.max_foreign)
    hwm = common._status_kb("VmHWM")
    rows = None
    if args.out:  # untimed, after the peak was read: the result for the parent's cross-check
        res = fn()
        if args.worker == "duckdb":
            import polars as pl

            res = pl.from_arrow(res)
        rows = res.height
        res.write_parquet(args.out)
    else:
        rows = fn().height
    common.worker_report(timing, base_rss, sampler, rows=rows, hwm_before_output_kb=hwm)


# --------------------------------------------------------------------------- checks


def compare(ref_path: Path, other_path: Path, label: str, sort_other: bool = False) -> dict:
    """Same rows in the same order; exact open/high/low/close/count/times; sums within 1e-9.
    ``sort_other``: sort the other output first (profiling variants that skip the final sort)."""
    import polars as pl

    keys = ["symbol", "peg_symbol", "time"]
    a = pl.read_parquet(ref_path).with_columns(pl.col("symbol").cast(pl.String))
    b = pl.read_parquet(other_path)
    if sort_other:
        b = b.sort(keys)
    b = b.with_columns(pl.col("symbol").cast(pl.String))
    out = {"label": label, "rows": (a.height, b.height)}
    out["same_row_count"] = a.height == b.height
    out["same_keys"] = (a.join(b, on=keys, how="anti").height == 0) and (b.join(a, on=keys, how="anti").height == 0)
    out["same_order"] = out["same_row_count"] and a.select(keys).equals(b.select(keys))
    out["sum_trade_count"] = (int(a["trade_count"].sum()), int(b["trade_count"].sum()))
    out["sum_volume_base"] = (float(a["volume_base"].sum()), float(b["volume_base"].sum()))
    j = a.join(b, on=keys, how="inner", suffix="_b")
    exact = ["date", "open", "high", "low", "close", "trade_count", "last_trade_time"]
    out["exact_mismatches"] = {c: int((j[c].cast(b[c].dtype) != j[c + "_b"]).sum()) for c in exact}
    floats = ["volume_base", "volume_quote", "taker_buy_volume_quote", "taker_sell_volume_quote", "vwap_taker_buy",
              "vwap_taker_sell", "vwap_total_by_base", "taker_buy_volume_base", "taker_sell_volume_base"]
    rel = {}
    nulls = {}
    for c in floats:
        x, y = j[c], j[c + "_b"]
        nulls[c] = int((x.is_null() != y.is_null()).sum())
        d = ((x - y).abs() / x.abs().clip(lower_bound=1e-300)).max()
        rel[c] = float(d or 0.0)
    out["null_mismatches"] = {c: v for c, v in nulls.items() if v}
    out["max_rel_diff"] = max(rel.values())
    out["dtypes_equal"] = a.schema == b.schema
    out["ok"] = (
        out["same_row_count"] and out["same_keys"] and out["same_order"]
        and out["sum_trade_count"][0] == out["sum_trade_count"][1]
        and abs(out["sum_volume_base"][0] - out["sum_volume_base"][1]) <= 1e-9 * abs(out["sum_volume_base"][0])
        and not any(out["exact_mismatches"].values()) and not out["null_mismatches"] and out["max_rel_diff"] <= 1e-9
    )
    return out


# --------------------------------------------------------------------------- parent side


def main() -> None:
    p = common.add_common_args(argparse.ArgumentParser(description="polars last_trade_grid vs DuckDB"))
    p.add_argument("--variants", default="group-raw+n_sell",
                   help="comma list of bench/grid_variants.py VARIANTS to time too ('all', 'none'; "
                        "default group-raw+n_sell)")
    p.add_argument("--duckdb-key", choices=sorted(DUCKDB_KEYS), default="hugeint", help="DuckDB open/close key")
    p.add_argument("--max-foreign", type=float, default=0.10,
                   help="a timed run counts as clean when other processes used <= this × its wall time of CPU")
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine before each engine")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    from grid_variants import VARIANTS

    trades = common.build_trades(args)
    info = common.describe_inputs(args)
    warm = common.warm_os_cache(trades)
    outdir = Path(args.workdir) / "grid-out"
    outdir.mkdir(parents=True, exist_ok=True)

    variants = [] if args.variants == "none" else list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    engines = [("floor8", None), ("floor5", None), ("polars", None), ("duckdb", None)]
    engines += [(f"variant:{v}", v) for v in variants]
    results: dict[str, dict] = {}
    for name, variant in engines:
        if not args.no_wait:
            common.wait_for_quiet()
        out = None if name.startswith("floor") else str(outdir / f"{name.replace(':', '_')}.parquet")
        wargs = ["--worker", name.split(":")[0], "--file", str(trades), "--repeat", str(args.repeat),
                 "--duckdb-key", args.duckdb_key, "--max-foreign", str(args.max_foreign)]
        if variant:
            wargs += ["--variant", variant]
        if out:
            wargs += ["--out", out]
        common._log(f"running {name} ...")
        res = common.run_worker(SCRIPT, wargs)
        res["out"] = out
        results[name] = res
        common._log(f"{name}: best {res['best_s']:.3f} s, peak RSS {common.mib(res['hwm_before_output_kb'])}")

    checks = [compare(Path(results["polars"]["out"]), Path(results["duckdb"]["out"]), "polars vs duckdb")]
    for name, _ in engines:
        if name.startswith("variant:"):
            checks.append(compare(Path(results["polars"]["out"]), Path(results[name]["out"]), f"polars vs {name}",
                                  sort_other=name.startswith("variant:profile:")))

    # ------------------------------------------------------------------ summary
    pol, duck = results["polars"], results["duckdb"]
    lines = []
    lines.append("=" * 100)
    lines.append("GRID BENCHMARK: last_trade_grid(pl.scan_parquet(file), '5s').collect()  vs  DuckDB SQL on the same file")
    lines.append(common.machine_line())
    lines.append(common.versions_line())
    lines.append(f"input: {trades.name}  ({info.get('rows', 0):,} trades, {info.get('symbols')} symbols, "
                 f"{info.get('pairs')} (symbol, peg) pairs, {info.get('file_bytes', 0) / 2**20:.0f} MiB zstd parquet, "
                 f"row groups of {args.row_group_size:,}); OS cache warmed ({warm:.2f} s untimed read)")
    lines.append(f"each engine: own subprocess, 1 untimed warm-up run, best of {args.repeat} clean timed runs "
                 f"(clean = other processes used <= {args.max_foreign:.0%} of the run's wall time in CPU)")
    lines.append("peak RSS = the worker's VmHWM after its runs (interpreter + imports included; 'base' is the RSS "
                 "after imports); peak anon = sampled RssAnon (heap, no mmapped file pages)")
    lines.append("-" * 100)
    lines.append(f"{'engine':32s} {'best':>8s} {'cpu':>7s} {'clean':>6s} {'rows':>10s} {'peak RSS':>11s} "
                 f"{'peak anon':>11s} {'base':>9s}  {'vs duckdb':>9s}")
    for name, r in results.items():
        lines.append(
            f"{name:32s} {r['best_s']:7.3f}s {r['best_cpu_s']:6.2f}s {r['clean_runs']:>3d}/{len(r['runs']):<2d} "
            f"{r['rows']:>10,} {common.mib(r['hwm_before_output_kb']):>11s} {common.mib(r['peak_anon_kb']):>11s} "
            f"{common.mib(r['base_rss_kb']):>9s}  {r['best_s'] / duck['best_s']:8.2f}x")
    lines.append("-" * 100)
    for c in checks:
        lines.append(
            f"check {c['label']:38s}: {'OK' if c['ok'] else 'MISMATCH'}  rows {c['rows'][0]:,}/{c['rows'][1]:,}, "
            f"Σtrade_count {c['sum_trade_count'][0]:,}/{c['sum_trade_count'][1]:,}, "
            f"Σvolume_base rel.diff {abs(c['sum_volume_base'][0] - c['sum_volume_base'][1]) / abs(c['sum_volume_base'][0]):.1e}, "
            f"same keys+order {c['same_keys'] and c['same_order']}, exact cols mismatches {sum(c['exact_mismatches'].values())}, "
            f"null-pattern mismatches {sum(c['null_mismatches'].values())}, max rel diff floats {c['max_rel_diff']:.1e}")
    lines.append("-" * 100)
    ratio = pol["best_s"] / duck["best_s"]
    peak_gb = pol["hwm_before_output_kb"] / 2**20
    lines.append(f"polars (library)  : {pol['best_s']:.3f} s, peak RSS {common.mib(pol['hwm_before_output_kb'])}")
    lines.append(f"duckdb            : {duck['best_s']:.3f} s, peak RSS {common.mib(duck['hwm_before_output_kb'])}")
    lines.append(f"floor (read 8 cols): {results['floor8']['best_s']:.3f} s; read 5 cols: {results['floor5']['best_s']:.3f} s")
    lines.append(f"ratio polars/duckdb: {ratio:.2f}x  (target <= 0.70x at peak <= 2 GB: "
                 f"{'MET' if ratio <= 0.70 and peak_gb <= 2 else 'NOT MET'}; peak {peak_gb:.2f} GiB)")
    for name, r in results.items():
        if name.startswith("variant:"):
            lines.append(f"{name:18s}: {r['best_s']:.3f} s = {r['best_s'] / duck['best_s']:.2f}x duckdb, "
                         f"{r['best_s'] / pol['best_s']:.2f}x library, peak RSS {common.mib(r['hwm_before_output_kb'])}")
    lines.append("=" * 100)
    print("\n".join(lines))
    (Path(args.workdir) / "grid_bench_last.json").write_text(json.dumps({"results": results, "checks": checks}, indent=1,
                                                                       default=str))


if __name__ == "__main__":
    main()
