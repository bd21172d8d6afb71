"""``mnemo``: run the asset graph for a date range from a terminal.

Both commands plan with the project's one planner and run the planned asset-days as one Dagster
asset backfill: in this process (default), or by the daemon of a running Dagster (``--url``),
whose run launcher may be a cluster's. Runs and backfills are recorded in the Dagster instance
under ``$DAGSTER_HOME`` (default ``./.dagster_home``), so ``dagster dev`` shows them. Each command
ends with a per-asset summary (planned, materialized, waiting with the reason, failed) and exits
non-zero when anything planned was not materialized.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, timedelta


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def _request(args: argparse.Namespace, missing_only: bool, title: str):
    """(settings, request) for a command's range and selection; configuration mistakes are one
    line, before anything runs."""
    from dagster import AssetSelection

    from mnemo_assets.config import load_settings
    from mnemo_assets.definitions import build_definitions
    from mnemo_assets.defs.execution import Request

    settings = load_settings()
    if args.days_per_batch:
        if args.url:
            raise SystemExit("mnemo: --days-per-batch applies to in-process runs; the daemon at --url uses its own configuration")
        settings = settings.model_copy(update={"backfill": settings.backfill.model_copy(update={"days_per_batch": args.days_per_batch})})
    start = args.start or settings.start_date
    end = args.end or (start + timedelta(days=6))
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    if end < start:
        raise SystemExit(f"mnemo: --end {end} is before --start {start}")
    if start < settings.start_date:
        raise SystemExit(f"mnemo: --start {start} is before the first partition {settings.start_date} (start_date / MNEMO_START_DATE)")
    if end > yesterday:
        raise SystemExit(f"mnemo: --end {end} is after yesterday ({yesterday}): the archive publishes a day during the next one")
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    try:
        selection = AssetSelection.all() if not args.select else AssetSelection.from_coercible(args.select)
        keys = sorted(selection.resolve(graph), key=lambda k: k.to_user_string())
    except Exception as exc:
        raise SystemExit(f"mnemo: --select {args.select!r}: {exc}") from None
    if not keys:
        known = ", ".join(sorted(k.to_user_string() for k in graph.get_all_asset_keys())[:8])
        raise SystemExit(f"mnemo: --select {args.select!r} matches no asset (assets are named like {known}, ...)")
    days = [start + timedelta(days=k) for k in range((end - start).days + 1)]
    return settings, Request(keys, days, missing_only, f"{title} {start}..{end}")


def _finish(summary) -> int:
    if summary is None:
        return 0
    for line in summary.lines():
        print(f"mnemo: {line}")
    if not summary.ok:
        print("mnemo: some planned asset-days were not materialized (see above and `dagster dev`)", file=sys.stderr)
        return 1
    print("mnemo: done. Browse runs, backfills and lineage with `dagster dev`.")
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    """Recompute a range (stored days too, unless --missing-only)."""
    from mnemo_assets.defs.execution import run_request

    settings, request = _request(args, args.missing_only, "materialize")
    print(f"mnemo: {settings.source.kind} source → {settings.data_root}")
    return _finish(run_request(settings, request, url=args.url, wait=not args.no_wait, progress=not args.quiet))


def cmd_backfill(args: argparse.Namespace) -> int:
    """Backfill a range: missing asset-days only unless --recompute."""
    from mnemo_assets.defs.execution import run_request

    settings, request = _request(args, not args.recompute, "backfill")
    print(f"mnemo: {settings.source.kind} source → {settings.data_root}")
    return _finish(run_request(settings, request, url=args.url, wait=not args.no_wait, progress=not args.quiet))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", type=_parse_day, help="first day (default: the configured start_date)")
    p.add_argument("--end", type=_parse_day, help="last day, inclusive (default: start + 6 days)")
    p.add_argument("--select", help="Dagster asset selection, e.g. 'key:binance/spot/*' or 'group:binance_um' (default: everything)")
    p.add_argument("--days-per-batch", type=int, help="days per run (default: backfill.days_per_batch)")
    p.add_argument("--url", help="submit to the Dagster webserver at URL; its daemon runs the backfill")
    p.add_argument("--no-wait", action="store_true", help="with --url: return once launched")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnemo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize", help="recompute the asset graph for a date range")
    _common(mat)
    mat.add_argument("--missing-only", action="store_true", help="skip asset-days already stored (default: recompute them)")
    mat.set_defaults(func=cmd_materialize)
    bf = sub.add_parser("backfill", help="backfill a range: missing asset-days only, or everything with --recompute")
    _common(bf)
    bf.add_argument("--recompute", action="store_true", help="re-materialize stored days too")
    bf.set_defaults(func=cmd_backfill)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mnemo_assets.config import ConfigError
    from mnemo_assets.quiet import quiet_dagster

    quiet_dagster()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"mnemo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
