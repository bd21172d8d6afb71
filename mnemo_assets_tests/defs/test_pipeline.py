"""Trades → grids in real Dagster runs: files where SPEC.md says, checks pass, bad input loses nothing."""

import shutil
from datetime import date

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from mnemo_assets.binance.archive import archive_key
from mnemo_assets.binance.synthetic import SyntheticArchive
from mnemo_assets.definitions import build_definitions
from mnemo_assets.defs.trades import TRADES_CHECKS
from mnemo_assets.grids import GRID_CHECKS, last_trade_grid
from mnemo_assets.storage.layout import grid_dataset, partition_file, trades_dataset
from mnemo_assets.storage.parquet import scan_days
from mnemo_assets_tests.defs.conftest import small_settings

RANGE = {"dagster/asset_partition_range_start": "2024-12-31", "dagster/asset_partition_range_end": "2025-01-01"}


def run(settings, instance=None, selection=None, **kwargs):
    """Materialize in process; by default trades and grids only (returns need D+1)."""
    d = build_definitions(settings)
    if selection is None:
        selection = [
            k for k in d.resolve_asset_graph().get_all_asset_keys() if k.path[-1].endswith(("_trades", "_quality")) or "_grid_" in k.path[-1]
        ]
    return materialize(
        list(d.assets),
        selection=selection,
        resources=d.resources,
        instance=instance or DagsterInstance.ephemeral(),
        raise_on_error=False,
        **kwargs,
    )


def test_range_run_writes_every_partition_and_all_checks_pass(settings, data_root):
    result = run(settings, tags=RANGE)
    assert result.success
    for market, pegs in (("spot", ["USDT", "USDC"]), ("cm", ["USD"])):
        for day in ("2024-12-31", "2025-01-01"):
            assert (data_root / partition_file(trades_dataset(market), day)).exists()
            for peg in pegs:
                for iv in ("5s", "10m"):
                    assert (data_root / partition_file(grid_dataset(market, iv, peg), day)).exists()
    evaluations = result.get_asset_check_evaluations()
    assert all(e.passed for e in evaluations)
    # every check of every grid and trades asset, on each day of the range
    per_day = {(e.asset_key, e.check_name, e.partition) for e in evaluations if e.partition}
    assert len(per_day) == (6 * len(GRID_CHECKS) + 2 * len(TRADES_CHECKS)) * 2


def test_stored_grid_equals_the_pure_function_of_stored_trades(settings, data_root):
    assert run(settings, partition_key="2025-01-01").success
    day = date(2025, 1, 1)
    trades = scan_days(data_root, trades_dataset("spot"), [day]).filter(pl.col("peg_symbol") == "USDC")
    expected = last_trade_grid(trades, "5s").collect().with_columns(pl.col("symbol").cast(pl.String))
    stored = scan_days(data_root, grid_dataset("spot", "5s", "USDC"), [day]).collect().with_columns(pl.col("symbol").cast(pl.String))
    assert stored.equals(expected)


def test_trades_partition_holds_the_archive_rows(settings, data_root):
    assert run(settings, partition_key="2024-12-31", selection=[AssetKey(["binance", "spot", "spot_trades"])]).success
    archive = SyntheticArchive(data_root / "check", seed=11, n_pairs=8, trades_per_day=6000, start=date(2024, 12, 1), end=date(2024, 12, 31))
    day = date(2024, 12, 31)
    expected = pl.concat([archive.normalised_trades("spot", p, day) for p in archive.list_pairs("spot") if day in archive.list_days("spot", p)])
    stored = pl.read_parquet(data_root / partition_file(trades_dataset("spot"), day))
    assert stored.sort("symbol", "peg_symbol", "trade_id").equals(expected.sort("symbol", "peg_symbol", "trade_id"))


@pytest.fixture
def mirror(tmp_path, data_root):
    """A local mirror (from the synthetic archive) and settings reading it."""
    src = SyntheticArchive(tmp_path / "gen", seed=11, n_pairs=8, trades_per_day=6000, start=date(2024, 12, 1), end=date(2025, 1, 3))
    root = tmp_path / "mirror"
    src.write_mirror(root, markets=("spot", "cm"), start=date(2024, 12, 29), end=date(2025, 1, 3))
    return root, small_settings(data_root, kind="mirror", mirror_dir=str(root))


def _spot_pair(root):
    return sorted(p.name for p in (root / "data/spot/daily/trades").iterdir())[0]


