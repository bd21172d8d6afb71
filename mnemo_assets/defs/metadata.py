"""Rolling metadata: per-hour partials of grids and returns, and the metadata asset over them.

Per (market, peg, metadata interval Δm):
``metadata_{Δm}_index_partials`` (grid day D → per-hour moments), ``metadata_{Δm}_returns_partials``
(returns day D → per-hour moments) and ``metadata_{Δm}`` (partials of D−7..D and D−30..D for the
default spec). A daily partition reads hourly rows, so its cost does not grow with the lookback.
"""

from datetime import date, timedelta

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    DailyPartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
)

from mnemo_assets.defs.automation import when_inputs_ready
from mnemo_assets.defs.checks import DayAudit, check_specs, grouped
from mnemo_assets.defs.keys import OWNERS, grid_key, group, metadata_key, partials_key, returns_key
from mnemo_assets.defs.lineage import metadata_lineage, with_quantiles
from mnemo_assets.defs.partitions import backfill_policy
from mnemo_assets.defs.resources import StoreResource
from mnemo_assets.defs.windows import require_window
from mnemo_assets.grids import GRID_SCHEMA
from mnemo_assets.intervals import interval_name, to_micros
from mnemo_assets.metadata import (
    METADATA_CHECKS,
    MetadataSpec,
    compile_plan,
    metadata_from_partials,
    metadata_schema,
    metadata_violations,
    partials,
)
from mnemo_assets.returns import RETURNS_SCHEMA
from mnemo_assets.storage.io_manager import DATASET_KEY, table_schema
from mnemo_assets.storage.layout import metadata_dataset, metadata_partials_dataset

#: the metadata's asset check (blocking): every invariant of metadata.METADATA_CHECKS
METADATA_ASSET_CHECKS = {"invariants": "; ".join(METADATA_CHECKS.values())}


