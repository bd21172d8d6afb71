"""Metadata assets in Dagster: partials + windows; each partition equals one pass over all days."""

from datetime import date, timedelta

import polars as pl
from dagster import AssetKey, DagsterInstance, materialize

from mnemo_assets.config import MarketSettings, MetadataSettings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.defs.keys import grid_key, metadata_key, partials_key, quality_key, returns_key, trades_key
from mnemo_assets.metadata import compute_metadata
from mnemo_assets.storage.layout import grid_dataset, metadata_dataset, returns_dataset
from mnemo_assets.storage.parquet import existing_days, scan_days
from mnemo_assets_tests.defs.conftest import small_settings
from mnemo_assets_tests.oracles import assert_rows_close

P = ["binance", "spot", "usdt"]


def settings_for(root, **meta):
    s = small_settings(root)
    update = {"markets": {"spot": MarketSettings(pegs=("USDT",))}}
    if meta:
        update["metadata"] = MetadataSettings(**meta)
    return s.model_copy(update=update)


NAMES = {
    "trades": trades_key("spot"),
    "quality": quality_key("spot"),
    "grid_5s": grid_key("spot", "USDT", "5s"),
    "returns_10m": returns_key("spot", "USDT", "10m"),
    "metadata_1h": metadata_key("spot", "USDT", "1h"),
    "metadata_1h_index_partials": partials_key("spot", "USDT", "1h", "index"),
    "metadata_1h_returns_partials": partials_key("spot", "USDT", "1h", "returns"),
}


def key(name: str) -> AssetKey:
    return NAMES[name]


def mat(settings, keys, lo, hi, instance):
    d = build_definitions(settings)
    tags = {"dagster/asset_partition_range_start": lo, "dagster/asset_partition_range_end": hi}
    return materialize(list(d.assets), selection=[key(k) for k in keys], tags=tags, resources=d.resources, instance=instance, raise_on_error=False)


def build_chain(settings, instance, last="2024-12-06"):
    assert mat(settings, ["trades", "quality", "grid_5s"], "2024-12-01", last, instance).success
    prev = (date.fromisoformat(last) - timedelta(days=1)).isoformat()
    assert mat(settings, ["returns_10m"], "2024-12-01", prev, instance).success
    assert mat(settings, ["metadata_1h_index_partials", "metadata_1h_returns_partials"], "2024-12-01", prev, instance).success


def test_metadata_partitions_equal_one_pass_over_all_days(data_root):
    settings = settings_for(data_root)
    instance = DagsterInstance.ephemeral()
    build_chain(settings, instance)
    # one day alone and a batch: both must equal the one-pass computation
    r1 = mat(settings, ["metadata_1h"], "2024-12-03", "2024-12-03", instance)
    r2 = mat(settings, ["metadata_1h"], "2024-12-04", "2024-12-05", instance)
    assert r1.success and r2.success
    checks = r1.get_asset_check_evaluations() + r2.get_asset_check_evaluations()
    assert all(c.passed for c in checks)
    assert {(c.check_name, c.partition) for c in checks if c.partition} == {("invariants", d) for d in ("2024-12-03", "2024-12-04", "2024-12-05")}
    days = existing_days(data_root, grid_dataset("spot", "5s", "USDT"))
    grid = scan_days(data_root, grid_dataset("spot", "5s", "USDT"), days)
    rets = scan_days(data_root, returns_dataset("spot", "10m", "USDT"), existing_days(data_root, returns_dataset("spot", "10m", "USDT")))
    spec = settings.metadata.load_spec("1h")
    full = compute_metadata(grid, rets, spec, date(2024, 12, 3), date(2024, 12, 6))
    stored = scan_days(data_root, metadata_dataset("spot", "1h", "USDT"), [date(2024, 12, d) for d in (3, 4, 5)]).collect()
    assert stored.height == full.height > 0
    s = pl.col("symbol").cast(pl.String)
    ordered = stored.with_columns(s).sort("symbol", "grid_time")
    assert_rows_close(ordered.to_dicts(), full.with_columns(s).sort("symbol", "grid_time").to_dicts(), rel=1e-9)


def test_user_spec_from_configuration_with_raw_inputs(data_root):
    settings = settings_for(data_root, spec="mnemo_assets_tests.user_spec:spec")
    d = build_definitions(settings)
    node = d.resolve_asset_graph().get(key("metadata_1h"))
    # non-decomposable aggregations read raw grid and returns windows as well
    assert set(node.parent_keys) >= {key("grid_5s"), key("returns_10m"), key("metadata_1h_index_partials")}
    assert node.code_version == settings.metadata.load_spec("1h").version
    instance = DagsterInstance.ephemeral()
    build_chain(settings, instance, last="2024-12-04")
    assert mat(settings, ["metadata_1h"], "2024-12-02", "2024-12-03", instance).success
    stored = scan_days(data_root, metadata_dataset("spot", "1h", "USDT"), [date(2024, 12, 2), date(2024, 12, 3)]).collect()
    assert stored.columns == ["symbol", "grid_time", "last_trade_time", "high_12h", "liq_12h", "max_abs_ret_2d", "n_2d", "liq_12h_q"]
    assert (stored["n_2d"] <= 2 * 144).all() and stored["high_12h"].null_count() == 0


def test_changing_the_spec_changes_the_code_version(data_root):
    a = build_definitions(settings_for(data_root)).resolve_asset_graph().get(key("metadata_1h")).code_version
    b = (
        build_definitions(settings_for(data_root, spec="mnemo_assets_tests.user_spec:spec"))
        .resolve_asset_graph()
        .get(key("metadata_1h"))
        .code_version
    )
    assert a != b
