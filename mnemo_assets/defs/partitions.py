"""Partitions: one daily partition per UTC day from the configured start date.

The archive publishes day ``D`` during ``D+1``; with ``end_offset=0`` the newest partition is
the last complete day.
"""

from datetime import date

from dagster import DailyPartitionsDefinition


def daily_partitions(start_date: date) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC", end_offset=0)
