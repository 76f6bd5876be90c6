"""The `runbook` command: thin, it validates input, calls flows and prints their summaries.

Exit codes: 0 success; 1 a backup, verification or check failed; 2 the operator's mistake
(bad config, unknown target or id), reported on one line without a traceback; 130 or 143
when stopped by SIGINT or SIGTERM (the run's records say so, and nothing of it keeps running).
Every command takes --config FILE (default ./runbook.yaml or $RUNBOOK_CONFIG) and --json.
Commands that only read the catalog never start Prefect.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from runbook import __version__
from runbook.cli import (  # noqa: F401 - each registers its commands
    backups,
    capacity,
    diagnose,
    drills,
    health,
    maintenance,
    report,
    restore,
    setup,
)
from runbook.cli.common import EXIT_OK, app
from runbook.stopping import Stopped, leave_now, stop_on_signals

__all__ = ["app", "main"]


@app.callback(invoke_without_command=True)
def main_callback(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(f"runbook {__version__}")
        raise typer.Exit(EXIT_OK)


def main() -> None:
    stop_on_signals()  # SIGTERM and SIGINT end a run within seconds, its records saying why
    try:
        app()
    except Stopped as exc:
        typer.echo(f"runbook: {exc}", err=True)
        leave_now(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
