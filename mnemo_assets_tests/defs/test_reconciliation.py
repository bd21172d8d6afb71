"""Reconciliation with the exchange's 1m klines in real Dagster runs: each archive failure is
injected for real (the zip rewritten, its CHECKSUM recomputed, in a mirror written by
``SyntheticArchive.write_mirror(..., datasets=("trades", "klines"))``), caught and named in the
quality ledger and in the ``reconciles_with_klines`` check; blocking or not, as configured."""

from __future__ import annotations

import io
import shutil
import zipfile
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, materialize

from mnemo_assets.binance.archive import archive_key, checksum_line
from mnemo_assets.binance.synthetic import SyntheticArchive
from mnemo_assets.config import MarketSettings, ReconciliationSettings, Settings, SourceSettings, SyntheticSettings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.defs.trades import RECONCILIATION_CHECK
from mnemo_assets.storage.layout import partition_file, quality_dataset, trades_dataset
from mnemo_assets.storage.parquet import scan_days

SEED, N_PAIRS, TPD = 11, 8, 6000
GEN_START, GEN_END = date(2024, 12, 1), date(2025, 1, 3)
MARKETS = {"spot": ("USDT", "USDC"), "um": ("USDT", "USDC"), "cm": ("USD",)}


def settings_for(root: Path, blocking: bool = False, enabled: bool = True, **source) -> Settings:
    src = {"kind": "synthetic", "synthetic": SyntheticSettings(seed=SEED, n_pairs=N_PAIRS, trades_per_day=TPD, start=GEN_START)}
    src.update(source)
    return Settings(
        data_root=str(root),
        start_date=GEN_START,
        source=SourceSettings(**src),
        markets={m: MarketSettings(pegs=p) for m, p in MARKETS.items()},
        reconciliation=ReconciliationSettings(enabled=enabled, blocking=blocking),
    )


def run(settings: Settings, markets=("spot", "um", "cm"), **kwargs):
    d = build_definitions(settings)
    keys = [k for k in d.resolve_asset_graph().get_all_asset_keys() if k.path[1] in markets and k.path[-1].endswith(("_trades", "_quality"))]
    return materialize(list(d.assets), selection=keys, resources=d.resources, instance=DagsterInstance.ephemeral(), raise_on_error=False, **kwargs)


def ledger(root: Path, market: str, day: date) -> pl.DataFrame:
    return scan_days(root, quality_dataset(market), [day]).collect()


def check_evaluations(result, market: str) -> list:
    return [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == RECONCILIATION_CHECK and e.asset_key == AssetKey(["binance", market, f"{market}_trades"])
    ]


# ---------------------------------------------------------------- the synthetic default reconciles


def test_a_clean_synthetic_backfill_reconciles_every_minute(tmp_path):
    """Every market, days with listings and delistings, the last ms and first µs spot days."""
    root = tmp_path / "store"
    arch = SyntheticArchive(tmp_path / "probe", seed=SEED, n_pairs=N_PAIRS, trades_per_day=TPD, start=GEN_START, end=GEN_END)
    events = {(m, d) for m in ("spot", "um") for p in arch.universe(m) for d in (p.listed if p.new_listing else None, p.delisted) if d}
    assert any(d <= date(2024, 12, 10) for _, d in events)  # spot and USD-M list and delist in the first ten days
    result = run(settings_for(root), tags={"dagster/asset_partition_range_start": "2024-12-01", "dagster/asset_partition_range_end": "2024-12-10"})
    assert result.success
    result2 = run(settings_for(root), tags={"dagster/asset_partition_range_start": "2024-12-31", "dagster/asset_partition_range_end": "2025-01-01"})
    assert result2.success
    days = [GEN_START + timedelta(days=k) for k in range(10)] + [date(2024, 12, 31), date(2025, 1, 1)]
    seen_events = 0
    for market in ("spot", "um", "cm"):
        q = scan_days(root, quality_dataset(market), days).collect()
        assert q.height > 0 and (q["status"] == "ok").all() and (q["klines_status"] == "ok").all()
        assert (q["klines_minutes_differing"] == 0).all() and (q["klines_trades_difference"] == 0).all()
        assert q["klines_minutes_compared"].sum() > 1000 * q.height
        seen_events += q.filter(
            pl.struct("date", "pair").is_in(
                [
                    {"date": d, "pair": p.pair}
                    for p in arch.universe(market)
                    for d in (p.listed, p.delisted)
                    if d and (p.new_listing or d == p.delisted)
                ]
            )
        ).height
        # the µs day: spot trades and klines are in µs, and still reconcile
        assert q.filter(pl.col("date") == date(2025, 1, 1)).height > 0
        evaluations = check_evaluations(result, market) + check_evaluations(result2, market)
        assert len({e.partition for e in evaluations if e.partition}) == 12 and all(e.passed for e in evaluations)
    assert seen_events >= 2


