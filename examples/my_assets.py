r"""Add your own asset: an hourly VWAP per symbol from the 10-minute spot USDT grid.

A code location that is the project's plus one derived asset, ``binance/spot/usdt/spot_usdt_vwap_1h``
(README, "Add your own asset"). It shows the three parts every asset of this project has:

1. a **pure polars function** (:func:`hourly_vwap`, no Dagster in it) and the checks of its
   output (:func:`vwap_violations`), testable on any frame;
2. a **daily-partitioned asset** with the project's partitions and backfill policy, stored by the
   project's ``parquet_io_manager`` under the dataset named in its ``mnemo/dataset`` definition
   metadata (``custom/vwap_1h/spot/peg_symbol=USDT``), with its column schema, written
   stage → audit → publish with :class:`~mnemo_assets.defs.checks.DayAudit`: a day whose
   blocking check fails is never published (the stored partition stays as it was);
3. a module-level ``defs`` that merges it with the project's code location, so Dagster sees the
   whole graph (the grid it reads, the sensors, the resources):

.. code-block:: bash

    DAGSTER_HOME=$PWD/.dagster_home .venv/bin/dagster asset materialize -f examples/my_assets.py \
      --select 'binance/spot/usdt/spot_usdt_vwap_1h' --partition 2024-12-03
    DAGSTER_HOME=$PWD/.dagster_home .venv/bin/dagster dev -f examples/my_assets.py

and a notebook reads it with ``ms.binance.ParquetDataset("custom/vwap_1h/spot/peg_symbol=USDT")``.
In ``dagster dev`` the project's ``mnemo_daily`` sensor (it targets every asset of the code
location) keeps it current like the grids: each new day once that day's grid exists and passed
its checks, and again when the grid changes. (``mnemo backfill`` runs the project's own code
location, which does not have this asset.)
"""

from datetime import date

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetKey, Definitions, asset, definitions

from mnemo_assets.config import Settings, load_settings
from mnemo_assets.definitions import build_definitions
from mnemo_assets.defs.automation import when_inputs_ready
from mnemo_assets.defs.checks import Check, DayAudit, check_specs
from mnemo_assets.defs.keys import OWNERS, grid_key, group
from mnemo_assets.defs.partitions import backfill_policy, daily_partitions
from mnemo_assets.defs.resources import StoreResource
from mnemo_assets.storage.io_manager import DATASET_KEY, table_schema

#: the input: the 10-minute last-trade grid of spot USDT pairs (``binance/spot/usdt/spot_usdt_grid_10m``)
GRID_KEY = grid_key("spot", "USDT", "10m")
#: the asset, beside the grid it reads, named like the project's assets (market, peg, what)
VWAP_KEY = AssetKey(["binance", "spot", "usdt", "spot_usdt_vwap_1h"])
#: where the IO manager stores it: ``{data_root}/custom/vwap_1h/spot/peg_symbol=USDT/date=D/part-0.parquet``
DATASET = "custom/vwap_1h/spot/peg_symbol=USDT"
#: bump it when :func:`hourly_vwap` changes: the UI then shows every partition as stale
CODE_VERSION = "1"

#: exactly the columns of every partition (``symbol`` is read back as the dataset's ``pl.Enum``)
VWAP_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,
        "date": pl.Date,
        "time": pl.Datetime("us"),
        "vwap": pl.Float64,
        "low": pl.Float64,
        "high": pl.Float64,
        "volume_base": pl.Float64,
        "volume_quote": pl.Float64,
        "trade_count": pl.UInt32,
        "buckets": pl.UInt32,
    }
)
VWAP_DESCRIPTIONS = {
    "symbol": "base asset (BTC)",
    "date": "date of the hour",
    "time": "start of the hour (UTC)",
    "vwap": "volume-weighted average price of the hour's trades: Σ volume_quote / Σ volume_base",
    "low": "lowest trade price of the hour",
    "high": "highest trade price of the hour",
    "volume_base": "Σ qty of the hour's trades (base units)",
    "volume_quote": "Σ quote_qty of the hour's trades (quote units)",
    "trade_count": "number of trades in the hour",
    "buckets": "10-minute grid rows (buckets with trades) in the hour",
}

#: the asset's checks: both blocking, so a failing day is never published
VWAP_CHECKS = [
    Check("vwap_within_range", "low <= vwap <= high of its hour, and finite (up to the archive's rounding of quantities)"),
    Check("one_row_per_symbol_hour", "one row per (symbol, hour) with trades in the grid: rows = symbols × hours present"),
]


# ----------------------------------------------------------------------------- pure polars
def ordered_sum(column: str) -> pl.Expr:
    """Σ ``column`` over a group's grid rows added in time order. Polars' parallel group sums may
    add in another order from one run to the next (the last bits change); a fixed order gives a
    day the same bits whether it is materialized alone or in a batch (incremental = full)."""
    return pl.col(column).sort_by("time").cum_sum().last()


