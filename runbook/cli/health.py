"""`runbook health`."""

from typing import Annotated, Any

import typer

from runbook.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigOpt,
    JsonOpt,
    app,
    config_path_of,
    emit_json,
    fail,
    make_console,
    operator_errors,
    plain,
    run_flow,
)


def _health_value(check: Any) -> str:
    """A check's value with its unit, as people read it."""
    display = getattr(check, "display_value", None)
    if display is not None:
        return display() if callable(display) else str(display)
    return "" if check.value is None else str(check.value)


@app.command()
@operator_errors
def health(
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Comma-separated check kinds: "
            "http, postgres, redis, prometheus, kubernetes, docker, host, logs, "
            "backups [default: all]",
        ),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the health checks now. Exit 0 when nothing is critical, 1 when something is."""
    from runbook.config import load_config
    from tasks.health.registry import check_plan, select_kinds

    path = config_path_of(config)
    cfg = load_config(path)
    kinds = select_kinds([only] if only else None)  # unknown kinds fail before Prefect starts
    if not check_plan(cfg, kinds):
        fail(f"{path}: nothing to check for {', '.join(kinds)} (configure targets)")
    from flows.daily_health import daily_health

    _completed, report = run_flow(daily_health, path, only=kinds if only else [])
    if as_json:
        emit_json(
            {
                "status": report.status.value,
                "severity": report.severity,
                "run_id": report.run_id,
                "checks": [c.model_dump(mode="json") for c in report.checks],
                "events": report.events,
            }
        )
    else:
        from rich.table import Table

        from runbook.health import RANK

        colour = {"ok": "green", "warn": "yellow", "critical": "red", "unknown": "magenta"}
        table = Table(
            title=f"Health: {report.status.value}"
            + (f" ({report.severity})" if report.severity else "")
        )
        for column in ("status", "check", "target", "value", "threshold", "message"):
            table.add_column(column, overflow="fold")
        worst_first = sorted(report.checks, key=lambda c: -RANK[c.status])
        for c in worst_first:
            table.add_row(
                f"[{colour[c.status.value]}]{c.status.value}[/]",
                plain(c.check),
                plain(c.target),
                plain(_health_value(c)),
                plain(c.threshold),
                plain(c.message),
            )
        make_console().print(table)
    raise typer.Exit(EXIT_FAILED if report.critical else EXIT_OK)
