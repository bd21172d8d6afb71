"""The planner sensor on a backfill exactly as the UI creates it (assetSelection + partitionNames)."""

import time
from datetime import date, timedelta

from dagster import DagsterInstance
from dagster._core.execution.backfill import PartitionBackfill

from mnemo_assets.config import MarketSettings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.defs.backfills import PLANNED_COUNT_TAG, WAITING_COUNT_TAG, apply_plan
from mnemo_assets.defs.keys import grid_key, metadata_key, returns_key, trades_key
from mnemo_assets_tests.defs.conftest import small_settings

DAYS = [date(2024, 12, 1) + timedelta(days=k) for k in range(3)]


def ui_backfill(instance, graph, keys, days) -> str:
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id="uiform",
        asset_graph=graph,
        partition_names=[d.isoformat() for d in days],
        asset_selection=list(keys),
        backfill_timestamp=time.time(),
        tags={"dagster/from_ui": "true"},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


def target(instance, graph, backfill_id):
    data = instance.get_backfill(backfill_id).get_asset_backfill_data(graph)
    return {
        k: sorted(date.fromisoformat(p) for p in data.target_subset.get_partitions_subset(k).get_partition_keys())
        for k in data.target_subset.partitions_subsets_by_asset_key
    }


def test_the_widened_ui_target_is_cut_to_what_can_run_and_the_rest_is_named(data_root):
    settings = small_settings(data_root).model_copy(update={"markets": {"spot": MarketSettings(pegs=("USDT",))}})
    graph = build_definitions(settings).resolve_asset_graph()
    instance = DagsterInstance.ephemeral()
    backfill_id = ui_backfill(instance, graph, graph.get_all_asset_keys(), DAYS)
    before = target(instance, graph, backfill_id)
    # Dagster widens: returns one day past the range, metadata days past it (by its windows; how
    # far differed between runs under load, 7 or 30 days: the planner cuts either)
    assert before[returns_key("spot", "USDT", "10m")][-1] == DAYS[-1] + timedelta(days=1)
    assert before[metadata_key("spot", "USDT", "1h")][-1] >= DAYS[-1] + timedelta(days=7)
    outcome = apply_plan(instance, backfill_id, graph, settings.data_root, settings.start_date)
    assert outcome and "waiting asset-day" in outcome
    after = target(instance, graph, backfill_id)
    assert after[trades_key("spot")] == DAYS and after[grid_key("spot", "USDT", "5s")] == DAYS
    # the last day's returns wait for the next day's grid; the metadata for those returns
    assert after[returns_key("spot", "USDT", "10m")] == DAYS[:-1]
    assert after[metadata_key("spot", "USDT", "1h")] == DAYS[:-1]
    backfill = instance.get_backfill(backfill_id)
    waiting = sum(len(v) for v in before.values()) - sum(len(v) for v in after.values())
    assert backfill.tags[WAITING_COUNT_TAG] == str(waiting) and int(backfill.tags[PLANNED_COUNT_TAG]) == sum(len(v) for v in after.values())
    assert f"spot_usdt_ret_10m {DAYS[-1]}" in backfill.description and "grid_5s of" in backfill.description
    # planned once: nothing more to do until the target changes again
    assert apply_plan(instance, backfill_id, graph, settings.data_root, settings.start_date) is None


def test_asset_days_the_daemon_already_requested_are_never_removed(data_root):
    settings = small_settings(data_root).model_copy(update={"markets": {"spot": MarketSettings(pegs=("USDT",))}})
    graph = build_definitions(settings).resolve_asset_graph()
    instance = DagsterInstance.ephemeral()
    backfill_id = ui_backfill(instance, graph, graph.get_all_asset_keys(), DAYS)
    backfill = instance.get_backfill(backfill_id)
    data = backfill.get_asset_backfill_data(graph)
    ret = returns_key("spot", "USDT", "10m")
    # pretend the daemon already requested the (waiting) returns of the last day
    requested = data.target_subset.filter_asset_keys({ret})
    instance.update_backfill(
        backfill.with_asset_backfill_data(data._replace(requested_subset=requested), dynamic_partitions_store=instance, asset_graph=graph)
    )
    apply_plan(instance, backfill_id, graph, settings.data_root, settings.start_date)
    assert DAYS[-1] in target(instance, graph, backfill_id)[ret]
