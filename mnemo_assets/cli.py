"""``mnemo``: materialize the asset graph for a date range from a terminal.

Runs are recorded in the Dagster instance under ``$DAGSTER_HOME`` (default ``./.dagster_home``),
so ``dagster dev`` afterwards shows them with their partitions and lineage.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from datetime import date, timedelta


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def cmd_materialize(args: argparse.Namespace) -> int:
    from dagster import AssetSelection, materialize
    from tqdm.auto import tqdm

    from mnemo_assets.config import load_settings
    from mnemo_assets.defs.planning import batches, feasible_days, phases
    from mnemo_assets.definitions import build_definitions
    from mnemo_assets.instance import get_instance

    settings = load_settings()
    start = args.start or settings.start_date
    end = args.end or (start + timedelta(days=6))
    if end < start:
        print(f"mnemo: --end {end} is before --start {start}", file=sys.stderr)
        return 2
    if start < settings.start_date:
        print(f"mnemo: --start {start} is before the first partition {settings.start_date} (MNEMO_START_DATE)", file=sys.stderr)
        return 2
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    assets = list(defs.assets or [])
    selection = AssetSelection.all() if not args.select else AssetSelection.from_coercible(args.select)
    selected = selection.resolve(graph)
    if not selected:
        print(f"mnemo: --select {args.select} matches no asset", file=sys.stderr)
        return 2
    instance = get_instance()
    plan = phases(defs, selected)
    all_days = [start + timedelta(days=k) for k in range((end - start).days + 1)]
    size = args.days_per_batch or settings.backfill.days_per_batch
    print(
        f"mnemo: materializing {len(selected)} assets for {start}..{end} in {len(plan)} phase(s) "
        f"from the {settings.source.kind} source into {settings.data_root}; runs recorded in {instance.root_directory}"
    )
    failed = 0
    for number, phase in enumerate(plan, 1):
        days, waiting = feasible_days(defs, phase, all_days, settings.data_root, settings.start_date)
        for day, reason in sorted(waiting.items()):
            print(f"mnemo: phase {number}: skipping {day}: {reason}")
        runs = batches(days, size)
        for lo, hi in tqdm(runs, desc=f"phase {number}/{len(plan)}", unit="run", disable=args.quiet or not runs):
            tags = {
                "dagster/asset_partition_range_start": lo.isoformat(),
                "dagster/asset_partition_range_end": hi.isoformat(),
                "mnemo/command": "materialize",
            }
            result = materialize(
                assets, selection=phase.keys, instance=instance, tags=tags, resources=defs.resources, raise_on_error=False
            )
            if not result.success:
                failed += 1
                print(f"mnemo: run {result.run_id} for {lo}..{hi} failed; see the log above or `dagster dev`", file=sys.stderr)
        if failed:
            break
    if failed:
        return 1
    print(f"mnemo: done. Data in {settings.data_root}; run `dagster dev` to browse runs and lineage.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnemo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize", help="materialize the asset graph for a date range (one run per batch of days)")
    mat.add_argument("--start", type=_parse_day, help="first day (default: the configured start_date)")
    mat.add_argument("--end", type=_parse_day, help="last day, inclusive (default: start + 6 days)")
    mat.add_argument("--select", help="Dagster asset selection, e.g. 'key:binance/spot/*' (default: everything)")
    mat.add_argument("--days-per-batch", type=int, help="days per run (default: backfill.days_per_batch)")
    mat.add_argument("--quiet", action="store_true", help="no progress bar")
    mat.set_defaults(func=cmd_materialize)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=Warning, module="dagster")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
