"""`runbook maintenance plan|run|list|show`: maintenance windows and their ledger."""

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
    make_console,
    open_catalog,
    operator_errors,
    plain,
    run_flow,
)

maintenance_app = typer.Typer(
    help="Maintenance windows: plan, run (dry run unless --apply), and their ledger.",
    no_args_is_help=True,
)
app.add_typer(maintenance_app, name="maintenance")

WindowOpt = Annotated[
    str, typer.Option("--window", "-w", help="The window (maintenance.windows in runbook.yaml).")
]
TargetsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        "-t",
        help="Target, of any kind the procedures apply to (repeatable) [default: every one they "
        "apply to]",
    ),
]
ProceduresOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--procedure",
        "-p",
        help="Only this procedure (repeatable): vacuum, reindex, idle_connections, "
        "analyze_stale, query_baseline, redis_cleanup, log_archive, command, config_drift, "
        "security_audit, docker_cleanup, rollout_restart [default: the window's]",
    ),
]

OUTCOME_COLOUR = {
    "done": "green",
    "dry-run": "cyan",
    "skipped": "yellow",
    "deferred": "yellow",
    "failed": "red",
    "planned": "magenta",
}
STATUS_COLOUR = {"done": "green", "running": "yellow", "locked": "yellow"}


def _status(status: str) -> str:
    return f"[{STATUS_COLOUR.get(status, 'red')}]{status.upper()}[/]"


def _figures(before: dict[str, Any], after: dict[str, Any]) -> str:
    """'dead_tuples 400 -> 0, table_bytes 7.6 MiB -> 5.7 MiB': the numeric figures, each as
    before -> after when both were measured."""
    from runbook.formatting import human_bytes, quantity

    def numeric(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    def shown(name: str, value: Any) -> str:
        return human_bytes(int(value)) if name.endswith("bytes") else quantity(value)

    parts = []
    for name in [*before, *(k for k in after if k not in before)]:
        b, a = before.get(name), after.get(name)
        if numeric(b) and numeric(a):
            parts.append(f"{name} {shown(name, b)} -> {shown(name, a)}")
        elif numeric(b) or numeric(a):  # measured once (text figures stay in --json)
            parts.append(f"{name} {shown(name, b if numeric(b) else a)}")
    return ", ".join(parts)


def _print_run(run: Any) -> None:
    from rich.table import Table

    from runbook.formatting import seconds

    console = make_console()
    kind = "dry run" if run.dry_run else "applied"
    counts = ", ".join(f"{n} {outcome}" for outcome, n in run.counts().items()) or "nothing to do"
    finished = f"{run.finished_at:%H:%M:%S}" if run.finished_at else "-"
    console.print(
        f"maintenance {plain(run.window)} ({kind}) {plain(run.id)}: {_status(run.status.value)}"
        f"  {plain(counts)}"
    )
    console.print(
        f"  targets {plain(', '.join(run.targets))}; {run.started_at:%Y-%m-%d %H:%M:%S} to "
        f"{finished} UTC, window ends {run.ends_at:%H:%M:%S} UTC"
    )
    if run.error:
        console.print(f"  [red]error[/]: {plain(run.error)}")
    if run.actions:
        table = Table()
        for column in ("outcome", "procedure", "target", "object", "reason", "figures", "took"):
            table.add_column(column, overflow="fold")
        for a in run.actions:
            colour = OUTCOME_COLOUR[a.outcome.value]
            reason = a.reason if a.error is None else f"{a.reason}; {a.error}"
            table.add_row(
                f"[{colour}]{a.outcome.value}[/]",
                plain(a.procedure),
                plain(a.target),
                plain(a.object or "(whole target)"),
                plain(reason),
                plain(_figures(a.before, a.after)),
                seconds(a.duration),
            )
        console.print(table)
    for note in run.notes:
        console.print(f"  - {plain(note)}")


def _print_runs(runs: list[Any]) -> None:
    from rich.table import Table

    table = Table()
    for column in ("run", "window", "kind", "status", "started (UTC)", "targets", "actions"):
        table.add_column(column, overflow="fold")
    for run in runs:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in run.counts().items()) or "-"
        table.add_row(
            plain(run.id),
            plain(run.window),
            "dry run" if run.dry_run else "applied",
            _status(run.status.value),
            f"{run.started_at:%Y-%m-%d %H:%M:%S}",
            plain(", ".join(run.targets)),
            plain(counts),
        )
    make_console().print(table)


def _run_window(
    window: str,
    targets: list[str] | None,
    procedures: list[str] | None,
    dry_run: bool,
    config: Any,
    as_json: bool,
) -> None:
    """Check the request (exit 2 before Prefect starts), run the flow, print, exit 0/1."""
    from runbook.config import load_config
    from tasks.maintenance.registry import PROCEDURES
    from tasks.maintenance.window import choose_window

    path = config_path_of(config)
    choose_window(load_config(path), window, targets or [], procedures or [], PROCEDURES)
    from flows.maintenance import maintenance

    _completed, summary = run_flow(
        maintenance,
        path,
        window=window,
        targets=targets or [],
        procedures=procedures or [],
        dry_run=dry_run,
    )
    if as_json:
        emit_json({"run": summary.run.json_run()})
    else:
        _print_run(summary.run)
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FAILED)


@maintenance_app.command("plan")
@operator_errors
def maintenance_plan(
    window: WindowOpt = "weekly",
    target: TargetsOpt = None,
    procedure: ProceduresOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Plan a maintenance window: every action with its reason and estimate; nothing applied.

    The actions are recorded as dry-run. Exit 1 when a target could not be measured."""
    _run_window(window, target, procedure, True, config, as_json)


@maintenance_app.command("run")
@operator_errors
def maintenance_run(
    window: WindowOpt = "weekly",
    target: TargetsOpt = None,
    procedure: ProceduresOpt = None,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Apply the plan (backup first, maintenance mode, the window's budget); "
            "without it this is a dry run.",
        ),
    ] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a maintenance window now (a dry run unless --apply).

    Exit 0 when the window is done, 1 when an action failed or a target stayed locked."""
    _run_window(window, target, procedure, not apply, config, as_json)


@maintenance_app.command("list")
@operator_errors
def maintenance_list(
    window: Annotated[str | None, typer.Option("--window", "-w", help="Only this window.")] = None,
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="Only runs that covered this target.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Past maintenance runs from the ledger, newest first. Does not start Prefect."""
    from runbook.catalog import MaintenanceLog
    from tasks.maintenance.targets import HOST_TARGET, find_target

    cfg, catalog = open_catalog(config)
    if target and target != HOST_TARGET.name:
        find_target(cfg, target)  # any kind a window maintains (http, prometheus...)
    runs = MaintenanceLog(catalog).list(window=window, target=target, limit=limit)
    if as_json:
        emit_json({"runs": [r.json_run() for r in runs]})
    elif not runs:
        typer.echo("no maintenance runs yet (run `runbook maintenance plan`)")
    else:
        _print_runs(runs)


@maintenance_app.command("show")
@operator_errors
def maintenance_show(
    run_id: Annotated[str, typer.Argument(help="A run id (see `runbook maintenance list`).")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One maintenance run: every action, its outcome and figures. Does not start Prefect."""
    from runbook.catalog import MaintenanceLog

    _, catalog = open_catalog(config)
    run = MaintenanceLog(catalog).get(run_id)
    if as_json:
        emit_json({"run": run.json_run()})
    else:
        _print_run(run)
