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


def _run_flow(flow_fn: Any, **params: Any) -> tuple[bool, Any]:
    """Run a flow in this process; (completed?, its summary). Operator errors re-raised."""
    state = flow_fn(**params, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, RunbookError):
        raise result
    if isinstance(result, BaseException):
        fail(f"{flow_fn.name} flow crashed: {type(result).__name__}: {result}", EXIT_FAILED)
    return state.is_completed(), result


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

    _completed, summary = _run_flow(
        backup_flow, targets=target or None, config_path=path, verify=not no_verify
    )
    if as_json:
        emit_json({"ok": summary.ok, "backups": [_backup_json(b) for b in summary.backups]})
    else:
        _print_backups(summary.backups)
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FAILED)


def _backup_json(record: Any) -> dict[str, Any]:
    return record.model_dump(mode="json")


def _print_backups(records: list[Any]) -> None:
    from rich.table import Table

    from runbook.formatting import human_bytes, ratio

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
            r.id,
            r.target,
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
            console.print(f"[red]{r.target} {r.id}[/]: {r.error}")


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
        console.print(f"  {a.key}  {human_bytes(a.bytes)}  sha256 {a.sha256}  {state}")
    for v in history:
        console.print(
            f"  verification {v.finished_at.isoformat()}: "
            f"{'ok' if v.ok else 'FAILED ' + json.dumps(v.problems)}"
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
        backup_ids=[backup_id] if backup_id else None,
        target=target,
        config_path=_config_path(config),
    )
    reports = [_report_json(r) for r in summary.reports]
    if as_json:
        emit_json(reports[0] if len(reports) == 1 else {"ok": summary.ok, "verifications": reports})
    else:
        console = _console()
        for r in summary.reports:
            for check in r.artifacts:
                mark = "[green]ok[/]" if check.ok else f"[red]{check.problem}[/]"
                console.print(f"{r.backup_id}  {check.key}  {mark}  {check.detail or ''}")
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
        retention_flow, dry_run=not apply, targets=target or None, config_path=_config_path(config)
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
                d.target,
                d.id,
                d.status,
                d.at.strftime("%Y-%m-%d %H:%M"),
                f"[{style}]{d.action}[/]",
                "; ".join(d.reasons),
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
        "data_docs": d.data_docs,
    }


def _print_drills(drills: list[Any], details: bool) -> None:
    console = _console()
    for d in drills:
        verdict = "[green]PASSED[/]" if d.passed else f"[red]{d.status.upper()}[/]"
        rto = f"{d.rto_seconds:.1f}s" if d.rto_seconds is not None else "-"
        rpo = f"{d.rpo_seconds:.0f}s" if d.rpo_seconds is not None else "-"
        fell = f" (fell back from corrupt {d.fell_back_from})" if d.fell_back_from else ""
        console.print(
            f"{d.id}  {d.target}  {verdict}  backup {d.backup_id or '-'}{fell}  "
            f"RTO {rto}  RPO {rpo}"
        )
        if details:
            for c in d.checks:
                mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
                console.print(f"  {mark} {c.name}: {c.detail}")
            if d.data_docs:
                console.print(f"  Great Expectations Data Docs: {d.data_docs}")
            if d.kept and d.scratch:
                console.print(f"  kept for forensics: {d.scratch}")


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
        target=target,
        backup=backup_,
        keep_on_failure=keep_on_failure,
        jobs=jobs,
        config_path=_config_path(config),
    )
    drills = [_drill_json(d) for d in summary.drills]
    if as_json:
        emit_json(
            {"drill": drills[0]} if len(drills) == 1 else {"ok": summary.ok, "drills": drills}
        )
    else:
        _print_drills(summary.drills, details=True)
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
    else:
        _print_drills(drills, details=False)


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
    _print_drills([record], details=True)
    if gx_result is not None:
        stats = gx_result.get("statistics", {})
        _console().print(
            f"  Great Expectations: {stats.get('successful_expectations', 0)} of "
            f"{stats.get('evaluated_expectations', 0)} expectations met "
            f"({'success' if gx_result.get('success') else 'FAILED'})"
        )


