"""Quiet output: no flood of Dagster's beta/preview warnings for features the project uses
knowingly (backfill policies, data versions, partitioned asset checks, column lineage)."""

from __future__ import annotations

import warnings


def quiet_dagster() -> None:
    """Silence Dagster's beta, preview and supersession warnings in this process."""
    from dagster import BetaWarning, PreviewWarning

    for category in (BetaWarning, PreviewWarning):
        warnings.filterwarnings("ignore", category=category)
    # runs executed inside the backfill's event loop (in-process backfills)
    warnings.filterwarnings("ignore", message="coroutine 'BaseEventLoop.shutdown_asyncgens' was never awaited")
    try:
        from dagster._utils.warnings import SupersessionWarning

        warnings.filterwarnings("ignore", category=SupersessionWarning)
    except ImportError:  # pragma: no cover - older dagster
        pass