def _days_back(window: timedelta) -> int:
    """Days before D that windows ending in D reach: ceil(W / 1 day)."""
    return -(-to_micros(window) // 86_400_000_000)


def metadata_descriptions(spec: MetadataSpec) -> dict[str, str]:
    """SPEC.md's meaning of every metadata column of ``spec`` (shown in the UI's column table)."""
    out = {
        "symbol": "base asset",
        "grid_time": "G = D + kΔm; the row exists when the symbol has a grid row with last_trade_time in [G − W_max, G)",
        "last_trade_time": "the symbol's latest last_trade_time < G",
    }
    for w, exprs in spec.index.items():
        for e in exprs:
            out[e.meta.output_name()] = f"over the symbol's grid rows with last_trade_time in [G − {interval_name(w)}, G)"
    for w, exprs in spec.returns.items():
        for e in exprs:
            out[e.meta.output_name()] = (
                f"over the symbol's gridded returns with returns_grid_time in [G − {interval_name(w)}, G − {interval_name(spec.returns_interval)}]"
            )
    for c in spec.quantile_columns:
        out[f"{c}_q"] = f"rank({c}, average) / count(non-null {c}) across the symbols at the same grid_time; null where {c} is null"
    return out


def build_metadata_assets(
    market: str,
    peg: str,
    interval: str,
    grid_interval: str,
    returns_interval: str,
    spec: MetadataSpec,
    partitions_def: DailyPartitionsDefinition,
    days_per_batch: int,
) -> list:
    first = partitions_def.start.date()
    version = spec.version
    iplan, rplan = compile_plan(spec.index), compile_plan(spec.returns)
    key = metadata_key(market, peg, interval)
    ikey, rkey = partials_key(market, peg, interval, "index"), partials_key(market, peg, interval, "returns")
    common = dict(
        partitions_def=partitions_def,
        backfill_policy=backfill_policy(days_per_batch),
        io_manager_key="parquet_io_manager",
        group_name=group(market),
        kinds={"polars", "parquet"},
        code_version=version,
        owners=OWNERS,
        automation_condition=when_inputs_ready(days=2),
    )

    def per_day_partials(context, frame: pl.LazyFrame, plan, time_col: str, last_time: bool):
        out = {}
        for key_ in context.partition_keys:
            day = date.fromisoformat(key_)
            rows = frame.filter(pl.col(time_col).dt.date() == day)
            out[key_] = partials(rows, plan, time_col, spec.interval, last_time=last_time).collect()
        return out

    @asset(
        key=ikey,
        ins={"grid": AssetIn(grid_key(market, peg, grid_interval))},
        description=f"Per-hour moments of the {grid_interval} grid's inputs to the index metadata ({interval} buckets of last_trade_time).",
        metadata={
            DATASET_KEY: metadata_partials_dataset(market, interval, "index", peg),
            "dagster/column_schema": table_schema(
                partials(pl.LazyFrame(schema=GRID_SCHEMA), iplan, "last_trade_time", spec.interval, True).collect_schema()
            ),
        },
        **common,
    )
    def _index_partials(context: AssetExecutionContext, grid: pl.LazyFrame):
        return per_day_partials(context, grid, iplan, "last_trade_time", True)

    @asset(
        key=rkey,
        ins={"returns": AssetIn(returns_key(market, peg, returns_interval))},
        description=f"Per-hour moments of the {returns_interval} gridded returns' inputs to the returns metadata.",
        metadata={
            DATASET_KEY: metadata_partials_dataset(market, interval, "returns", peg),
            "dagster/column_schema": table_schema(
                partials(pl.LazyFrame(schema=RETURNS_SCHEMA), rplan, "returns_grid_time", spec.interval).collect_schema()
            ),
        },
        **common,
    )
    def _returns_partials(context: AssetExecutionContext, returns: pl.LazyFrame):
        return per_day_partials(context, returns, rplan, "returns_grid_time", False)

    back_i, back_r = _days_back(spec.max_index_window), _days_back(spec.max_returns_window)
    ins = {
        "index_partials": AssetIn(ikey, partition_mapping=TimeWindowPartitionMapping(start_offset=-back_i, end_offset=0)),
        "returns_partials": AssetIn(rkey, partition_mapping=TimeWindowPartitionMapping(start_offset=-back_r, end_offset=0)),
    }
    if iplan.generic:
        ins["grid"] = AssetIn(grid_key(market, peg, grid_interval), partition_mapping=TimeWindowPartitionMapping(start_offset=-back_i, end_offset=0))
    if rplan.generic:
        ins["returns"] = AssetIn(
            returns_key(market, peg, returns_interval), partition_mapping=TimeWindowPartitionMapping(start_offset=-back_r, end_offset=0)
        )
    columns = [*spec.index_columns, *spec.returns_columns]
    schema = metadata_schema(spec, grid_schema=GRID_SCHEMA, returns_schema=RETURNS_SCHEMA)

    @asset(
        key=key,
        ins=ins,
        description=(
            f"Rolling metadata of {market} {peg} symbols every {interval}: index metrics over the {grid_interval} grid "
            f"({', '.join(interval_name(w) for w in spec.index)}), returns metrics over {returns_interval} returns "
            f"({', '.join(interval_name(w) for w in spec.returns)}), hourly cross-sectional quantiles. Spec version {version}."
        ),
        metadata={
            DATASET_KEY: metadata_dataset(market, interval, peg),
            "mnemo/spec_version": version,
            "dagster/column_schema": table_schema(schema, metadata_descriptions(spec)),
            "dagster/column_lineage": with_quantiles(
                metadata_lineage(spec, grid_key(market, peg, grid_interval), returns_key(market, peg, returns_interval)), columns
            ),
        },
        check_specs=check_specs(key, METADATA_ASSET_CHECKS, partitions_def),
        **common,
    )
    def _metadata(
        context: AssetExecutionContext, index_partials: pl.LazyFrame, returns_partials: pl.LazyFrame, store: StoreResource, **raw: pl.LazyFrame
    ):
        """``raw`` holds ``grid`` / ``returns`` windows when the spec has non-decomposable aggregations."""
        days = [date.fromisoformat(k) for k in context.partition_keys]
        for name, back in (("index_partials", back_i), ("returns_partials", back_r)):
            received = [date.fromisoformat(k) for k in context.asset_partition_keys_for_input(name)]
            require_window(received, days, before=back, after=0, first=first, what=key.to_user_string())
        # one computation for the whole run, split per day
        out = metadata_from_partials(
            index_partials,
            returns_partials,
            spec,
            days[0],
            days[-1] + timedelta(days=1),
            grid_schema=GRID_SCHEMA,
            returns_schema=RETURNS_SCHEMA,
            raw_grid=raw.get("grid"),
            raw_returns=raw.get("returns"),
        )

        audit = DayAudit(
            context,
            key,
            metadata_dataset(market, interval, peg),
            store.base_dir,
            METADATA_ASSET_CHECKS,
            schema,
            staging_dir=store.staging_dir,
        )
        for day in days:
            part = out.filter(pl.col("grid_time").dt.date() == day)
            audit.stage(day, part)
            audit.record(day, *grouped(metadata_violations(part, spec), {"invariants": list(METADATA_CHECKS)}))
        yield from audit.outcome()

    return [_index_partials, _returns_partials, _metadata]