# ---------------------------------------------------------------- injected failures


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A mirror of the synthetic archive (trades and klines) from 2024-12-30 to 2025-01-02."""
    arch = SyntheticArchive(tmp_path_factory.mktemp("gen"), seed=SEED, n_pairs=N_PAIRS, trades_per_day=TPD, start=GEN_START, end=GEN_END)
    root = tmp_path_factory.mktemp("mirror") / "m"
    arch.write_mirror(root, start=date(2024, 12, 30), end=date(2025, 1, 2), datasets=("trades", "klines"), workers=2)
    return root


@pytest.fixture
def mirror(pristine, tmp_path) -> Path:
    root = tmp_path / "mirror"
    shutil.copytree(pristine, root)
    return root


def read_member(path: Path) -> tuple[str, str]:
    with zipfile.ZipFile(path) as zf:
        (info,) = zf.infolist()
        return info.filename, zf.read(info).decode()


def rewrite(path: Path, text: str, member: str | None = None) -> None:
    """Replace a zip's CSV for real: a new zip (same member name unless given) and its CHECKSUM."""
    name, _ = read_member(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member or name, text)
    path.write_bytes(buf.getvalue())
    path.with_name(path.name + ".CHECKSUM").write_text(checksum_line(path.read_bytes(), path.name))


def edit_trades(root: Path, market: str, pair: str, day: date, edit) -> list[str]:
    """Rewrite a trades file with ``edit(rows, minute_of) -> rows`` (rows: split data lines,
    header kept); returns the original data lines."""
    path = root / archive_key(market, pair, day)
    _, text = read_member(path)
    lines = text.splitlines()
    header = [] if lines[0][0].isdigit() else lines[:1]
    rows = [x.split(",") for x in lines[len(header) :]]
    per_minute = 60_000_000 if market == "spot" and day >= date(2025, 1, 1) else 60_000

    def minute_of(row: list[str]) -> int:
        return int(row[4]) // per_minute

    new = edit(rows, minute_of)
    rewrite(path, "\n".join(header + [",".join(r) for r in new]) + "\n")
    return lines[len(header) :]


def busiest_minute(rows, minute_of) -> int:
    counts: dict[int, int] = {}
    for r in rows:
        counts[minute_of(r)] = counts.get(minute_of(r), 0) + 1
    inner = sorted(counts)[5:-5]  # not the first or last traded minutes
    return max(inner, key=lambda m: counts[m])


DAY = date(2025, 1, 1)


