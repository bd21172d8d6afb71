"""The Dagster code location: the asset graph built from the configuration.

Config → factories per market × peg × interval → pure functions → IO manager → store.
``defs`` is loaded lazily (``@dagster.definitions``): each load reads the configuration in
force (``$MNEMO_CONFIG`` / ``./mnemo.yaml`` and the ``MNEMO_*`` overrides).
"""

from __future__ import annotations

from dagster import Definitions, definitions, in_process_executor

from mnemo_assets.config import Settings, load_settings
from mnemo_assets.defs.automation import archive_recheck_sensor, automation_sensor
from mnemo_assets.defs.backfills import backfill_planner_sensor
from mnemo_assets.defs.grids import build_grid_asset
from mnemo_assets.defs.metadata import build_metadata_assets
from mnemo_assets.defs.partitions import daily_partitions
from mnemo_assets.defs.resources import ArchiveResource, StoreResource, io_manager_from_settings
from mnemo_assets.defs.returns import build_returns_asset
from mnemo_assets.defs.trades import build_trades_assets
from mnemo_assets.quiet import quiet_dagster

quiet_dagster()


def build_assets(settings: Settings) -> list:
    partitions = daily_partitions(settings.start_date)
    batch = settings.backfill.days_per_batch
    specs = {interval: settings.metadata.load_spec(interval) for interval in settings.metadata.intervals}
    assets = []
    for market, market_settings in settings.markets.items():
        assets.append(build_trades_assets(market, market_settings, partitions, batch, settings.automation.archive_cron, settings.reconciliation))
        for peg in market_settings.pegs:
            for interval in settings.grids.intervals:
                assets.append(build_grid_asset(market, peg, interval, partitions, batch))
            for interval in settings.returns.intervals:
                assets.append(build_returns_asset(market, peg, interval, settings.returns.grid_interval, partitions, batch))
            for interval in settings.metadata.intervals:
                assets += build_metadata_assets(
                    market,
                    peg,
                    interval,
                    settings.metadata.grid_interval,
                    settings.metadata.returns_interval,
                    specs[interval],
                    partitions,
                    batch,
                )
    return assets


def build_definitions(settings: Settings | None = None) -> Definitions:
    """The code location's ``Definitions`` for ``settings`` (default: :func:`load_settings`)."""
    settings = settings or load_settings()
    return Definitions(
        assets=build_assets(settings),
        sensors=[
            automation_sensor(settings.automation.enabled),
            backfill_planner_sensor(settings.data_root, settings.start_date),
            archive_recheck_sensor(list(settings.markets), settings.data_root, settings.automation.recheck_days, settings.automation.enabled),
        ],
        # one process per run: steps share the process (no per-step interpreter start)
        executor=in_process_executor,
        resources={
            "archive": ArchiveResource.from_settings(settings),
            "parquet_io_manager": io_manager_from_settings(settings),
            "store": StoreResource.from_settings(settings),
        },
    )


@definitions
def defs() -> Definitions:
    """The code location, from the configuration in force."""
    return build_definitions()
