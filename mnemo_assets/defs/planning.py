"""The one planner: which asset-days a request runs, which wait (and for what), which are stored.

Every way of running the graph plans with :func:`plan`: ``mnemo materialize``/``mnemo
backfill`` (in process or submitted to a daemon with ``--url``), ``MetadataEngine.compute``,
and backfills launched from the Dagster UI (the ``mnemo_backfill_planner`` sensor applies it
to the backfill's target before the daemon runs anything). The same request therefore runs
the same asset-days wherever it runs.

An asset-day is **runnable** when every input day its partition mapping names is either
stored or runnable in the same request (input days before the first partition count as
present: lookbacks are computed on what exists). The others **wait**, with the first missing
input as the reason: returns of the last day of a range wait for the next day's grid,
metadata wait for every day of their windows. Nothing is ever computed without its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from dagster import AssetKey, TimeWindowPartitionMapping
from upath import UPath

from mnemo_assets.storage.io_manager import DATASET_KEY
from mnemo_assets.storage.parquet import existing_days


@dataclass
class Plan:
    """The outcome of planning a request: per asset, the days to run, the days that wait (with
    the reason) and the days skipped because they are stored (missing-only requests)."""

    run: dict[AssetKey, list[date]] = field(default_factory=dict)
    waiting: dict[AssetKey, dict[date, str]] = field(default_factory=dict)
    stored: dict[AssetKey, list[date]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Asset-days to run."""
        return sum(len(days) for days in self.run.values())

    @property
    def total_waiting(self) -> int:
        return sum(len(days) for days in self.waiting.values())

    def ranges(self) -> dict[AssetKey, list[tuple[date, date]]]:
        """Contiguous day ranges to run, per asset (what an asset backfill is launched with)."""
        return {key: spans(days) for key, days in self.run.items() if days}

    def reasons(self, limit: int = 20) -> list[str]:
        """``asset day..day: reason`` lines for the waiting asset-days (ranges merged)."""
        lines = []
        for key in sorted(self.waiting, key=lambda k: k.to_user_string()):
            by_reason: dict[str, list[date]] = {}
            for day, reason in self.waiting[key].items():
                by_reason.setdefault(_generic(reason), []).append(day)
            for reason, days in by_reason.items():
                for a, b in spans(days):
                    when = a.isoformat() if a == b else f"{a}..{b}"
                    lines.append(f"{key.to_user_string()} {when}: {reason}")
        return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def _generic(reason: str) -> str:
    return reason


def spans(days: Iterable[date]) -> list[tuple[date, date]]:
    """Contiguous ``(first, last)`` runs of a set of days."""
    out: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if out and day == out[-1][1] + timedelta(days=1):
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out


def batches(days: Iterable[date], size: int) -> list[tuple[date, date]]:
    """Contiguous runs of at most ``size`` days."""
    out: list[tuple[date, date]] = []
    for a, b in spans(days):
        while a <= b:
            end = min(b, a + timedelta(days=size - 1))
            out.append((a, end))
            a = end + timedelta(days=1)
    return out


def inputs_of(graph, key: AssetKey) -> list[tuple[AssetKey, int, int]]:
    """``(parent, days before, days after)`` of every input (0, 0 for a day-to-day mapping)."""
    out = []
    for parent in sorted(graph.get(key).parent_keys, key=lambda k: k.to_user_string()):
        mapping = graph.get_partition_mapping(key, parent)
        if isinstance(mapping, TimeWindowPartitionMapping):
            out.append((parent, -mapping.start_offset, mapping.end_offset))
        else:
            out.append((parent, 0, 0))
    return out


def topological(graph, keys: Iterable[AssetKey]) -> list[AssetKey]:
    """``keys`` ordered parents first (ties by name)."""
    keys = set(keys)
    depth: dict[AssetKey, int] = {}

    def d(key: AssetKey) -> int:
        if key not in depth:
            depth[key] = 1 + max((d(p) for p in graph.get(key).parent_keys), default=-1)
        return depth[key]

    return sorted(keys, key=lambda k: (d(k), k.to_user_string()))


def upstream_closure(graph, keys: Iterable[AssetKey]) -> set[AssetKey]:
    """``keys`` and everything they depend on."""
    out: set[AssetKey] = set()
    todo = list(keys)
    while todo:
        key = todo.pop()
        if key not in out:
            out.add(key)
            todo += list(graph.get(key).parent_keys)
    return out


def dataset_of(graph, key: AssetKey) -> str:
    value = graph.get(key).metadata.get(DATASET_KEY)
    if value is None:
        raise ValueError(f"{key.to_user_string()} has no '{DATASET_KEY}' metadata")
    return value.value if hasattr(value, "value") else str(value)


def store_listing(graph, root: str) -> Callable[[AssetKey], set[date]]:
    """``key → days stored``: a fresh listing of the store each time it is called for a key
    (what any process has written, no cross-process cache)."""

    def stored(key: AssetKey) -> set[date]:
        return set(existing_days(UPath(root), dataset_of(graph, key)))

    return stored


def plan(
    graph,
    requested: Mapping[AssetKey, Iterable[date]],
    stored_days: Callable[[AssetKey], Iterable[date]],
    first: date,
    missing_only: Iterable[AssetKey] = (),
) -> Plan:
    """Plan a request: ``requested`` maps assets to the days asked for; ``stored_days(key)``
    lists what the store holds (read once per key per plan); ``missing_only`` assets skip
    days already stored. See the module docstring for the rule."""
    missing_only = set(missing_only)
    listing: dict[AssetKey, set[date]] = {}

    def stored(key: AssetKey) -> set[date]:
        if key not in listing:
            listing[key] = set(stored_days(key))
        return listing[key]

    result = Plan()
    runnable: dict[AssetKey, set[date]] = {}
    for key in topological(graph, requested):
        days = sorted(set(requested[key]))
        ok: list[date] = []
        waiting: dict[date, str] = {}
        inputs = inputs_of(graph, key)
        for day in days:
            reason = None
            for parent, before, after in inputs:
                present = stored(parent) | runnable.get(parent, set())
                for k in range(-before, after + 1):
                    need = day + timedelta(days=k)
                    if need >= first and need not in present:
                        state = "waits itself" if need in set(requested.get(parent, ())) else "not stored and not requested"
                        reason = f"waits for {parent.to_user_string()} of {need} ({state})"
                        break
                if reason:
                    break
            if reason:
                waiting[day] = reason
            else:
                ok.append(day)
        runnable[key] = set(ok)
        if key in missing_only:
            have = stored(key)
            result.stored[key] = [d for d in ok if d in have]
            ok = [d for d in ok if d not in have]
        result.run[key] = ok
        if waiting:
            result.waiting[key] = waiting
    return result


def requested_days(keys: Iterable[AssetKey], days: Iterable[date]) -> dict[AssetKey, list[date]]:
    """The same days for every selected asset (what a CLI range or a UI range asks for)."""
    days = sorted(set(days))
    return {key: list(days) for key in keys}