@pytest.mark.parametrize("damage", ["corrupt", "checksum"])
def test_bad_archive_fails_naming_the_file_and_keeps_the_stored_partition(mirror, data_root, damage):
    root, settings = mirror
    key = "2025-01-01"
    trades = AssetKey(["binance", "spot", "spot_trades"])
    assert run(settings, partition_key=key, selection=[trades]).success
    stored = data_root / partition_file(trades_dataset("spot"), key)
    before = stored.read_bytes()
    pair = _spot_pair(root)
    zip_path = root / archive_key("spot", pair, date(2025, 1, 1))
    if damage == "corrupt":  # bytes and CHECKSUM agree, but the zip is garbage
        zip_path.write_bytes(b"PK\x03\x04garbage")
        from mnemo_assets.binance.archive import checksum_line

        zip_path.with_name(zip_path.name + ".CHECKSUM").write_text(checksum_line(zip_path.read_bytes(), zip_path.name))
    else:
        zip_path.write_bytes(zip_path.read_bytes()[:-10] + b"0123456789")
    result = run(settings, partition_key=key, selection=[trades])
    assert not result.success
    failure = result.failure_data_for_node("binance__spot__trades")
    assert zip_path.name in str(failure.error)
    assert stored.read_bytes() == before


def test_missing_day_is_a_clear_error(mirror, data_root):
    root, settings = mirror
    pair = _spot_pair(root)
    zip_path = root / archive_key("spot", pair, date(2025, 1, 1))
    zip_path.unlink()
    zip_path.with_name(zip_path.name + ".CHECKSUM").unlink()
    result = run(settings, partition_key="2025-01-01", selection=[AssetKey(["binance", "spot", "spot_trades"])])
    assert not result.success
    msg = str(result.failure_data_for_node("binance__spot__trades").error)
    assert "missing" in msg and pair in msg and "2025-01-01" in msg


def test_unpublished_day_is_a_clear_error(mirror):
    _root, settings = mirror
    result = run(settings, partition_key="2025-01-05", selection=[AssetKey(["binance", "spot", "spot_trades"])])
    assert not result.success
    assert "no spot trades published for 2025-01-05" in str(result.failure_data_for_node("binance__spot__trades").error)


def test_an_empty_archive_file_is_refused_not_published_as_a_day_without_trades(tmp_path, data_root):
    """A listed pair whose file holds no trades is an error naming the file: never an empty partition."""
    from mnemo_assets_tests.archive_server import write_archive_day

    root = tmp_path / "mirror"
    for day in (date(2024, 12, 31), date(2025, 1, 1)):
        write_archive_day(root, "spot", "BTCUSDT", day, rows=[])
    settings = small_settings(data_root, kind="mirror", mirror_dir=str(root)).model_copy(
        update={"markets": {"spot": small_settings(data_root).markets["spot"]}}
    )
    result = run(settings, partition_key="2025-01-01")
    assert not result.success
    error = str(result.failure_data_for_node("binance__spot__trades").error)
    assert "BTCUSDT-trades-2025-01-01.zip" in error and "empty" in error
    assert not (data_root / "binance").exists() or not any((data_root / "binance").rglob("*.parquet"))
    shutil.rmtree(root)


def test_a_failing_check_fails_the_step_and_blocks_downstream(settings, data_root, monkeypatch):
    """A grid partition that breaks an invariant: its check fails, the step fails, returns never run."""
    import mnemo_assets.defs.grids as grid_defs

    real = grid_defs.grid_checks

    def broken(grid, trades, interval):
        counts = real(grid, trades, interval)
        return {**counts, "price_bounds": 1} if interval == "5s" else counts

    monkeypatch.setattr(grid_defs, "grid_checks", broken)
    d = build_definitions(settings)
    keys = [
        k
        for k in d.resolve_asset_graph().get_all_asset_keys()
        if k.path[1] == "spot" and k.path[-1].endswith(("_trades", "_quality", "_usdt_grid_5s", "_usdt_ret_10m"))
    ]
    tags = {"dagster/asset_partition_range_start": "2024-12-01", "dagster/asset_partition_range_end": "2024-12-03"}
    result = materialize(list(d.assets), selection=keys, tags=tags, resources=d.resources, instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    failed = {e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"}
    assert "binance__spot__usdt__spot_usdt_grid_5s" in failed
    evaluations = [e for e in result.get_asset_check_evaluations() if e.check_name == "invariants" and e.partition]
    assert evaluations and not any(e.passed for e in evaluations)
    assert all(e.metadata["details"].value["price_bounds"] == 1 for e in evaluations)
    # blocked, not failed: the returns step never starts
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "binance__spot__usdt__spot_usdt_ret_10m" not in started
    assert not (data_root / "binance/returns").exists()
    # audited before publishing: the failing grid was never visible, nothing was left in staging
    assert not (data_root / grid_dataset("spot", "5s", "USDT")).exists()
    assert list((data_root / ".staging").iterdir()) == []
