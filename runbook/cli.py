"""The `runbook` command: thin, it validates input, calls flows and prints their summaries.

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

from runbook import __version__
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
backups_app = typer.Typer(help="Inspect the backup catalog.", no_args_is_help=True)
app.add_typer(backups_app, name="backups")

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


def _config_path(config: Path | None) -> str:
    from runbook.config import resolve_config_path

    return str(resolve_config_path(config).resolve())


def _console() -> Any:
    from rich.console import Console

    # Pipes and CI logs get full-width rows instead of columns squeezed to 80 characters.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _run_flow(flow_fn: Any, config_path: str, **params: Any) -> tuple[bool, Any]:
    """Run a flow in this process on the given config; (completed?, its summary). Operator
    errors re-raised. Flows read their config from $RUNBOOK_CONFIG, as on a worker."""
    from runbook.config import CONFIG_ENV
    from runbook.errors import RunFailed

    os.environ[CONFIG_ENV] = config_path
    state = flow_fn(**params, return_state=True)
    result = RunFailed.summary_of(state.result(raise_on_failure=False))
    if isinstance(result, RunbookError):
        raise result
    if isinstance(result, BaseException):
        fail(f"{flow_fn.name} flow crashed: {type(result).__name__}: {result}", EXIT_FAILED)
    return state.is_completed(), result


def _text(value: Any) -> str:
    """Any value for a rich table or line, with its square brackets shown, not read as markup
    (`host.disk[/]` is a check name, not a closing tag)."""
    from rich.markup import escape

    return escape("" if value is None else str(value))


# --- backup --------------------------------------------------------------------------------


@app.command()
@operator_errors
def backup(
    target: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", help="Target to back up (repeatable) [default: all]"),
    ] = None,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip the read-back verification (not recommended).")
    ] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Back up targets now and verify each backup by reading it back from storage."""
    from runbook.config import load_config

    path = _config_path(config)
    cfg = load_config(path)
    cfg.select_targets(target)  # unknown names fail here, before Prefect starts
    if not cfg.backup_targets():
        fail(f"{path}: no targets configured (add targets.postgres, .redis or .files)")
    from flows.backup import backup as backup_flow

    _completed, summary = _run_flow(backup_flow, path, targets=target or [], verify=not no_verify)
    if as_json:
        emit_json({"ok": summary.ok, "backups": [_backup_json(b) for b in summary.backups]})
    else:
        _print_backups(summary.backups)
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FAILED)


def _backup_json(record: Any) -> dict[str, Any]:
    return record.model_dump(mode="json")


def _print_backups(records: list[Any]) -> None:
    from rich.table import Table

    from runbook.formatting import backup_error, human_bytes, ratio

    table = Table(show_lines=False)
    for column in (
        "id",
        "target",
        "kind",
        "status",
        "finished (UTC)",
        "stored",
        "ratio",
        "artifacts",
    ):
        table.add_column(column)
    for r in records:
        status = r.status.value
        style = {"verified": "green", "stored": "yellow"}.get(status, "red")
        table.add_row(
            _text(r.id),
            _text(r.target),
            r.kind,
            f"[{style}]{status}[/]",
            r.finished_at.strftime("%Y-%m-%d %H:%M:%S") if r.finished_at else "-",
            human_bytes(r.bytes_stored),
            ratio(r.bytes_logical, r.bytes_stored),
            str(len(r.artifacts)),
        )
    console = _console()
    console.print(table)
    for r in records:
        if r.error and r.status.value not in ("verified",):
            console.print(f"[red]{_text(r.target)} {_text(r.id)}[/]: {_text(backup_error(r))}")


# --- backups list / show -------------------------------------------------------------------


def _catalog(config: Path | None) -> Any:
    from runbook.catalog import Catalog
    from runbook.config import load_config

    cfg = load_config(_config_path(config))
    return cfg, Catalog(cfg.catalog)


