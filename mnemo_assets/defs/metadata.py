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
    AssetKey,
    BackfillPolicy,
    DailyPartitionsDefinition,
    Output,
    TimeWindowPartitionMapping,
    asset,
)

from mnemo_assets.defs.automation import when_inputs_ready
from mnemo_assets.defs.checks import CheckLedger, check_specs
from mnemo_assets.defs.keys import OWNERS, grid_key, group, metadata_key, returns_key
from mnemo_assets.defs.lineage import metadata_lineage, with_quantiles
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

def _days_back(window: timedelta) -> int:
    """Days before D that windows ending in D reach: ceil(W / 1 day)."""
    return -(-to_micros(window) // 86_400_000_000)


def partials_key(market: str, peg: str, interval: str, source: str) -> AssetKey:
    return AssetKey([*metadata_key(market, peg, interval).path[:-1], f"metadata_{interval}_{source}_partials"])


def require_schema(frame: pl.DataFrame, schema: pl.Schema, what: str) -> None:
    """Every partition of the dataset has exactly ``schema`` (``symbol`` may be any string-like
    dtype: it is stored as strings), empty or not: a partition that would not read back with
    the others is never written."""
    got = [(c, t) for c, t in frame.schema.items() if c != "symbol"]
    want = [(c, t) for c, t in schema.items() if c != "symbol"]
    if frame.columns[:1] != ["symbol"] or got != want:
        raise TypeError(f"{what}: metadata schema {dict(frame.schema)} differs from the spec's {dict(schema)}")


def build_metadata_assets(
    market: str, peg: str, interval: str, grid_interval: str, returns_interval: str, spec: MetadataSpec,
    partitions_def: DailyPartitionsDefinition, days_per_batch: int,
) -> list:
    first = partitions_def.start.date()
    version = spec.version
    iplan, rplan = compile_plan(spec.index), compile_plan(spec.returns)
    key = metadata_key(market, peg, interval)
    ikey, rkey = partials_key(market, peg, interval, "index"), partials_key(market, peg, interval, "returns")
    common = dict(
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=days_per_batch),
        io_manager_key="parquet_io_manager",
        group_name=group(market),
        kinds={"polars", "parquet"},
        code_version=version,
        owners=OWNERS,
        automation_condition=when_inputs_ready(days=2),
    )

    def per_day_partials(context, frame: pl.LazyFrame, plan, time_col: str, last_time: bool):
        for key_ in context.partition_keys:
            day = date.fromisoformat(key_)
            rows = frame.filter(pl.col(time_col).dt.date() == day)
            yield key_, partials(rows, plan, time_col, spec.interval, last_time=last_time).collect()

    @asset(
        key=ikey, ins={"grid": AssetIn(grid_key(market, peg, grid_interval))},
        description=f"Per-hour moments of the {grid_interval} grid's inputs to the index metadata ({interval} buckets of last_trade_time).",
        metadata={
            DATASET_KEY: metadata_partials_dataset(market, interval, "index", peg),
            "dagster/column_schema": table_schema(partials(pl.LazyFrame(schema=GRID_SCHEMA), iplan, "last_trade_time", spec.interval, True).collect_schema()),
        },
        **common,
    )
    def _index_partials(context: AssetExecutionContext, grid: pl.LazyFrame):
        return Output(per_day_partials(context, grid, iplan, "last_trade_time", True))

    @asset(
        key=rkey, ins={"returns": AssetIn(returns_key(market, peg, returns_interval))},
        description=f"Per-hour moments of the {returns_interval} gridded returns' inputs to the returns metadata.",
        metadata={
            DATASET_KEY: metadata_partials_dataset(market, interval, "returns", peg),
            "dagster/column_schema": table_schema(partials(pl.LazyFrame(schema=RETURNS_SCHEMA), rplan, "returns_grid_time", spec.interval).collect_schema()),
        },
        **common,
    )
    def _returns_partials(context: AssetExecutionContext, returns: pl.LazyFrame):
        return Output(per_day_partials(context, returns, rplan, "returns_grid_time", False))

    back_i, back_r = _days_back(spec.max_index_window), _days_back(spec.max_returns_window)
    ins = {
        "index_partials": AssetIn(ikey, partition_mapping=TimeWindowPartitionMapping(start_offset=-back_i, end_offset=0)),
        "returns_partials": AssetIn(rkey, partition_mapping=TimeWindowPartitionMapping(start_offset=-back_r, end_offset=0)),
    }
    if iplan.generic:
        ins["grid"] = AssetIn(grid_key(market, peg, grid_interval), partition_mapping=TimeWindowPartitionMapping(start_offset=-back_i, end_offset=0))
    if rplan.generic:
        ins["returns"] = AssetIn(returns_key(market, peg, returns_interval), partition_mapping=TimeWindowPartitionMapping(start_offset=-back_r, end_offset=0))
    columns = [*spec.index_columns, *spec.returns_columns]
    schema = metadata_schema(spec, grid_schema=GRID_SCHEMA, returns_schema=RETURNS_SCHEMA)

    @asset(
        key=key, ins=ins,
        description=(
            f"Rolling metadata of {market} {peg} symbols every {interval}: index metrics over the {grid_interval} grid "
            f"({', '.join(interval_name(w) for w in spec.index)}), returns metrics over {returns_interval} returns "
            f"({', '.join(interval_name(w) for w in spec.returns)}), hourly cross-sectional quantiles. Spec version {version}."
        ),
        metadata={
            DATASET_KEY: metadata_dataset(market, interval, peg),
            "mnemo/spec_version": version,
            "dagster/column_schema": table_schema(schema),
            "dagster/column_lineage": with_quantiles(
                metadata_lineage(spec, grid_key(market, peg, grid_interval), returns_key(market, peg, returns_interval)), columns
            ),
        },
        check_specs=check_specs(key, METADATA_CHECKS, partitions_def),
        **common,
    )
    def _metadata(context: AssetExecutionContext, index_partials: pl.LazyFrame, returns_partials: pl.LazyFrame, **raw: pl.LazyFrame):
        """``raw`` holds ``grid`` / ``returns`` windows when the spec has non-decomposable aggregations."""
        days = [date.fromisoformat(k) for k in context.partition_keys]
        for name, back in (("index_partials", back_i), ("returns_partials", back_r)):
            received = [date.fromisoformat(k) for k in context.asset_partition_keys_for_input(name)]
            require_window(received, days, before=back, after=0, first=first, what=key.to_user_string())
        ledger = CheckLedger(key, METADATA_CHECKS)
        # one computation for the whole run, split per day
        out = metadata_from_partials(
            index_partials, returns_partials, spec, days[0], days[-1] + timedelta(days=1),
            grid_schema=GRID_SCHEMA, returns_schema=RETURNS_SCHEMA, raw_grid=raw.get("grid"), raw_returns=raw.get("returns"),
        )

        def per_day():
            for day in days:
                part = out.filter(pl.col("grid_time").dt.date() == day)
                require_schema(part, schema, f"{key.to_user_string()} {day}")
                ledger.record(day.isoformat(), metadata_violations(part, spec))
                yield day.isoformat(), part

        yield Output(per_day())
        yield from ledger.results(context)

    return [_index_partials, _returns_partials, _metadata]
