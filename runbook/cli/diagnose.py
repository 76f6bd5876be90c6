"""`runbook diagnose`: a diagnostics bundle for an incident, stored beside the backups."""

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
    make_console,
    operator_errors,
    plain,
    run_flow,
)


@app.command()
@operator_errors
def diagnose(
    targets: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", help="Target to diagnose (repeatable) [default: all]"),
    ] = None,
    incident: Annotated[
        str | None, typer.Option("--incident", help="A name for the incident, kept with it")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Collect a diagnostics bundle (every system's state, logs and the latest health) before
    touching anything; store it and verify it. Exit 0 stored and verified, 1 not verified."""
    from runbook.config import load_config
    from tasks.diagnose.plan import plan_sections

    path = config_path_of(config)
    plan_sections(load_config(path), targets or [])  # unknown targets fail before Prefect starts
    from flows.diagnose import diagnose as diagnose_flow

    _completed, bundle = run_flow(
        diagnose_flow, path, targets=targets or [], incident=incident or ""
    )
    if as_json:
        emit_json({"bundle": bundle.to_json()})
    else:
        from rich.table import Table

        console = make_console()
        state = "verified" if bundle.verified else "NOT VERIFIED"
        console.print(f"Diagnostics {plain(bundle.id)}: {plain(bundle.key)} ({state})")
        for problem in bundle.problems:
            console.print(f"  [red]problem[/]: {plain(problem)}")
        if bundle.findings:
            console.print("Findings:")
            for finding in bundle.findings:
                console.print(f"  - {plain(finding)}")
        table = Table()
        for column in ("section", "target", "ok", "bytes", "detail"):
            table.add_column(column, overflow="fold")
        for s in bundle.sections:
            table.add_row(
                plain(s.name),
                plain(s.target),
                "yes" if s.ok else "[red]no[/]",
                str(s.bytes),
                plain(s.detail),
            )
        console.print(table)
    raise typer.Exit(EXIT_OK if bundle.verified else EXIT_FAILED)
