"""A day the archive re-publishes: detected by the recheck sensor, re-ingested with both checksums
in the ledger, every partition that used it stale, and recomputed by automation, level by level."""

import io
import zipfile
from datetime import date, datetime, timedelta

import polars as pl
from dagster import (
    AssetKey,
    build_sensor_context,
    evaluate_automation_conditions,
)
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from mnemo_assets.binance.archive import archive_key, checksum_line
from mnemo_assets.binance.synthetic import SyntheticArchive
from mnemo_assets.config import MarketSettings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.defs.keys import grid_key, metadata_key, partials_key, quality_key, returns_key, trades_key
from mnemo_assets.storage.layout import quality_dataset
from mnemo_assets.storage.parquet import scan_days
from mnemo_assets_tests.defs.conftest import run_days, small_settings

FIRST = date(2024, 12, 1)
DAYS = [FIRST + timedelta(days=k) for k in range(5)]
CHANGED = date(2024, 12, 3)


def republish(mirror, other: SyntheticArchive, pair: str, day: date) -> tuple[str, str]:
    """Replace a pair-day's zip in the mirror by a valid file with other trades; (old, new) sha."""
    zip_path = mirror / archive_key("spot", pair, day)
    old = zip_path.with_name(zip_path.name + ".CHECKSUM").read_text().split()[0]
    other_pair = next(p for p in other.list_pairs("spot") if day in other.list_days("spot", p) and p.endswith("USDT"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zip_path.name.replace(".zip", ".csv"), other.csv_bytes("spot", other_pair, day))
    zip_path.write_bytes(buf.getvalue())
    zip_path.with_name(zip_path.name + ".CHECKSUM").write_text(checksum_line(buf.getvalue(), zip_path.name))
    return old, zip_path.with_name(zip_path.name + ".CHECKSUM").read_text().split()[0]


def stale(instance, defs, key: AssetKey, day: date) -> bool:
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return resolver.get_status(key, day.isoformat()) == StaleStatus.STALE


def requested(defs, instance, when, cursor=None):
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=when, cursor=cursor)
    out = {}
    for r in result.results:
        if r.true_subset.size:
            out[r.key] = {date.fromisoformat(k) for k in r.true_subset.expensively_compute_partition_keys()}
    return out, result.cursor


def test_a_republished_day_is_reingested_and_everything_that_used_it_recomputed(tmp_path, data_root, instance):
    gen = SyntheticArchive(tmp_path / "gen", seed=11, n_pairs=8, trades_per_day=6000, start=FIRST, end=DAYS[-1] + timedelta(days=1))
    mirror = tmp_path / "mirror"
    gen.write_mirror(mirror, markets=("spot",), start=FIRST, end=DAYS[-1] + timedelta(days=1))
    settings = small_settings(data_root, kind="mirror", mirror_dir=str(mirror)).model_copy(
        update={"markets": {"spot": MarketSettings(pegs=("USDT",))}}
    )
    defs = build_definitions(settings)
    keys = list(defs.resolve_asset_graph().get_all_asset_keys())
    assert run_days(settings, keys, DAYS, instance).ok
    # the automation sensor has been ticking (it compares data versions with its previous tick)
    now = datetime(2024, 12, 6, 0, 5)  # before the archive tick: only changed inputs trigger
    _, cursor = requested(defs, instance, now - timedelta(minutes=4))
    pair = sorted(p.name for p in (mirror / "data/spot/daily/trades").iterdir() if p.name.endswith("USDT"))[0]
    other = SyntheticArchive(tmp_path / "gen2", seed=12, n_pairs=8, trades_per_day=6000, start=FIRST, end=DAYS[-1])
    old, new = republish(mirror, other, pair, CHANGED)

    # the recheck sensor finds the day and asks for it again (trades and ledger only)
    sensor = defs.resolve_sensor_def("mnemo_archive_recheck")
    with build_sensor_context(instance=instance, resources={"archive": defs.resources["archive"]}) as ctx:
        result = sensor(ctx)
    (request,) = result.run_requests
    assert request.partition_key == CHANGED.isoformat()
    assert set(request.asset_selection) == {trades_key("spot"), quality_key("spot")}

    # the re-ingest records both checksums; the day is degraded with the reason
    assert run_days(settings, request.asset_selection, [CHANGED], instance).ok
    ledger = scan_days(data_root, quality_dataset("spot"), [CHANGED]).collect().filter(pl.col("pair") == pair)
    row = ledger.row(0, named=True)
    assert (row["previous_sha256"], row["sha256"], row["status"]) == (old, new, "degraded")
    assert any("re-published" in r for r in row["reasons"])

    # everything that used it is stale, nothing else
    grid, ret = grid_key("spot", "USDT", "5s"), returns_key("spot", "USDT", "10m")
    assert stale(instance, defs, grid, CHANGED) and not stale(instance, defs, grid, CHANGED - timedelta(days=1))

    # automation recomputes it, level by level, and only what used the changed day
    got, cursor = requested(defs, instance, now, cursor)
    assert got.get(grid) == {CHANGED}
    assert trades_key("spot") not in got
    assert run_days(settings, [grid, grid_key("spot", "USDT", "10m"), partials_key("spot", "USDT", "1h", "index")], [CHANGED], instance).ok
    got, cursor = requested(defs, instance, now + timedelta(minutes=5), cursor)
    # returns of D−1..D+1 (D+1 = 12-04 is the last day whose returns exist: 12-05 waits for 12-06)
    assert got.get(ret) == {CHANGED - timedelta(days=1), CHANGED, CHANGED + timedelta(days=1)}
    assert stale(instance, defs, ret, CHANGED - timedelta(days=1))
    meta = metadata_key("spot", "USDT", "1h")
    # the metadata whose 7-day index windows hold the new grid day wait for it no more
    assert got.get(meta, set()) >= {CHANGED}
