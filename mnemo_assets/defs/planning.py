"""Planning a date range over the asset graph: which days of each asset can run, in what order.

An asset whose inputs map day to day runs in the same phase as its inputs. An asset with a
window mapping (returns: D−1..D+1; metadata: lookbacks) starts a later phase: windows are
checked against the store after the earlier phases ran. A day of an asset is runnable when
every input day it maps to is stored or scheduled before it; input days before the first
partition count as present (lookbacks are computed on what exists).
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from dagster import AssetKey, Definitions, TimeWindowPartitionMapping


@dataclass
class Phase:
    keys: list[AssetKey]


def inputs_of(graph, key: AssetKey) -> list[tuple[AssetKey, int, int]]:
    """``(parent, days before, days after)`` of every input (0, 0 for a day-to-day mapping)."""
    out = []
    for parent in graph.get(key).parent_keys:
        mapping = graph.assets_def_for_key(key).get_partition_mapping(parent)
        if isinstance(mapping, TimeWindowPartitionMapping):
            out.append((parent, -mapping.start_offset, mapping.end_offset))
        else:
            out.append((parent, 0, 0))
    return out


def phases(defs: Definitions, selected: Iterable[AssetKey]) -> list[Phase]:
    """Selected assets in run order (parents first); a new phase starts at every window mapping."""
    graph = defs.resolve_asset_graph()
    selected = set(selected)
    level: dict[AssetKey, int] = {}
    order: dict[AssetKey, int] = {}

    def depth(key: AssetKey) -> tuple[int, int]:
        if key not in level:
            lv, od = 0, 0
            for parent, before, after in inputs_of(graph, key):
                pl_, po = depth(parent)
                lv = max(lv, pl_ + (1 if (before or after) else 0))
                od = max(od, po + 1)
            level[key], order[key] = lv, od
        return level[key], order[key]

    out: dict[int, Phase] = {}
    for key in sorted(selected, key=lambda k: (depth(k)[1], k.to_user_string())):
        out.setdefault(depth(key)[0], Phase(keys=[])).keys.append(key)
    return [out[d] for d in sorted(out)]


def runnable_days(
    graph, key: AssetKey, days: list[date], present: dict[AssetKey, set[date]], first: date
) -> tuple[list[date], dict[date, str]]:
    """Days of ``days`` whose every input day is ``present`` (stored or scheduled), and why
    the others wait."""
    ok, waiting = [], {}
    for day in days:
        reason = None
        for parent, before, after in inputs_of(graph, key):
            for k in range(-before, after + 1):
                need = day + timedelta(days=k)
                if need >= first and need not in present[parent]:
                    reason = f"{key.to_user_string()} waits for {parent.to_user_string()} of {need}"
                    break
            if reason:
                break
        if reason:
            waiting[day] = reason
        else:
            ok.append(day)
    return ok, waiting


def batches(days: list[date], size: int) -> list[tuple[date, date]]:
    """Contiguous runs of at most ``size`` days."""
    out: list[tuple[date, date]] = []
    for day in sorted(days):
        if out and day == out[-1][1] + timedelta(days=1) and (day - out[-1][0]).days < size:
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out


def plan_days(
    defs: Definitions,
    keys: Iterable[AssetKey],
    days: list[date],
    stored_days: Callable[[AssetKey], Iterable[date]],
    first: date,
    missing_only: Iterable[AssetKey] = (),
) -> tuple[dict[AssetKey, list[date]], dict[tuple[str, date], str]]:
    """Days each asset would run in a backfill of ``days``, assuming every planned run succeeds
    (later phases count the days earlier ones will produce); and why the others wait.
    ``stored_days(key)`` lists what the store already holds."""
    graph = defs.resolve_asset_graph()
    missing_only = set(missing_only)
    present: dict[AssetKey, set[date]] = {}
    planned: dict[AssetKey, list[date]] = {}
    skipped: dict[tuple[str, date], str] = {}
    for phase in phases(defs, keys):
        for key in phase.keys:
            for parent, _, _ in inputs_of(graph, key):
                if parent not in present:
                    present[parent] = set(stored_days(parent))
            ok, waiting = runnable_days(graph, key, days, present, first)
            for day, reason in waiting.items():
                skipped[(key.to_user_string(), day)] = reason
            have = set(stored_days(key))
            if key in missing_only:
                ok = [d for d in ok if d not in have]
            planned[key] = ok
            present[key] = have | set(ok)
    return planned, skipped
