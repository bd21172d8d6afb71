"""Ingest benchmark: archive zips of a day → the normalised, stored trades partition.

Input: the spot zips of the synthetic day's first pairs (``(symbol, peg)`` order) until
``--ingest-trades`` trades (default 5M), as ``SyntheticArchive`` serves them (checksums
verified when fetched, untimed). Engines, each timed from the zips (or CSVs) to the end:

* ``polars``: the library, what the trades asset does per day: for each pair
  ``binance.quality.read_pair_day(archive_file)`` (file and member names checked, unzip, CSV
  parse with the layout's schema, header and time-unit detection, value checks (finite,
  positive), out-of-day rows, duplicate ids (identical dropped, conflicting counted), id gaps,
  sort by (time, id) when needed, the ledger row) and ``storage.parquet.stage_partition`` of
  the pairs as batches (one row group per pair, zstd, statistics, symbol footer, fsync,
  content hash);
* ``duckdb``: unzip each member to a tmpfs file (Python ``zipfile``, DuckDB reads no zip),
  then one ``COPY (SELECT ... FROM read_csv([...], columns=...)) TO parquet (zstd)``: parse and
  normalise (symbol/peg per file, µs times, booleans) in file order, no checks;
* ``floor``: polars ``read_csv`` of the same CSVs (already unzipped, untimed) with the
  layout's schema, nothing else.

Reported: median wall and CPU time, and trades per CPU-second (per core)::

    .venv/bin/python bench/ingest_bench.py --ingest-trades 5000000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SCRIPT = Path(__file__).resolve()
ENGINES = ("polars", "duckdb", "floor")


def build(args: argparse.Namespace) -> Path:
    """``manifest.json`` of the chosen zips (path, pair, symbol, peg, trades) and their CSVs."""
    folder = Path(args.workdir) / f"ingest_n{args.trades}_s{args.symbols}_seed{args.seed}_{args.ingest_trades}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        return manifest
    folder.mkdir(parents=True, exist_ok=True)
    arch, infos, _ = common._pick_pairs(args, common.describe_inputs(args).get("trades_per_day_knob", args.trades))
    chosen, total = [], 0
    for info in sorted(infos, key=lambda i: (i.symbol, i.peg)):
        f = arch.fetch("spot", info.pair, args.day)
        n = arch._count(info, args.day)
        csv = folder / (Path(f.path).stem + ".csv")
        with zipfile.ZipFile(f.path) as zf:
            csv.write_bytes(zf.read(zf.infolist()[0]))
        chosen.append(
            {"zip": str(f.path), "csv": str(csv), "pair": info.pair, "symbol": info.symbol, "peg": info.peg, "sha256": f.sha256, "trades": n}
        )
        total += n
        if total >= args.ingest_trades:
            break
    manifest.write_text(json.dumps({"day": args.day.isoformat(), "pairs": chosen, "trades": total}, indent=1))
    return manifest


def work(engine: str, manifest: Path, pegs: tuple[str, ...]):
    m = json.loads(manifest.read_text())
    from datetime import date

    day = date.fromisoformat(m["day"])
    pairs = m["pairs"]
    if engine == "polars":
        from mnemo_assets.binance.archive import ArchiveFile
        from mnemo_assets.binance.parse import TRADES_SCHEMA
        from mnemo_assets.binance.quality import read_pair_day
        from mnemo_assets.storage.parquet import Batches, discard, stage_partition

        files = [ArchiveFile("spot", p["pair"], day, Path(p["zip"]), p["sha256"]) for p in pairs]
        root = tempfile.mkdtemp(prefix="ingest-", dir=str(manifest.parent))

        def run():
            rows = []

            def batches():
                for f in files:
                    pair_day = read_pair_day(f, pegs)
                    rows.append(pair_day.row)
                    if pair_day.publishable:
                        yield pair_day.trades

            staged = stage_partition(Batches(TRADES_SCHEMA, batches()), root, "binance/trades/spot", day)
            assert all(r["status"] in ("ok", "degraded") for r in rows), rows
            discard(staged)
            return staged.rows

        return run
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads = {os.cpu_count()}")
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None

        def run():
            tmp = tempfile.mkdtemp(prefix="ingest-duck-", dir=shm)
            try:
                csvs = []
                for p in pairs:
                    with zipfile.ZipFile(p["zip"]) as zf:
                        out = os.path.join(tmp, Path(p["csv"]).name)
                        with zf.open(zf.infolist()[0]) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 22)
                    csvs.append(out)
                names = ", ".join("'" + c + "'" for c in csvs)
                meta = " UNION ALL ".join(
                    f"SELECT '{c}' AS filename, '{p['symbol']}' AS symbol, '{p['peg']}' AS peg_symbol" for c, p in zip(csvs, pairs, strict=True)
                )
                out = os.path.join(tmp, "trades.parquet")
                con.execute(f"""
                    COPY (
                        SELECT m.symbol, m.peg_symbol, t.id AS trade_id, t.price, t.qty, t.quote_qty,
                               make_timestamp(t.time) AS time, t.is_buyer_maker
                        FROM read_csv([{names}], header = false, filename = true,
                             columns = {{'id': 'BIGINT', 'price': 'DOUBLE', 'qty': 'DOUBLE', 'quote_qty': 'DOUBLE',
                                        'time': 'BIGINT', 'is_buyer_maker': 'BOOLEAN', 'best': 'VARCHAR'}}) t
                        JOIN ({meta}) m USING (filename)
                    ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
                """)
                return con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

        return run
    if engine == "floor":
        import polars as pl

        schema = {
            "id": pl.Int64,
            "price": pl.Float64,
            "qty": pl.Float64,
            "quote_qty": pl.Float64,
            "time": pl.Int64,
            "is_buyer_maker": pl.String,
            "is_best_match": pl.String,
        }

        def run():
            return sum(pl.read_csv(p["csv"], has_header=False, schema=schema).height for p in pairs)

        return run
    raise ValueError(engine)


def worker(args: argparse.Namespace) -> None:
    fn = work(args.worker, Path(args.manifest), tuple(args.pegs.split(",")))
    common.measure(fn, describe=lambda rows: {"rows": int(rows)})


def run(args: argparse.Namespace, engines=ENGINES) -> dict:
    common.build_trades(args)  # the archive's scale knob
    manifest = build(args)
    m = json.loads(manifest.read_text())
    common.warm_os_cache(*[Path(p["zip"]) for p in m["pairs"]], *[Path(p["csv"]) for p in m["pairs"]])
    jobs = {e: (SCRIPT, ["--worker", e, "--manifest", str(manifest), "--pegs", args.pegs]) for e in engines}
    res = common.interleaved(jobs, args.rounds)
    rows = {e: r["runs"][-1].get("rows") for e, r in res.items()}
    return {"trades": m["trades"], "pairs": len(m["pairs"]), "results": res, "rows": rows}


def summary(out: dict) -> list[str]:
    r = out["results"]
    lines = [f"ingest: {out['trades']:,} trades in {out['pairs']} zips (rows written/read per engine: {out['rows']})"]
    for e, x in r.items():
        lines.append(
            f"  {e:7s} median {x['wall_s']:7.3f} s  cpu {x['cpu_s']:6.2f} s  {out['trades'] / x['cpu_s'] / 1e6:5.2f} M trades/cpu-s  "
            f"peak {x['hwm_kb'] / 2**20:5.2f} GiB  load {x['load']:.1f}"
        )
    pol = r["polars"]["cpu_s"]
    for e in ("duckdb", "floor"):
        if e in r:
            lines.append(
                f"  polars / {e} (per-core throughput ratio, CPU time): {pol / r[e]['cpu_s']:.2f}x; wall {r['polars']['wall_s'] / r[e]['wall_s']:.2f}x"
            )
    return lines


def parser() -> argparse.ArgumentParser:
    p = common.add_common_args(argparse.ArgumentParser(description="archive zips -> stored trades partition"))
    p.add_argument("--ingest-trades", type=int, default=5_000_000, help="trades in the chosen zips (default 5M)")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--manifest", help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.worker:
        worker(args)
        return
    print("\n".join(summary(run(args, args.engines.split(",")))))


if __name__ == "__main__":
    main()