# --- health --------------------------------------------------------------------------------


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
    from tasks.checks import check_plan, select_kinds

    path = _config_path(config)
    cfg = load_config(path)
    kinds = select_kinds([only] if only else None)  # unknown kinds fail before Prefect starts
    if not check_plan(cfg, kinds):
        fail(f"{path}: nothing to check for {', '.join(kinds)} (configure targets)")
    from flows.daily_health import daily_health

    _completed, report = _run_flow(daily_health, only=kinds if only else None, config_path=path)
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

        colour = {"ok": "green", "warn": "yellow", "critical": "red", "unknown": "magenta"}
        table = Table(
            title=f"Health: {report.status.value}"
            + (f" ({report.severity})" if report.severity else "")
        )
        for column in ("status", "check", "target", "value", "threshold", "message"):
            table.add_column(column)
        for c in report.checks:
            table.add_row(
                f"[{colour[c.status.value]}]{c.status.value}[/]",
                c.check,
                c.target,
                "" if c.value is None else str(c.value),
                c.threshold or "",
                c.message,
            )
        _console().print(table)
    raise typer.Exit(EXIT_FAILED if report.critical else EXIT_OK)


# --- config and demo -----------------------------------------------------------------------


@app.command("check-config")
@operator_errors
def check_config(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Validate the config file and list its targets (secrets masked)."""
    from runbook.config import load_config

    cfg = load_config(_config_path(config))
    from runbook.config import ALL_KINDS

    targets = [
        {"name": t.name, "kind": kind} for kind in ALL_KINDS for t in getattr(cfg.targets, kind)
    ]
    if as_json:
        emit_json({"ok": True, "config": str(cfg.source), "targets": targets})
    else:
        typer.echo(
            f"{cfg.source}: ok, {len(targets)} target(s): "
            + ", ".join(f"{t['name']} ({t['kind']})" for t in targets)
        )


@app.command()
@operator_errors
def deploy(config: ConfigOpt = None) -> None:
    """Register every deployment of prefect.yaml with your Prefect server (PREFECT_API_URL),
    with schedules in runbook.yaml's timezone and RUNBOOK_CONFIG pointing at the config."""
    import subprocess

    from runbook.config import load_config

    path = _config_path(config)
    cfg = load_config(path)
    root = Path(__file__).resolve().parents[1]
    if not (root / "prefect.yaml").exists():
        fail(f"{root}/prefect.yaml not found: run `runbook deploy` from a Runbook checkout")
    env = {
        **os.environ,
        "RUNBOOK_CONFIG": path,
        "RUNBOOK_TIMEZONE": cfg.timezone,
        "RUNBOOK_HOME": os.environ.get("RUNBOOK_HOME", str(root)),
    }
    if not env.get("PREFECT_API_URL"):
        fail(
            "PREFECT_API_URL is not set: start a server (prefect server start) and point "
            "PREFECT_API_URL at it"
        )
    import yaml

    spec = yaml.safe_load((root / "prefect.yaml").read_text())
    work_pool = spec["definitions"]["work_pool"]["name"]
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    pool = subprocess.run(
        [*prefect, "work-pool", "create", work_pool, "--type", "process"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
    )
    if pool.returncode != 0 and "already exists" not in pool.stdout + pool.stderr:
        fail(f"could not create work pool {work_pool}: {pool.stderr.strip()[-300:]}", 1)
    done = subprocess.run([*prefect, "deploy", "--all"], env=env, cwd=root)
    raise typer.Exit(EXIT_OK if done.returncode == 0 else EXIT_FAILED)


@app.command()
@operator_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the demo's state.")] = Path(".runbook"),
    as_json: JsonOpt = False,
) -> None:
    """Start an embedded PostgreSQL with sample data and run backup -> verify -> retention."""
    from flows.demo import run_demo

    ok = run_demo(workdir.resolve(), as_json=as_json)
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
