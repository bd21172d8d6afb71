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
    from mnemo_assets.defs.execution import run_range
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
    selection = AssetSelection.all() if not args.select else AssetSelection.from_coercible(args.select)
    selected = selection.resolve(graph)
    if not selected:
        print(f"mnemo: --select {args.select} matches no asset", file=sys.stderr)
        return 2
    instance = get_instance()
    days = [start + timedelta(days=k) for k in range((end - start).days + 1)]
    size = args.days_per_batch or settings.backfill.days_per_batch
    print(
        f"mnemo: materializing {len(selected)} assets for {start}..{end} "
        f"from the {settings.source.kind} source into {settings.data_root}; runs recorded in {instance.root_directory}"
    )
    with tqdm(total=len(days) * len(selected), desc="asset-days", unit="day", disable=args.quiet) as bar:
        summary = run_range(
            defs, selected, days, settings.data_root, settings.start_date, instance, size,
            missing_only=selected if args.missing_only else (), tags={"mnemo/command": "materialize"},
            progress=lambda n: bar.update(n), log=lambda m: print(f"mnemo: {m}", file=sys.stderr),
        )
    waiting = sorted({(day, reason) for (_, day), reason in summary.skipped.items()})
    for day, reason in waiting[:20]:
        print(f"mnemo: skipped {day}: {reason}")
    if len(waiting) > 20:
        print(f"mnemo: ... and {len(waiting) - 20} more skipped asset-days")
    if summary.failed:
        print("mnemo: a run failed; see the log above or `dagster dev`", file=sys.stderr)
        return 1
    print(f"mnemo: done: {len(summary.runs)} run(s). Data in {settings.data_root}; run `dagster dev` to browse runs and lineage.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnemo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize", help="materialize the asset graph for a date range (one run per batch of days)")
    mat.add_argument("--start", type=_parse_day, help="first day (default: the configured start_date)")
    mat.add_argument("--end", type=_parse_day, help="last day, inclusive (default: start + 6 days)")
    mat.add_argument("--select", help="Dagster asset selection, e.g. 'key:binance/spot/*' (default: everything)")
    mat.add_argument("--days-per-batch", type=int, help="days per run (default: backfill.days_per_batch)")
    mat.add_argument("--missing-only", action="store_true", help="skip asset-days already stored (default: recompute them)")
    mat.add_argument("--quiet", action="store_true", help="no progress bar")
    mat.set_defaults(func=cmd_materialize)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=Warning, module="dagster")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