@backups_app.command("list")
@operator_errors
def backups_list(
    target: Annotated[str | None, typer.Option("--target", "-t", help="Only this target.")] = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also failed, locked, running and deleted "
            "backups (by default only committed ones).",
        ),
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List backups from the catalog (newest first). Does not start Prefect."""
    from runbook.catalog import COMMITTED

    cfg, catalog = _catalog(config)
    if target:
        cfg.target(target)
    records = catalog.list_backups(
        target=target, statuses=None if all_ else COMMITTED, include_deleted=all_, limit=limit
    )
    if as_json:
        emit_json({"backups": [_backup_json(r) for r in records]})
    else:
        _print_backups(records)


@backups_app.command("show")
@operator_errors
def backups_show(
    backup_id: Annotated[str, typer.Argument(help="Backup id (see `runbook backups list`).")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One backup with its artifacts and verification history. Does not start Prefect."""
    _cfg, catalog = _catalog(config)
    record = catalog.get_backup(backup_id)
    history = catalog.verifications(backup_id)
    if as_json:
        emit_json(
            {
                "backup": _backup_json(record),
                "verifications": [v.model_dump(mode="json") for v in history],
            }
        )
        return
    console = _console()
    _print_backups([record])
    from runbook.formatting import human_bytes

    for a in record.artifacts:
        state = "verified " + a.verified_at.isoformat() if a.verified_at else (a.problem or "")
        console.print(_text(f"  {a.key}  {human_bytes(a.bytes)}  sha256 {a.sha256}  {state}"))
    for v in history:
        console.print(
            _text(
                f"  verification {v.finished_at.isoformat()}: "
                f"{'ok' if v.ok else 'FAILED ' + json.dumps(v.problems)}"
            )
        )


# --- verify --------------------------------------------------------------------------------


