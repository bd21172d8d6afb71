"""The code location loads, and the asset graph follows the configuration."""

from dagster import AssetKey

from mnemo_assets.config import GridSettings, MarketSettings, Settings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.definitions import defs as load_defs

defs = load_defs()  # what Dagster loads: the lazily built code location


def keys(d) -> set[str]:
    return {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()}


def test_default_definitions_load_with_expected_assets():
    got = keys(defs)
    expected = {"binance/spot/spot_trades", "binance/um/um_trades", "binance/cm/cm_trades"}
    for market, pegs in {"spot": ["usdt", "usdc"], "um": ["usdt", "usdc"], "cm": ["usd"]}.items():
        for peg in pegs:
            expected |= {f"binance/{market}/{peg}/{market}_{peg}_grid_5s", f"binance/{market}/{peg}/{market}_{peg}_grid_10m"}
    assert expected <= got
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey(["binance", "spot", "usdt", "spot_usdt_grid_5s"])).parent_keys == {AssetKey(["binance", "spot", "spot_trades"])}
    assert defs.resolve_job_def("__ASSET_JOB") is not None


def test_adding_a_peg_or_an_interval_is_one_line(tmp_path):
    base = Settings(data_root=str(tmp_path), markets={"spot": MarketSettings(pegs=("USDT",))})
    more = base.model_copy(update={"markets": {"spot": MarketSettings(pegs=("USDT", "FDUSD"))}, "grids": GridSettings(intervals=("5s", "10m", "1m"))})
    added = keys(build_definitions(more)) - keys(build_definitions(base))
    assert {"binance/spot/fdusd/spot_fdusd_grid_5s", "binance/spot/fdusd/spot_fdusd_grid_1m", "binance/spot/usdt/spot_usdt_grid_1m"} <= added


def test_every_asset_is_daily_partitioned_with_a_code_version_and_dataset():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.partitions_def is not None, key
        assert node.code_version, key
        assert "mnemo/dataset" in node.metadata, key
