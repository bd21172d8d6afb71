"""Checking the upstream window an asset received (Dagster clamps partition mappings at the
partitions definition's bounds without telling: NOTES.md, dagster#26935)."""

from datetime import date, timedelta


class IncompleteWindowError(Exception):
    """An input window lacks days the computation needs."""


def require_window(received: list[date], days: list[date], before: int, after: int, first: date, what: str) -> None:
    """Every day in ``[D − before, D + after]`` for each output day ``D`` must have been received;
    days before ``first`` (the first partition) are allowed to be absent (lookbacks are
    computed on what exists), days after are not (a lookahead that does not exist yet)."""
    have = set(received)
    for day in days:
        for k in range(-before, after + 1):
            need = day + timedelta(days=k)
            if need < first:
                continue
            if need not in have:
                later = " (it is not a partition yet: the archive publishes a day during the next)" if k > 0 else ""
                raise IncompleteWindowError(f"{what} for {day} needs the input of {need}, which it did not receive{later}")
