"""`runbook report daily`: the day's report (runbook 001's 6 PM report)."""

from datetime import date
from typing import Annotated

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
    operator_errors,
    run_flow,
)

report_app = typer.Typer(help="Reports: the daily report.", no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("daily")
@operator_errors
def daily(
    day: Annotated[
        str | None,
        typer.Option(
            "--date", help="The day, YYYY-MM-DD in the config's timezone [default: today]"
        ),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the day's report (health, backups and verifications, drills, maintenance) to the
    report folder, publish it and send it through report.daily.routes. Exit 1 when a route
    could not be sent to."""
    if day:
        try:
            date.fromisoformat(day)
        except ValueError:
            fail(f"--date: expected YYYY-MM-DD, got {day!r}")
    from flows.daily_report import daily_report

    path = config_path_of(config)
    completed, outcome = run_flow(daily_report, path, day=day or "")
    if as_json:
        emit_json(
            {
                "report": outcome.report.model_dump(mode="json"),
                "file": outcome.file,
                "sent": outcome.sent,
                "not_sent": outcome.not_sent,
            }
        )
    else:
        typer.echo(open(outcome.file, encoding="utf-8").read(), nl=False)
        typer.echo(
            f"written to {outcome.file}"
            + (f"; sent to {', '.join(outcome.sent)}" if outcome.sent else ""),
            err=True,
        )
        for name in outcome.not_sent:
            typer.echo(f"runbook: the report was not sent to route {name}", err=True)
    raise typer.Exit(EXIT_OK if completed and not outcome.not_sent else EXIT_FAILED)
