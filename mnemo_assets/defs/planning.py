"""Planning a date range over the asset graph: which days of each asset can run, in what order.

An asset whose inputs map one-to-one (same day) runs together with them. An asset with a
window mapping (returns: D−1..D+1; metadata: lookbacks) runs in a later phase, and only for
the days whose input windows exist in the store (days before the first partition count as
existing: lookbacks are computed on what exists).
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from dagster import AssetKey, Definitions, TimeWindowPartitionMapping
from upath import UPath

from mnemo_assets.storage.io_manager import DATASET_KEY
from mnemo_assets.storage.parquet import existing_days


@dataclass
class Phase:
    keys: list[AssetKey]
    #: input windows per asset: [(parent, before, after)] for window-mapped parents
    windows: dict[AssetKey, list[tuple[AssetKey, int, int]]] = field(default_factory=dict)


def _window(defs_graph, key: AssetKey, parent: AssetKey) -> tuple[int, int] | None:
    mapping = defs_graph.assets_def_for_key(key).get_partition_mapping(parent)
    if isinstance(mapping, TimeWindowPartitionMapping) and (mapping.start_offset or mapping.end_offset):
        return -mapping.start_offset, mapping.end_offset
    return None


def phases(defs: Definitions, selected: Iterable[AssetKey]) -> list[Phase]:
    """Selected assets in run order: a new phase starts at every window-mapped dependency."""
    graph = defs.resolve_asset_graph()
    selected = set(selected)
    level: dict[AssetKey, int] = {}

    def depth(key: AssetKey) -> int:
        if key not in level:
            d = 0
            for parent in graph.get(key).parent_keys:
                step = 1 if _window(graph, key, parent) else 0
                d = max(d, depth(parent) + step)
            level[key] = d
        return level[key]

    out: dict[int, Phase] = {}
    for key in sorted(selected, key=lambda k: k.to_user_string()):
        phase = out.setdefault(depth(key), Phase(keys=[]))
        phase.keys.append(key)
        wins = [(p, *w) for p in graph.get(key).parent_keys if (w := _window(graph, key, p))]
        if wins:
            phase.windows[key] = wins
    return [out[d] for d in sorted(out)]


def feasible_days(defs: Definitions, phase: Phase, days: list[date], root: str, first: date) -> tuple[list[date], dict[date, str]]:
    """Days of ``days`` whose input windows all exist in the store; and why the others wait."""
    graph = defs.resolve_asset_graph()
    stored: dict[AssetKey, set[date]] = {}
    waiting: dict[date, str] = {}
    ok = []
    for day in days:
        reason = None
        for key, wins in phase.windows.items():
            for parent, before, after in wins:
                if parent not in stored:
                    dataset = graph.assets_def_for_key(parent).metadata_by_key[parent][DATASET_KEY]
                    stored[parent] = set(existing_days(UPath(root), dataset))
                for k in range(-before, after + 1):
                    need = day + timedelta(days=k)
                    if need >= first and need not in stored[parent]:
                        reason = f"{key.to_user_string()} waits for {parent.to_user_string()} of {need}"
                        break
                if reason:
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
