"""Staleness: a recompute re-materializes exactly its range; unchanged data keeps dependents fresh,
changed data marks them stale."""

from datetime import date

from dagster import AssetKey
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from mnemo_assets.binance.archive import archive_key, checksum_line
from mnemo_assets.binance.synthetic import SyntheticArchive
from mnemo_assets.config import MarketSettings
from mnemo_assets.definitions import build_definitions
from mnemo_assets_tests.defs.conftest import run_days, small_settings

TRADES = AssetKey(["binance", "spot", "spot_trades"])
GRID = AssetKey(["binance", "spot", "usdt", "spot_usdt_grid_5s"])
D1, D2 = date(2024, 12, 2), date(2024, 12, 3)


def status(instance, defs, key: AssetKey, day: date) -> StaleStatus:
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return resolver.get_status(key, day.isoformat())


def materializations(instance, key: AssetKey, day: date) -> int:
    """Runs that materialized the partition."""
    from dagster import AssetRecordsFilter

    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()]), limit=100).records
    return len({r.run_id for r in records})


def test_recompute_marks_dependents_stale_only_when_data_changed(tmp_path, data_root, instance):
    mirror = tmp_path / "mirror"
    SyntheticArchive(tmp_path / "gen", seed=11, n_pairs=8, trades_per_day=6000, start=date(2024, 12, 1), end=D2).write_mirror(
        mirror, markets=("spot",), start=date(2024, 12, 1), end=D2
    )
    settings = small_settings(data_root, kind="mirror", mirror_dir=str(mirror)).model_copy(
        update={"markets": {"spot": MarketSettings(pegs=("USDT",))}}
    )
    defs = build_definitions(settings)

    def recompute(keys, days):
        summary = run_days(settings, keys, days, instance)
        assert summary.ok
        return summary

    recompute([TRADES, GRID], [D1, D2])
    assert status(instance, defs, GRID, D1) == StaleStatus.FRESH
    # re-materialize the trades of D1 from the same archive files: same data version, grid stays fresh
    recompute([TRADES], [D1])
    assert materializations(instance, TRADES, D1) == 2 and materializations(instance, TRADES, D2) == 1
    assert status(instance, defs, GRID, D1) == StaleStatus.FRESH
    # the archive republishes D1 with a correction: the trades change, the grid of D1 (only) turns stale
    pair = sorted(p.name for p in (mirror / "data/spot/daily/trades").iterdir() if p.name.endswith("USDT"))[0]
    zip_path = mirror / archive_key("spot", pair, D1)
    other = SyntheticArchive(tmp_path / "gen2", seed=12, n_pairs=8, trades_per_day=6000, start=date(2024, 12, 1), end=D2)
    other_pair = next(p for p in other.list_pairs("spot") if D1 in other.list_days("spot", p) and p.endswith("USDT"))
    import io
    import zipfile

    csv = other.csv_bytes("spot", other_pair, D1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zip_path.name.replace(".zip", ".csv"), csv)
    zip_path.write_bytes(buf.getvalue())
    zip_path.with_name(zip_path.name + ".CHECKSUM").write_text(checksum_line(buf.getvalue(), zip_path.name))
    recompute([TRADES], [D1])
    assert status(instance, defs, GRID, D1) == StaleStatus.STALE
    assert status(instance, defs, GRID, D2) == StaleStatus.FRESH
    # recompute the stale range: exactly that partition runs again, and it is fresh
    before_d2 = materializations(instance, GRID, D2)
    recompute([GRID], [D1])
    assert status(instance, defs, GRID, D1) == StaleStatus.FRESH
    assert materializations(instance, GRID, D2) == before_d2
    assert materializations(instance, GRID, D1) == 2
