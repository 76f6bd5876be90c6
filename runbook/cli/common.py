"""What every `runbook` command shares: the app, exit codes, options and output helpers.

The command: thin, it validates input, calls flows and prints their summaries.

Exit codes: 0 success; 1 a backup, verification or check failed; 2 the operator's mistake
(bad config, unknown target or id), reported on one line without a traceback.
Every command takes --config FILE (default ./runbook.yaml or $RUNBOOK_CONFIG) and --json.
Commands that only read the catalog never start Prefect.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from runbook.errors import RunbookError

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "runbook")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline hosts: no telemetry

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    help="Runbook: operations runbooks as scheduled, retried, observable Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="runbook.yaml to use [default: ./runbook.yaml or $RUNBOOK_CONFIG]",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"runbook: {message}", err=True)
    raise typer.Exit(code)


def operator_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """RunbookError -> one line on stderr and exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RunbookError as exc:
            fail(str(exc))

    return wrapper


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def config_path_of(config: Path | None) -> str:
    from runbook.config import resolve_config_path

    return str(resolve_config_path(config).resolve())


def make_console() -> Any:
    from rich.console import Console

    # Pipes and CI logs get full-width rows instead of columns squeezed to 80 characters.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def start_prefect_early() -> None:
    """For a command that runs a flow: call once the operator's input is checked (a mistake
    is refused before anything of Prefect starts) and before importing the flow, so that
    Prefect's temporary server (ephemeral mode) boots while the flow and Prefect import."""
    from runbook.cli.prefect_server import start_early

    start_early()


def run_flow(flow_fn: Any, config_path: str, **params: Any) -> tuple[bool, Any]:
    """Run a flow in this process on the given config; (completed?, its summary). Operator
    errors re-raised. Flows read their config from $RUNBOOK_CONFIG, as on a worker."""
    from runbook.cli.prefect_server import start_temporary_server
    from runbook.config import CONFIG_ENV, load_config
    from runbook.errors import RunFailed
    from runbook.results import result_storage_of

    os.environ[CONFIG_ENV] = config_path
    start_temporary_server()  # in ephemeral mode: a server that dies with this process
    try:
        config = load_config(config_path)
    except RunbookError:
        config = None  # the flow says what is wrong with it, as on a worker
    with result_storage_of(config):  # runbook.yaml's result_storage, if any
        state = flow_fn(**params, return_state=True)
    result = RunFailed.summary_of(state.result(raise_on_failure=False))
    if isinstance(result, RunbookError):
        raise result
    if isinstance(result, BaseException):
        fail(f"{flow_fn.name} flow crashed: {type(result).__name__}: {result}", EXIT_FAILED)
    return state.is_completed(), result


def plain(value: Any) -> str:
    """Any value for a rich table or line, with its square brackets shown, not read as markup
    (`host.disk[/]` is a check name, not a closing tag)."""
    from rich.markup import escape

    return escape("" if value is None else str(value))


def open_catalog(config: Path | None) -> Any:
    from runbook.catalog import Catalog
    from runbook.config import load_config

    cfg = load_config(config_path_of(config))
    return cfg, Catalog(cfg.catalog)
