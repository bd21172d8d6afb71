"""Daily automation, evaluated at chosen times: the right partitions on the right days, never early."""

from datetime import date, datetime, timedelta

import pytest
from dagster import AssetCheckEvaluation, AssetKey, AssetMaterialization, DagsterInstance, evaluate_automation_conditions

from mnemo_assets.config import MarketSettings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.defs.checks import latest_materialization
from mnemo_assets_tests.defs.conftest import small_settings

P = ["binance", "spot", "usdt"]
TRADES = AssetKey(["binance", "spot", "spot_trades"])
QUALITY = AssetKey(["binance", "spot", "spot_quality"])
GRID5, GRID10 = AssetKey(P + ["spot_usdt_grid_5s"]), AssetKey(P + ["spot_usdt_grid_10m"])
RET = AssetKey(P + ["spot_usdt_ret_10m"])
IPART, RPART, META = (AssetKey(P + ["spot_usdt_ipart_1h"]), AssetKey(P + ["spot_usdt_rpart_1h"]), AssetKey(P + ["spot_usdt_meta_1h"]))
FIRST = date(2025, 1, 1)


class Clock:
    """Evaluates the automation sensor's conditions at successive times, keeping the cursor."""

    def __init__(self, defs, instance):
        self.defs, self.instance, self.cursor = defs, instance, None

    def at(self, when: datetime) -> dict[str, set[str]]:
        result = evaluate_automation_conditions(defs=self.defs, instance=self.instance, evaluation_time=when, cursor=self.cursor)
        self.cursor = result.cursor
        out: dict[str, set[str]] = {}
        for ar in result.results:
            if ar.true_subset.size:
                out[ar.key.to_user_string()] = set(ar.true_subset.expensively_compute_partition_keys())
        return out


def done(instance, defs, key: AssetKey, *days: date):
    node = defs.resolve_asset_graph()
    for day in days:
        instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=day.isoformat()))
        target = latest_materialization(instance, key, day.isoformat())
        for check_key in node.get(key).check_keys:
            instance.report_runless_asset_event(
                AssetCheckEvaluation(
                    asset_key=key, check_name=check_key.name, passed=True, partition=day.isoformat(), target_materialization_data=target
                )
            )


def days(lo: date, hi: date) -> list[date]:
    return [lo + timedelta(days=k) for k in range((hi - lo).days + 1)]


@pytest.fixture
def world(data_root):
    settings = small_settings(data_root).model_copy(update={"markets": {"spot": MarketSettings(pegs=("USDT",))}, "start_date": FIRST})
    defs = build_definitions(settings)
    instance = DagsterInstance.ephemeral()
    # history: everything up to 2025-01-08 except what needs 2025-01-09
    upto = date(2025, 1, 8)
    for key in (TRADES, QUALITY, GRID5, GRID10, IPART):
        done(instance, defs, key, *days(FIRST, upto))
    for key in (RET, RPART, META):
        done(instance, defs, key, *days(FIRST, upto - timedelta(days=1)))
    return defs, instance


def u(key: AssetKey) -> str:
    return key.to_user_string()


def chain(newest: str, before: str) -> dict[str, set[str]]:
    """What runs after the newest day's trades, in the same run (Dagster orders the steps):
    same-day assets of the newest day, and returns → partials → metadata of the day before."""
    return {
        u(GRID5): {newest},
        u(GRID10): {newest},
        u(IPART): {newest},
        u(RET): {before},
        u(RPART): {before},
        u(META): {before},
    }


def test_the_newest_day_flows_through_each_asset_as_its_inputs_arrive(world):
    defs, instance = world
    clock = Clock(defs, instance)
    # 2025-01-10 00:05: 2025-01-09 is the newest partition; the hourly archive tick has not passed
    assert clock.at(datetime(2025, 1, 10, 0, 5)) == {}
    # 00:15 tick: the newest day's trades, and everything that can follow once they exist —
    # but never returns or metadata of 2025-01-09 (they need 2025-01-10)
    assert clock.at(datetime(2025, 1, 10, 0, 20)) == {u(TRADES): {"2025-01-09"}, u(QUALITY): {"2025-01-09"}, **chain("2025-01-09", "2025-01-08")}
    # nothing landed (not published yet): nothing between ticks, everything again at the next tick
    assert clock.at(datetime(2025, 1, 10, 0, 50)) == {}
    assert clock.at(datetime(2025, 1, 10, 1, 20)) == {u(TRADES): {"2025-01-09"}, u(QUALITY): {"2025-01-09"}, **chain("2025-01-09", "2025-01-08")}
    # the trades landed (a run that stopped after them): the rest follows without waiting for a tick
    done(instance, defs, TRADES, date(2025, 1, 9))
    done(instance, defs, QUALITY, date(2025, 1, 9))
    assert clock.at(datetime(2025, 1, 10, 1, 25)) == chain("2025-01-09", "2025-01-08")
    done(instance, defs, GRID5, date(2025, 1, 9))
    done(instance, defs, GRID10, date(2025, 1, 9))
    done(instance, defs, IPART, date(2025, 1, 9))
    done(instance, defs, RET, date(2025, 1, 8))
    # returns landed but its partials did not: partials and metadata of 01-08 follow
    assert clock.at(datetime(2025, 1, 10, 1, 30)) == {u(RPART): {"2025-01-08"}, u(META): {"2025-01-08"}}
    done(instance, defs, RPART, date(2025, 1, 8))
    done(instance, defs, META, date(2025, 1, 8))
    # all current: nothing until tomorrow's archive tick, which brings 2025-01-10 and the rest of 2025-01-09
    assert clock.at(datetime(2025, 1, 10, 12, 0)) == {}
    assert clock.at(datetime(2025, 1, 11, 0, 20)) == {u(TRADES): {"2025-01-10"}, u(QUALITY): {"2025-01-10"}, **chain("2025-01-10", "2025-01-09")}


def test_metadata_waits_for_every_day_of_its_window(world):
    defs, _instance = world
    # wipe one returns-partials day inside the 30-day window of 2025-01-08 by starting a fresh instance
    fresh = DagsterInstance.ephemeral()
    for key in (TRADES, QUALITY, GRID5, GRID10, IPART):
        done(fresh, defs, key, *days(FIRST, date(2025, 1, 9)))
    done(fresh, defs, RET, *days(FIRST, date(2025, 1, 8)))
    done(fresh, defs, RPART, *[d for d in days(FIRST, date(2025, 1, 8)) if d != date(2025, 1, 3)])
    clock = Clock(defs, fresh)
    req = clock.at(datetime(2025, 1, 10, 1, 0))
    assert META.to_user_string() not in req


def test_automation_sensor_can_be_switched_off(data_root):
    on = build_definitions(small_settings(data_root))
    off = build_definitions(
        small_settings(data_root).model_copy(update={"automation": small_settings(data_root).automation.model_copy(update={"enabled": False})})
    )
    assert on.resolve_sensor_def("mnemo_daily").default_status.value == "RUNNING"
    assert off.resolve_sensor_def("mnemo_daily").default_status.value == "STOPPED"