@app.command()
@operator_errors
def verify(
    backup_id: Annotated[str | None, typer.Argument(help="Backup id to verify.")] = None,
    latest: Annotated[
        bool,
        typer.Option(
            "--latest", help="Verify the newest committed backup of each target (or of --target)."
        ),
    ] = False,
    target: Annotated[str | None, typer.Option("--target", "-t")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Read backups back from storage and compare them with their manifests."""
    if bool(backup_id) == latest:
        fail("give either a BACKUP_ID or --latest (see `runbook backups list`)")
    if backup_id and target:
        fail("--target goes with --latest, not with a BACKUP_ID")
    cfg, catalog = _catalog(config)
    if backup_id:
        catalog.get_backup(backup_id)  # unknown ids fail before Prefect starts
    if target:
        cfg.target(target)
    from flows.verify_backups import verify_backups

    _completed, summary = _run_flow(
        verify_backups,
        _config_path(config),
        backup_ids=[backup_id] if backup_id else [],
        targets=[target] if target else [],
    )
    reports = [_report_json(r) for r in summary.reports]
    if as_json:
        emit_json(reports[0] if len(reports) == 1 else {"ok": summary.ok, "verifications": reports})
    else:
        console = _console()
        for r in summary.reports:
            for check in r.artifacts:
                mark = "[green]ok[/]" if check.ok else f"[red]{_text(check.problem)}[/]"
                console.print(
                    f"{_text(r.backup_id)}  {_text(check.key)}  {mark}  {_text(check.detail)}"
                )
                if check.remedy:
                    console.print(f"  what to do: {_text(check.remedy)}")
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FAILED)


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "backup_id": report.backup_id,
        "target": report.target,
        "ok": report.ok,
        "artifacts": [
            {
                "key": c.key,
                "ok": c.ok,
                "problem": c.problem,
                "detail": c.detail,
                "bytes_read": c.bytes_read,
            }
            for c in report.artifacts
        ],
    }


# --- retention -----------------------------------------------------------------------------


@app.command()
@operator_errors
def retention(
    apply: Annotated[
        bool, typer.Option("--apply", help="Delete for real (default: dry run).")
    ] = False,
    target: Annotated[list[str] | None, typer.Option("--target", "-t")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Plan (and with --apply, carry out) the grandfather-father-son retention policy."""
    cfg, _catalog_ = _catalog(config)
    cfg.select_targets(target)
    from flows.retention import retention as retention_flow

    completed, summary = _run_flow(
        retention_flow, _config_path(config), dry_run=not apply, targets=target or []
    )
    if as_json:
        emit_json(summary.model_dump(mode="json"))
    else:
        from rich.table import Table

        table = Table(title="Retention " + ("(dry run)" if summary.dry_run else "(applied)"))
        for column in ("target", "backup", "status", "time (UTC)", "action", "reasons"):
            table.add_column(column)
        for d in summary.decisions:
            style = "green" if d.action == "keep" else "red"
            table.add_row(
                _text(d.target),
                _text(d.id),
                d.status,
                d.at.strftime("%Y-%m-%d %H:%M"),
                f"[{style}]{d.action}[/]",
                _text("; ".join(d.reasons)),
            )
        console = _console()
        console.print(table)
        g = summary.garbage
        console.print(
            f"garbage: {g['incomplete_uploads']} unfinished upload(s) removed; uncommitted "
            f"folders {'deleted' if apply else 'to delete'}: {len(g['orphans_deleted'])}; "
            f"committed folders imported: {len(g['orphans_imported'])}"
        )
    raise typer.Exit(EXIT_OK if completed else EXIT_FAILED)


# --- DR drills -----------------------------------------------------------------------------

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
            _text(d.id),
            _text(d.target),
            _verdict(d),
            _text(backup),
            _objective(d.rto_seconds, d.rto_target_seconds),
            _objective(d.rpo_seconds, d.rpo_target_seconds),
            _text(_drill_reason(d)),
        )
    _console().print(table)


def _print_drill_details(d: Any) -> None:
    console = _console()
    fell = f" (fell back from corrupt {d.fell_back_from})" if d.fell_back_from else ""
    console.print(
        f"{_text(d.id)}  {_text(d.target)}  {_verdict(d)}  backup {_text(d.backup_id or '-')}"
        f"{_text(fell)}  RTO {_objective(d.rto_seconds, d.rto_target_seconds)}  "
        f"RPO {_objective(d.rpo_seconds, d.rpo_target_seconds)}"
    )
    if d.failed_step:
        console.print(f"  [red]failed at step {_text(d.failed_step)}[/]")
    if d.timings:
        steps = ", ".join(f"{name} {value:.1f} s" for name, value in d.timings.items())
        console.print(f"  steps: {_text(steps)}")
    passed = sum(1 for c in d.checks if c.ok)
    console.print(f"  {passed} of {len(d.checks)} checks passed")
    for c in d.checks:
        mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
        console.print(f"  {mark} {_text(c.name)}: {_text(c.detail)}")
    if d.error:
        console.print(f"  [red]error[/]: {_text(d.error)}")
    if d.data_docs:
        console.print(f"  Great Expectations Data Docs: {_text(d.data_docs)}")
    if d.kept and d.scratch:
        console.print(f"  kept for forensics: {_text(d.scratch)}")


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
    cfg, catalog = _catalog(config)
    if target:
        cfg.target(target)
    if backup_ != "latest":
        record = catalog.get_backup(backup_)
        if target and record.target != target:
            fail(f"backup {backup_} belongs to target {record.target!r}, not {target!r}")
        target = record.target
    from flows.dr_drill import dr_drill

    _completed, summary = _run_flow(
        dr_drill,
        _config_path(config),
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

    cfg, catalog = _catalog(config)
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

    _, catalog = _catalog(config)
    drills = DrillLog(catalog)
    record = drills.get(drill_id)
    gx_result = drills.gx_result(drill_id)
    if as_json:
        emit_json({"drill": {**_drill_json(record), "gx_result": gx_result}})
        return
    _print_drill_details(record)
    if gx_result is not None:
        stats = gx_result.get("statistics", {})
        _console().print(
            f"  Great Expectations: {stats.get('successful_expectations', 0)} of "
            f"{stats.get('evaluated_expectations', 0)} expectations met "
            f"({'success' if gx_result.get('success') else 'FAILED'})"
        )


# --- health --------------------------------------------------------------------------------


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

    path = _config_path(config)
    cfg = load_config(path)
    kinds = select_kinds([only] if only else None)  # unknown kinds fail before Prefect starts
    if not check_plan(cfg, kinds):
        fail(f"{path}: nothing to check for {', '.join(kinds)} (configure targets)")
    from flows.daily_health import daily_health

    _completed, report = _run_flow(daily_health, path, only=kinds if only else [])
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
                _text(c.check),
                _text(c.target),
                _text(_health_value(c)),
                _text(c.threshold),
                _text(c.message),
            )
        _console().print(table)
    raise typer.Exit(EXIT_FAILED if report.critical else EXIT_OK)


# --- config, deploy and demo ---------------------------------------------------------------


@app.command("check-config")
def check_config(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Validate the config file and list its targets (secrets masked). Environment variables
    the file uses but this shell does not set are listed: set them where the flows run."""
    from runbook.config import ALL_KINDS, load_config

    path = None
    unset: list[str] = []
    try:
        path = _config_path(config)
        cfg = load_config(path, unset=unset)
    except RunbookError as exc:
        if as_json:
            emit_json({"ok": False, "config": path, "error": str(exc)})
            raise typer.Exit(EXIT_USAGE) from None
        fail(str(exc))
    targets = [
        {"name": t.name, "kind": kind} for kind in ALL_KINDS for t in getattr(cfg.targets, kind)
    ]
    unset = sorted(set(unset))
    from deployments.spec import rpo_warnings

    warnings = rpo_warnings(cfg)
    if as_json:
        emit_json(
            {
                "ok": True,
                "config": str(cfg.source),
                "targets": targets,
                "unset_env": unset,
                "warnings": warnings,
            }
        )
        return
    typer.echo(
        f"{cfg.source}: ok, {len(targets)} target(s): "
        + ", ".join(f"{t['name']} ({t['kind']})" for t in targets)
    )
    for warning in warnings:
        typer.echo(f"warning: {warning}")
    if unset:
        typer.echo(
            f"note: {', '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set in this "
            "environment (read as empty here); set it where the flows run (the worker's "
            "environment)"
        )


@app.command()
@operator_errors
def deploy(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Register Runbook's deployments (prefect.yaml, plus one per backup.schedules entry) with
    your Prefect server (PREFECT_API_URL): schedules in runbook.yaml's timezone, RUNBOOK_CONFIG
    pointing at the config, the config's target names as choices in the UI's Custom run."""
    from deployments.register import deploy_all

    path = _config_path(config)
    result = deploy_all(path)
    if as_json:
        emit_json(result.as_json())
    else:
        _print_deployments(result)
    raise typer.Exit(EXIT_OK)


def _print_deployments(result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{len(result.deployments)} deployments on {result.api_url}")
    for column in ("deployment", "schedule", "next run", "parameters"):
        table.add_column(column, overflow="fold")
    for d in result.deployments:
        table.add_row(
            _text(d.full_name),
            _text(d.schedule_text() or "on demand"),
            _text(d.next_run or "-"),
            _text(json.dumps(d.parameters) if d.parameters else ""),
        )
    console = _console()
    console.print(table)
    for warning in result.warnings:
        console.print(f"[yellow]note[/]: {_text(warning)}")
    console.print(
        f"Start a worker for pool {_text(result.work_pool)}: "
        f"{_text(result.worker_command)}\n"
        f"Run one now: {_text(result.run_example)}"
    )


@app.command()
@operator_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the demo's state.")] = Path(".runbook"),
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Keep the embedded PostgreSQL running until Ctrl-C, to try the other commands "
            "and the deployments against the demo config.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The zero-setup tour: an embedded PostgreSQL with sample data, then backup -> verify ->
    DR drill -> health -> retention (dry run), with a summary."""
    from flows.demo import run_demo

    ok = run_demo(workdir.resolve(), as_json=as_json, keep_running=keep_running)
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


@app.callback(invoke_without_command=True)
def main_callback(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(f"runbook {__version__}")
        raise typer.Exit(EXIT_OK)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
