"""`runbook capacity collect|report|reports`: capacity samples and the forecast report.

Exit codes: collect 0 when every source was measured, 1 when one could not be; report 0, or 1
when a resource is `critical` (P10 days until 90 % under capacity.days_until_90.critical, or
already over 90 %) or its copy could not be stored; reports 0, or 1 when a stored copy is
incomplete or damaged; 2 the operator's mistake."""

from pathlib import Path
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
    plain,
    run_flow,
)

capacity_app = typer.Typer(
    help="Capacity: collect samples, and report days until 80/90/100 % of each limit.",
    no_args_is_help=True,
)
app.add_typer(capacity_app, name="capacity")

STATUS_COLOUR = {
    "ok": "green",
    "warn": "yellow",
    "critical": "red",
    "not-growing": "cyan",
    "not-enough-history": "magenta",
}


@capacity_app.command("collect")
def capacity_collect(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Measure every capacity source now and store the samples (runs the capacity-collect
    flow). Exit 1 when a source could not be measured."""
    from runbook.config import load_config
    from runbook.errors import RunbookError

    path = config_path_of(config)
    try:
        load_config(path)  # a bad config: exit 2 before Prefect starts
        from flows.capacity import capacity_collect as collect_flow

        _completed, summary = run_flow(collect_flow, path)
    except RunbookError as exc:
        fail(str(exc))
    if as_json:
        emit_json(summary.json_summary())
    else:
        console = make_console()
        verdict = "[green]OK[/]" if summary.ok else "[red]FAILED[/]"
        console.print(f"capacity collect: {verdict}  {summary.stored} new samples")
        for s in summary.sources:
            detail = (
                f"[red]{plain(s.error)}[/]" if s.error else f"{s.samples} measured, {s.stored} new"
            )
            console.print(f"  {plain(s.source)}: {detail}")
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FAILED)


@capacity_app.command("report")
def capacity_report(
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the HTML report to FILE.")
    ] = None,
    resource: Annotated[
        list[str] | None,
        typer.Option("--resource", "-r", help="Only this resource (repeatable) [default: all]"),
    ] = None,
    quarter: Annotated[
        bool, typer.Option("--quarter", help="The quarterly review (runbook 002).")
    ] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Forecast every resource: P10/P50/P90 days until 80/90/100 %, ranked by P10 days until
    90 %, with charts and an HTML report. Exit 1 when a resource is critical."""
    from runbook.config import load_config
    from runbook.errors import RunbookError

    path = config_path_of(config)
    try:
        cfg = load_config(path)
        if resource:  # an unknown name: exit 2 before Prefect starts
            from runbook.catalog import Catalog, MetricSamples

            known = {r.latest.resource for r in MetricSamples(Catalog(cfg.catalog)).resources()}
            missing = sorted(set(resource) - known)
            if missing:
                fail(f"no samples of resource {', '.join(missing)} (see `runbook capacity report`)")
        from flows.capacity import capacity_report as report_flow

        completed, report = run_flow(
            report_flow,
            path,
            period="quarter" if quarter else "month",
            resources=resource or [],
            html_file=str(html.resolve()) if html else "",
        )
    except RunbookError as exc:
        fail(str(exc))
    if as_json:
        emit_json(report.json_report())
    else:
        _print_report(report)
    critical = any(r.status == "critical" for r in report.resources)
    raise typer.Exit(EXIT_FAILED if critical or not completed else EXIT_OK)


@capacity_app.command("reports")
def capacity_reports(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the report copies kept in storage under _capacity/ (capacity.keep_reports), each
    checked against its manifest. Exit 1 when a copy is incomplete or damaged."""
    from runbook.config import load_config
    from runbook.errors import RunbookError
    from runbook.storage import StorageError, open_storage
    from tasks.capacity.stored import PREFIX, list_reports

    try:
        cfg = load_config(config_path_of(config))
    except RunbookError as exc:
        fail(str(exc))
    storage = open_storage(cfg.storage)
    where = storage.describe()
    try:
        reports = list_reports(storage)
    except StorageError as exc:
        fail(f"cannot list {PREFIX} in {where}: {exc}", EXIT_FAILED)
    finally:
        storage.close()
    damaged = any(not r.complete for r in reports)
    if as_json:
        emit_json({"reports": [r.json() for r in reversed(reports)]})
        raise typer.Exit(EXIT_FAILED if damaged else EXIT_OK)
    console = make_console()
    console.print(
        f"{len(reports)} capacity reports in {plain(where)} {PREFIX} "
        f"(keeping {cfg.capacity.keep_reports})"
    )
    for r in reversed(reports):  # newest first
        if r.complete:
            console.print(
                f"  {plain(r.id)}  {r.period}  {r.resources} resources, worst {r.worst}, "
                f"{r.files} files, {r.bytes:,} bytes"
            )
        else:
            console.print(f"  {plain(r.id)}  [red]{plain('; '.join(r.problems))}[/]")
    raise typer.Exit(EXIT_FAILED if damaged else EXIT_OK)


def _print_report(report: Any) -> None:
    from rich.table import Table

    from tasks.capacity.report import COLUMNS, calibration_line, table_rows

    console = make_console()
    console.print(
        f"capacity report ({report.period}), {report.generated_at:%Y-%m-%d %H:%M} UTC: "
        f"{len(report.resources)} resources"
    )
    if not report.resources:
        console.print("no samples yet (run `runbook capacity collect`)")
        return
    table = Table()
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for row in table_rows(report):
        colour = STATUS_COLOUR.get(row[2], "white")
        row[2] = f"[{colour}]{row[2]}[/]"
        table.add_row(*(cell if i == 2 else plain(cell) for i, cell in enumerate(row)))
    console.print(table)
    console.print(plain(calibration_line(report)))
    from tasks.capacity.scoring import overall_line

    console.print(plain(overall_line(report.scoring)))
    if report.html:
        console.print(f"HTML report: {plain(report.html)}")
    if report.stored:
        console.print(f"Stored: {plain(report.stored)} under _capacity/ in storage")
    if report.storage_error:
        console.print(f"[red]Not stored in storage: {plain(report.storage_error)}[/]")
