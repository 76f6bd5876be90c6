"""`runbook drill` and `drills list/show`."""

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
    open_catalog,
    operator_errors,
    plain,
    run_flow,
)

drills_app = typer.Typer(help="Inspect past DR drills.", no_args_is_help=True)


app.add_typer(drills_app, name="drills")


def _drill_json(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "target": d.target,
        "backup_id": d.backup_id,
        "passed": d.passed,
        "status": d.status,
        "fell_back_from": d.fell_back_from,
        "rto_seconds": d.rto_seconds,
        "rpo_seconds": d.rpo_seconds,
        "rto_target_seconds": d.rto_target_seconds,
        "rpo_target_seconds": d.rpo_target_seconds,
        "started_at": d.started_at.isoformat(),
        "finished_at": d.finished_at.isoformat() if d.finished_at else None,
        "timings": d.timings,
        "checks": [c.model_dump() for c in d.checks],
        "kept": d.kept,
        "scratch": d.scratch,
        "error": d.error,
        "failed_step": d.failed_step,
        "data_docs": d.data_docs,
    }


def _objective(measured: float | None, target: float | None) -> str:
    """'4.5 s (target 1h)': the measured figure, the target as configured."""
    from datetime import timedelta

    from runbook.formatting import human_duration, seconds

    if measured is None:
        return "-"
    goal = f" (target {human_duration(timedelta(seconds=target))})" if target else ""
    return seconds(measured) + goal


def _drill_reason(d: Any) -> str:
    """Why a drill did not pass, in one line: the step it failed at, and its error, else its
    failing checks."""
    if d.passed:
        return ""
    failing = [f"{c.name}: {c.detail}" for c in d.checks if not c.ok]
    reason = d.error or "; ".join(failing) or d.status
    return f"failed at {d.failed_step}: {reason}" if d.failed_step else reason


def _verdict(d: Any) -> str:
    if d.passed:
        return "[green]PASSED[/]"
    colour = "yellow" if d.status in ("running", "refused") else "red"
    return f"[{colour}]{d.status.upper()}[/]"


def _print_drill_table(drills: list[Any]) -> None:
    from rich.table import Table

    table = Table()
    for column in ("drill", "target", "result", "backup", "RTO", "RPO", "why not passed"):
        table.add_column(column, overflow="fold")
    for d in drills:
        backup = (d.backup_id or "-") + (
            f" (fell back from corrupt {d.fell_back_from})" if d.fell_back_from else ""
        )
        table.add_row(
            plain(d.id),
            plain(d.target),
            _verdict(d),
            plain(backup),
            _objective(d.rto_seconds, d.rto_target_seconds),
            _objective(d.rpo_seconds, d.rpo_target_seconds),
            plain(_drill_reason(d)),
        )
    make_console().print(table)


def _print_drill_details(d: Any) -> None:
    console = make_console()
    fell = f" (fell back from corrupt {d.fell_back_from})" if d.fell_back_from else ""
    console.print(
        f"{plain(d.id)}  {plain(d.target)}  {_verdict(d)}  backup {plain(d.backup_id or '-')}"
        f"{plain(fell)}  RTO {_objective(d.rto_seconds, d.rto_target_seconds)}  "
        f"RPO {_objective(d.rpo_seconds, d.rpo_target_seconds)}"
    )
    if d.failed_step:
        console.print(f"  [red]failed at step {plain(d.failed_step)}[/]")
    if d.timings:
        steps = ", ".join(f"{name} {value:.1f} s" for name, value in d.timings.items())
        console.print(f"  steps: {plain(steps)}")
    passed = sum(1 for c in d.checks if c.ok)
    console.print(f"  {passed} of {len(d.checks)} checks passed")
    for c in d.checks:
        mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
        console.print(f"  {mark} {plain(c.name)}: {plain(c.detail)}")
    if d.error:
        console.print(f"  [red]error[/]: {plain(d.error)}")
    if d.data_docs:
        console.print(f"  Great Expectations Data Docs: {plain(d.data_docs)}")
    if d.kept and d.scratch:
        console.print(f"  kept for forensics: {plain(d.scratch)}")


@app.command()
@operator_errors
def drill(
    target: Annotated[
        str | None,
        typer.Option(
            "--target", "-t", help="Target to drill [default: every PostgreSQL and Redis target]"
        ),
    ] = None,
    backup_: Annotated[
        str, typer.Option("--backup", help="'latest' (newest verified) or a backup id")
    ] = "latest",
    keep_on_failure: Annotated[
        bool,
        typer.Option(
            "--keep-on-failure", help="Keep the scratch database of a failed drill for forensics."
        ),
    ] = False,
    jobs: Annotated[int, typer.Option(help="pg_restore parallel jobs.")] = 2,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup into a scratch database, validate it, measure RTO and RPO.
    Exit 0 when the drill passed, 1 when it failed."""
    from tasks.drills.drill import check_drill_request

    cfg, catalog = open_catalog(config)
    if target:  # an operator's mistake fails here, in one line, before Prefect starts
        check_drill_request(catalog, cfg.target(target), backup_)
    elif not (cfg.targets.postgres or cfg.targets.redis):
        fail("no PostgreSQL or Redis targets to drill (drill a files target with -t NAME)")
    if backup_ != "latest":
        record = catalog.get_backup(backup_)
        if target and record.target != target:
            fail(f"backup {backup_} belongs to target {record.target!r}, not {target!r}")
        target = record.target
    from flows.dr_drill import dr_drill

    _completed, summary = run_flow(
        dr_drill,
        config_path_of(config),
        targets=[target] if target else [],
        backup=backup_,
        keep_on_failure=keep_on_failure,
        jobs=jobs,
    )
    drills = [_drill_json(d) for d in summary.drills]
    if as_json:
        emit_json(
            {"drill": drills[0]} if len(drills) == 1 else {"ok": summary.ok, "drills": drills}
        )
    else:
        for d in summary.drills:
            _print_drill_details(d)
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FAILED)


@drills_app.command("list")
@operator_errors
def drills_list(
    target: Annotated[str | None, typer.Option("--target", "-t")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Past drills from the catalog, newest first. Does not start Prefect."""
    from runbook.catalog import DrillLog

    cfg, catalog = open_catalog(config)
    if target:
        cfg.target(target)
    drills = DrillLog(catalog).list(target=target, limit=limit)
    if as_json:
        emit_json({"drills": [_drill_json(d) for d in drills]})
    elif not drills:
        typer.echo("no drills yet (run `runbook drill`)")
    else:
        _print_drill_table(drills)


@drills_app.command("show")
@operator_errors
def drills_show(
    drill_id: Annotated[str, typer.Argument(help="A drill id (see `runbook drills list`).")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One drill with every check; --json adds the Great Expectations result. Does not start
    Prefect."""
    from runbook.catalog import DrillLog

    _, catalog = open_catalog(config)
    drills = DrillLog(catalog)
    record = drills.get(drill_id)
    gx_result = drills.gx_result(drill_id)
    if as_json:
        emit_json({"drill": {**_drill_json(record), "gx_result": gx_result}})
        return
    _print_drill_details(record)
    if gx_result is not None:
        stats = gx_result.get("statistics", {})
        make_console().print(
            f"  Great Expectations: {stats.get('successful_expectations', 0)} of "
            f"{stats.get('evaluated_expectations', 0)} expectations met "
            f"({'success' if gx_result.get('success') else 'FAILED'})"
        )
