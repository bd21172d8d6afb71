"""Partitions and batching: one daily partition per UTC day from the configured start date.

The archive publishes day ``D`` during ``D+1``; with ``end_offset=0`` the newest partition is
the last complete day. Every asset shares one backfill policy, so a backfill can run the
assets of a day range together (Dagster groups assets into one run only when their policies
match).
"""

from datetime import date

from dagster import BackfillPolicy, DailyPartitionsDefinition


def daily_partitions(start_date: date) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC", end_offset=0)


def backfill_policy(days_per_batch: int) -> BackfillPolicy:
    """At most ``days_per_batch`` days per run (the seed's ``days_per_batch``)."""
    return BackfillPolicy.multi_run(max_partitions_per_run=days_per_batch)
