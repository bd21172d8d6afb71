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
    """Materialize a range in process, recomputing stored days unless --missing-only."""
    from tqdm.auto import tqdm

    from mnemo_assets.defs.execution import run_range
    from mnemo_assets.instance import get_instance

    settings, defs, selected, days = _context(args)
    instance = get_instance()
    size = args.days_per_batch or settings.backfill.days_per_batch
    print(
        f"mnemo: materializing {len(selected)} assets for {days[0]}..{days[-1]} "
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


def _context(args: argparse.Namespace):
    """(settings, defs, selected keys, days) for a command's date range and selection."""
    from dagster import AssetSelection

    from mnemo_assets.config import load_settings
    from mnemo_assets.definitions import build_definitions

    settings = load_settings()
    start = args.start or settings.start_date
    end = args.end or (start + timedelta(days=6))
    if end < start:
        raise SystemExit(f"mnemo: --end {end} is before --start {start}")
    if start < settings.start_date:
        raise SystemExit(f"mnemo: --start {start} is before the first partition {settings.start_date} (MNEMO_START_DATE)")
    defs = build_definitions(settings)
    selection = AssetSelection.all() if not args.select else AssetSelection.from_coercible(args.select)
    selected = selection.resolve(defs.resolve_asset_graph())
    if not selected:
        raise SystemExit(f"mnemo: --select {args.select} matches no asset")
    days = [start + timedelta(days=k) for k in range((end - start).days + 1)]
    return settings, defs, selected, days


def cmd_backfill(args: argparse.Namespace) -> int:
    """Backfill a range: missing asset-days only unless --recompute; in process with --workers
    processes, or submitted to a running Dagster (--url) whose daemon runs it."""
    import uuid

    from tqdm.auto import tqdm

    from mnemo_assets.defs.execution import run_range, stored_days_in
    from mnemo_assets.defs.planning import batches, plan_days

    settings, defs, selected, days = _context(args)
    size = args.days_per_batch or settings.backfill.days_per_batch
    missing_only = () if args.recompute else selected
    planned, skipped = plan_days(defs, selected, days, stored_days_in(defs, settings.data_root), settings.start_date, missing_only)
    total = sum(len(v) for v in planned.values())
    waiting = sorted({(day, reason) for (_, day), reason in skipped.items()})
    for day, reason in waiting[:20]:
        print(f"mnemo: will skip {day}: {reason}")
    if not total:
        print(f"mnemo: nothing to do: every selected asset-day in {days[0]}..{days[-1]} is stored or waits for its inputs")
        return 0
    mode = "recompute" if args.recompute else "missing only"
    print(f"mnemo: backfill of {total} asset-days over {len(selected)} assets, {days[0]}..{days[-1]} ({mode}, {size} days per run)")
    if args.url:
        from mnemo_assets.graphql import DagsterGraphQL

        client = DagsterGraphQL(args.url)
        ranges = {key: [(a.isoformat(), b.isoformat()) for a, b in batches(d, 10**6)] for key, d in planned.items() if d}
        backfill_id = client.launch_asset_backfill(ranges, title=f"mnemo backfill {days[0]}..{days[-1]}", tags={"mnemo/command": "backfill"})
        print(f"mnemo: launched backfill {backfill_id}; see {args.url.rstrip('/')}/runs/b/{backfill_id}")
        if args.no_wait:
            return 0
        with tqdm(total=total, desc="asset-days", unit="day", disable=args.quiet) as bar:
            def show(status):
                done = sum(a["materialized"] + a["failed"] for a in status["assets"].values())
                bar.update(max(0, done - bar.n))
            status = client.wait_for_backfill(backfill_id, on_progress=show)
        failed = sum(a["failed"] for a in status["assets"].values())
        print(f"mnemo: backfill {backfill_id} {status['status']}: {failed} failed asset-day(s)")
        return 0 if status["status"] in ("COMPLETED", "COMPLETED_SUCCESS") and not failed else 1
    from mnemo_assets.instance import get_instance

    backfill_id = uuid.uuid4().hex[:8]
    with tqdm(total=total, desc="asset-days", unit="day", disable=args.quiet) as bar:
        summary = run_range(
            defs, selected, days, settings.data_root, settings.start_date, get_instance(), size,
            missing_only=missing_only, tags={"mnemo/command": "backfill", "mnemo/backfill": backfill_id},
            progress=lambda n: bar.update(n), log=lambda m: print(f"mnemo: {m}", file=sys.stderr),
            workers=args.workers, settings=settings,
        )
    print(f"mnemo: backfill {backfill_id}: {len(summary.runs)} run(s), {len(summary.failed)} failed (runs tagged mnemo/backfill={backfill_id})")
    return 1 if summary.failed else 0


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
    bf = sub.add_parser("backfill", help="backfill a range: missing days only, or everything with --recompute")
    bf.add_argument("--start", type=_parse_day, help="first day (default: the configured start_date)")
    bf.add_argument("--end", type=_parse_day, help="last day, inclusive (default: start + 6 days)")
    bf.add_argument("--select", help="Dagster asset selection (default: everything)")
    bf.add_argument("--days-per-batch", type=int, help="days per run (default: backfill.days_per_batch)")
    bf.add_argument("--workers", type=int, default=1, help="runs at once, in process (default 1)")
    bf.add_argument("--recompute", action="store_true", help="re-materialize stored days too")
    bf.add_argument("--url", help="submit to the Dagster webserver at URL; its daemon runs the backfill")
    bf.add_argument("--no-wait", action="store_true", help="with --url: return once launched")
    bf.add_argument("--quiet", action="store_true", help="no progress bar")
    bf.set_defaults(func=cmd_backfill)
    return parser


def main(argv: list[str] | None = None) -> int:
    from dagster import BetaWarning, PreviewWarning

    # features the project relies on knowingly (backfill policies, data versions, partitioned checks)
    for category in (BetaWarning, PreviewWarning):
        warnings.filterwarnings("ignore", category=category)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