def hourly_vwap(grid: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """The hourly VWAP of every symbol of a last-trade grid: one row per ``(symbol, hour)``
    with trades, sorted by ``(symbol, time)``, with exactly :data:`VWAP_SCHEMA`.

    >>> from datetime import datetime
    >>> grid = pl.DataFrame({
    ...     "symbol": ["BTC", "BTC", "BTC"], "date": [date(2024, 12, 3)] * 3,
    ...     "time": [datetime(2024, 12, 3, 0, 0), datetime(2024, 12, 3, 0, 10), datetime(2024, 12, 3, 1, 0)],
    ...     "low": [99.0, 100.0, 101.0], "high": [101.0, 102.0, 101.0],
    ...     "volume_base": [1.0, 3.0, 2.0], "volume_quote": [100.0, 303.0, 202.0], "trade_count": [2, 5, 1]})
    >>> hourly_vwap(grid).select("time", "vwap", "low", "high", "trade_count", "buckets").rows()
    [(datetime.datetime(2024, 12, 3, 0, 0), 100.75, 99.0, 102.0, 7, 2), (datetime.datetime(2024, 12, 3, 1, 0), 101.0, 101.0, 101.0, 1, 1)]
    """
    return (
        grid.lazy()
        .group_by(pl.col("symbol").cast(pl.String), pl.col("time").cast(pl.Datetime("us")).dt.truncate("1h"))
        .agg(
            pl.col("date").first(),
            pl.col("low").min(),
            pl.col("high").max(),
            ordered_sum("volume_base"),
            ordered_sum("volume_quote"),
            pl.col("trade_count").sum().cast(pl.UInt32),
            pl.len().cast(pl.UInt32).alias("buckets"),
        )
        .with_columns((pl.col("volume_quote") / pl.col("volume_base")).alias("vwap"))
        .select(list(VWAP_SCHEMA))
        .sort("symbol", "time")
        .collect()
    )


def vwap_violations(vwap: pl.DataFrame, grid: pl.LazyFrame | pl.DataFrame) -> dict[str, int]:
    """Failing rows of each check of :data:`VWAP_CHECKS` for ``vwap`` computed from ``grid``
    (0 everywhere for a valid day). A vwap may lie outside ``[low, high]`` by the archive's
    rounding of each trade's quote quantity to 8 decimals, as for the grid's own vwaps."""
    slack = 1e-9 * pl.col("high").abs() + pl.col("trade_count").cast(pl.Float64) * 5e-9 / pl.col("volume_base") * (1.0 + pl.col("high").abs())
    outside = ((pl.col("vwap") < pl.col("low") - slack) | (pl.col("vwap") > pl.col("high") + slack) | ~pl.col("vwap").is_finite()).fill_null(True)
    expected = (
        grid.lazy()
        .select(pl.struct(pl.col("symbol").cast(pl.String), pl.col("time").cast(pl.Datetime("us")).dt.truncate("1h")).n_unique())
        .collect()
        .item()
    )
    keys = vwap.select(pl.struct("symbol", "time").n_unique()).item() if vwap.height else 0
    return {
        "vwap_within_range": int(vwap.select(outside.sum()).item() or 0),
        "one_row_per_symbol_hour": abs(vwap.height - int(expected)) + (vwap.height - keys),
    }


# ----------------------------------------------------------------------------- Dagster
def build_vwap_asset(settings: Settings):
    """The daily-partitioned asset for ``settings`` (its partitions start at ``start_date``)."""
    partitions = daily_partitions(settings.start_date)

    @asset(
        key=VWAP_KEY,
        ins={"grid": AssetIn(GRID_KEY)},
        partitions_def=partitions,
        backfill_policy=backfill_policy(settings.backfill.days_per_batch),
        io_manager_key="parquet_io_manager",
        group_name=group("spot"),
        kinds={"polars", "parquet"},
        code_version=CODE_VERSION,
        automation_condition=when_inputs_ready(days=2),
        description="Hourly VWAP of every spot USDT symbol, from the 10-minute last-trade grid (examples/my_assets.py).",
        owners=OWNERS,
        metadata={DATASET_KEY: DATASET, "dagster/column_schema": table_schema(VWAP_SCHEMA, VWAP_DESCRIPTIONS)},
        check_specs=check_specs(VWAP_KEY, VWAP_CHECKS, partitions),
    )
    def spot_usdt_vwap_1h(context: AssetExecutionContext, grid: pl.LazyFrame, store: StoreResource):
        # the grid of every day of the run (one day, or a batch of a backfill), as one LazyFrame
        audit = DayAudit(context, VWAP_KEY, DATASET, store.base_dir, VWAP_CHECKS, VWAP_SCHEMA)
        for partition in context.partition_keys:
            day_grid = grid.filter(pl.col("date") == date.fromisoformat(partition)).collect()
            vwap = hourly_vwap(day_grid)
            audit.stage(partition, vwap)  # write, not visible yet
            audit.record(partition, vwap_violations(vwap, day_grid))  # audit
        yield from audit.outcome()  # publish all days, or none and fail

    return spot_usdt_vwap_1h


def build_example_definitions(settings: Settings | None = None) -> Definitions:
    """The project's code location for ``settings`` (default: the configuration in force) plus
    the VWAP asset."""
    settings = settings or load_settings()
    project = build_definitions(settings)
    if not project.resolve_asset_graph().has(GRID_KEY):
        raise ValueError(f"{VWAP_KEY.to_user_string()} reads {GRID_KEY.to_user_string()}, which the configuration does not build")
    return Definitions.merge(project, Definitions(assets=[build_vwap_asset(settings)]))


@definitions
def defs() -> Definitions:
    """What ``dagster ... -f examples/my_assets.py`` loads: read at load time, like the project's."""
    return build_example_definitions()