def truncated(rows, minute_of):
    return rows[: len(rows) * 2 // 3 + 7]  # a row boundary inside a minute


def missing_minute(rows, minute_of):
    m = busiest_minute(rows, minute_of)
    return [r for r in rows if minute_of(r) != m]


def flipped_side(rows, minute_of):
    flip = {"True": "False", "False": "True", "true": "false", "false": "true"}
    return [[*r[:5], flip[r[5]], *r[6:]] if i % 10 == 3 else r for i, r in enumerate(rows)]


def prices_times_ten(rows, minute_of):
    m = busiest_minute(rows, minute_of)
    return [[r[0], str(Decimal(r[1]) * 10), *r[2:]] if minute_of(r) == m else r for r in rows]


CASES = {
    # name: (market, pair, edit, expected problems)
    "truncated": ("spot", "BTCUSDT", truncated, ["trades_end_early"]),
    "missing_minute": ("um", "BTCUSDT", missing_minute, ["minutes_missing"]),
    "flipped_side": ("cm", "BTCUSD_PERP", flipped_side, ["taker_side"]),
    "prices_x10": ("spot", "ETHUSDT", prices_times_ten, ["prices"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_injected_trades_failures_are_caught_and_named(mirror, tmp_path, case):
    market, pair, edit, problems = CASES[case]
    before = edit_trades(mirror, market, pair, DAY, edit)
    after = read_member(mirror / archive_key(market, pair, DAY))[1]
    root = tmp_path / "store"
    result = run(settings_for(root, kind="mirror", mirror_dir=str(mirror)), markets=(market,), partition_key=DAY.isoformat())
    assert result.success  # not blocking: the pair-day is published, degraded
    q = ledger(root, market, DAY)
    row = q.filter(pl.col("pair") == pair).row(0, named=True)
    assert row["status"] == "degraded" and row["klines_status"] == "mismatch"
    assert row["klines_problems"] == problems
    reason = next(r for r in row["reasons"] if r.startswith("klines_mismatch: "))
    assert reason.startswith(f"klines_mismatch: {', '.join(problems)}: ")
    diff = row["klines_differences"]
    n_removed = len(before) - (len(after.splitlines()) - (0 if market == "spot" else 1))
    assert row["klines_trades_difference"] == n_removed
    assert row["klines_minutes_differing"] > 0 and row["klines_first_difference"] is not None
    if case == "truncated":
        assert n_removed > 100 and diff["only_in_klines"] > 100 and diff["out_of_day"] == 0
        assert "more from the file's last trade's minute" in reason
    elif case == "missing_minute":
        assert row["klines_minutes_differing"] == diff["only_in_klines"] == 1
        assert any(r.startswith("id_gaps: 1 gap(s)") for r in row["reasons"])  # the ids show it too
    elif case == "flipped_side":
        assert n_removed == 0 and diff["count"] == diff["volume"] == diff["quote_volume"] == 0
        assert diff["taker_buy_volume"] > 0 and diff["taker_buy_quote_volume"] > 0
    else:
        assert n_removed == 0 and row["klines_minutes_differing"] == 1 and diff["high"] == 1
        assert diff["volume"] == diff["count"] == 0
    # every other pair-day of the market still reconciles
    others = q.filter(pl.col("pair") != pair)
    assert others.height and (others["klines_status"] == "ok").all()
    # the check: failed (a WARN), naming the pair and what it found; the day is published
    (evaluation,) = check_evaluations(result, market)
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
    details = evaluation.metadata["failing_days"].value if "failing_days" in evaluation.metadata else None
    assert details == {DAY.isoformat(): 1}
    assert (root / partition_file(trades_dataset(market), DAY.isoformat())).exists()


def test_a_klines_file_for_the_wrong_day(mirror, tmp_path):
    market, pair = "um", "ETHUSDT"
    path = mirror / archive_key(market, pair, DAY, "klines")
    _, yesterday = read_member(mirror / archive_key(market, pair, DAY - timedelta(days=1), "klines"))
    rewrite(path, yesterday)  # the day's name, the day before's minutes
    other = "BTCUSDT"
    path2 = mirror / archive_key(market, other, DAY, "klines")
    _, text2 = read_member(mirror / archive_key(market, other, DAY - timedelta(days=1), "klines"))
    rewrite(path2, text2, member=f"{other}-1m-{DAY - timedelta(days=1)}.csv")  # and named as such
    root = tmp_path / "store"
    result = run(settings_for(root, kind="mirror", mirror_dir=str(mirror)), markets=(market,), partition_key=DAY.isoformat())
    assert result.success
    q = ledger(root, market, DAY)
    row = q.filter(pl.col("pair") == pair).row(0, named=True)
    assert (row["status"], row["klines_status"], row["klines_problems"]) == ("degraded", "mismatch", ["wrong_day"])
    assert row["klines_differences"]["out_of_day"] == len(yesterday.splitlines()) - 1  # every minute (header off)
    assert "lie outside the day (2024-12-31 00:00 .. 2024-12-31 23:59)" in " ".join(row["reasons"])
    assert row["klines_first_difference"] == datetime(2025, 1, 1)
    named = q.filter(pl.col("pair") == other).row(0, named=True)
    assert (named["status"], named["klines_status"]) == ("degraded", "unreadable")
    assert "klines_unreadable: " in " ".join(named["reasons"]) and f"{other}-1m-2024-12-31.csv" in " ".join(named["reasons"])
    (evaluation,) = check_evaluations(result, market)
    assert not evaluation.passed and evaluation.metadata["failing_days"].value == {DAY.isoformat(): 2}


def test_a_missing_klines_file_is_recorded(mirror, tmp_path):
    market, pair = "spot", "ETHUSDC"
    path = mirror / archive_key(market, pair, DAY, "klines")
    path.unlink()
    path.with_name(path.name + ".CHECKSUM").unlink()
    root = tmp_path / "store"
    result = run(settings_for(root, kind="mirror", mirror_dir=str(mirror)), markets=(market,), partition_key=DAY.isoformat())
    assert result.success
    row = ledger(root, market, DAY).filter(pl.col("pair") == pair).row(0, named=True)
    assert (row["status"], row["klines_status"]) == ("degraded", "missing")
    assert row["reasons"][0].startswith("klines_missing: no klines to reconcile (")
    assert not check_evaluations(result, market)[0].passed


def test_blocking_reconciliation_publishes_nothing_of_the_day(mirror, tmp_path):
    market, pair = "cm", "BTCUSD_PERP"
    edit_trades(mirror, market, pair, DAY, flipped_side)
    root = tmp_path / "store"
    result = run(settings_for(root, blocking=True, kind="mirror", mirror_dir=str(mirror)), markets=(market,), partition_key=DAY.isoformat())
    assert not result.success
    error = str(result.failure_data_for_node(f"binance__{market}__trades").error)
    assert RECONCILIATION_CHECK in error and f"{pair}: klines_mismatch: taker_side" in error
    assert "Nothing was published" in error
    evaluations = check_evaluations(result, market)  # the day's own evaluation, and the run's result
    assert evaluations and {e.partition for e in evaluations} == {DAY.isoformat()}
    assert all(not e.passed and e.severity == AssetCheckSeverity.ERROR for e in evaluations)
    assert not (root / partition_file(trades_dataset(market), DAY.isoformat())).exists()
    assert not (root / partition_file(quality_dataset(market), DAY.isoformat())).exists()
    # the same archive, not blocking: published and degraded; a clean day passes when blocking
    assert run(settings_for(root, kind="mirror", mirror_dir=str(mirror)), markets=(market,), partition_key=DAY.isoformat()).success
    assert run(
        settings_for(root, blocking=True, kind="mirror", mirror_dir=str(mirror)),
        markets=(market,),
        partition_key=(DAY - timedelta(days=1)).isoformat(),
    ).success


def test_reconciliation_off(mirror, tmp_path):
    market, pair = "spot", "BTCUSDT"
    edit_trades(mirror, market, pair, DAY, prices_times_ten)
    root = tmp_path / "store"
    result = run(settings_for(root, enabled=False, kind="mirror", mirror_dir=str(mirror)), markets=(market,), partition_key=DAY.isoformat())
    assert result.success and not check_evaluations(result, market)
    q = ledger(root, market, DAY)
    assert (q["status"] == "ok").all() and q["klines_status"].is_null().all()
