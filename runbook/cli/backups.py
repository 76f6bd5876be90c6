"""`runbook backup`, `backups list/show`, `verify`, `retention`."""

import json
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
    start_prefect_early,
)

backups_app = typer.Typer(help="Inspect the backup catalog.", no_args_is_help=True)
app.add_typer(backups_app, name="backups")


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
    label: Annotated[
        str | None,
        typer.Option(
            "--label",
            help="A name for these backups, e.g. emergency-20261201-2207 (letters, digits, "
            ". _ : + -), shown in `runbook backups list`.",
        ),
    ] = None,
    keep_until: Annotated[
        str | None,
        typer.Option(
            "--keep-until",
            help="Pin the backups: retention keeps them until this date (2026-12-31, through "
            "that day UTC), moment (2026-12-31T18:00Z) or duration from now (7d, 2w).",
        ),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Back up targets now and verify each backup by reading it back from storage."""
    from runbook.catalog import utcnow
    from runbook.pins import parse_pin

    pin = parse_pin(label, keep_until, utcnow())  # bad input: exit 2 naming the option
    path = config_path_of(config)
    cfg, _catalog = open_catalog(config)  # a bad catalog fails here, before Prefect starts
    cfg.select_targets(target)  # unknown names fail here, before Prefect starts
    if not cfg.backup_targets():
        fail(f"{path}: no targets configured (add targets.postgres, .redis or .files)")
    start_prefect_early()
    from flows.backup import backup as backup_flow

    _completed, summary = run_flow(
        backup_flow,
        path,
        targets=target or [],
        verify=not no_verify,
        label=pin.label or "",
        keep_until=pin.keep_until.isoformat() if pin.keep_until else "",
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

    from runbook.catalog import utcnow
    from runbook.formatting import backup_error, human_bytes, ratio
    from runbook.pins import format_moment

    labelled = any(r.label or r.keep_until for r in records)
    table = Table(show_lines=False)
    columns = ["id", "target", "kind", "status", "finished (UTC)", "stored", "ratio", "artifacts"]
    for column in columns + (["label", "pinned until"] if labelled else []):
        table.add_column(column)
    now = utcnow()
    for r in records:
        status = r.status.value
        style = {"verified": "green", "stored": "yellow"}.get(status, "red")
        pin = []
        if labelled:
            expired = r.keep_until is not None and r.keep_until <= now
            until = format_moment(r.keep_until) + (" (expired)" if expired else "")
            pin = [plain(r.label or "-"), until]
        table.add_row(
            plain(r.id),
            plain(r.target),
            r.kind,
            f"[{style}]{status}[/]",
            r.finished_at.strftime("%Y-%m-%d %H:%M:%S") if r.finished_at else "-",
            human_bytes(r.bytes_stored),
            ratio(r.bytes_logical, r.bytes_stored),
            str(len(r.artifacts)),
            *pin,
        )
    console = make_console()
    console.print(table)
    for r in records:
        if r.error and r.status.value not in ("verified",):
            console.print(f"[red]{plain(r.target)} {plain(r.id)}[/]: {plain(backup_error(r))}")


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
    label: Annotated[
        str | None, typer.Option("--label", help="Only the backups with this label.")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List backups from the catalog (newest first), with their labels and pins. Does not
    start Prefect."""
    from runbook.catalog import COMMITTED

    cfg, catalog = open_catalog(config)
    if target:
        cfg.target(target)
    records = catalog.list_backups(
        target=target,
        statuses=None if all_ else COMMITTED,
        include_deleted=all_,
        limit=limit,
        label=label,
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
    _cfg, catalog = open_catalog(config)
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
    console = make_console()
    _print_backups([record])
    from runbook.formatting import human_bytes

    for a in record.artifacts:
        state = "verified " + a.verified_at.isoformat() if a.verified_at else (a.problem or "")
        console.print(plain(f"  {a.key}  {human_bytes(a.bytes)}  sha256 {a.sha256}  {state}"))
    for v in history:
        console.print(
            plain(
                f"  verification {v.finished_at.isoformat()}: "
                f"{'ok' if v.ok else 'FAILED ' + json.dumps(v.problems)}"
            )
        )


@backups_app.command("pin")
@operator_errors
def backups_pin(
    backup_id: Annotated[str, typer.Argument(help="Backup id (see `runbook backups list`).")],
    keep_until: Annotated[
        str,
        typer.Option(
            "--keep-until",
            help="Keep it until a date (2026-12-31, through that day UTC), a moment "
            "(2026-12-31T18:00Z) or a duration from now (7d, 2w, 12h).",
        ),
    ],
    label: Annotated[
        str | None, typer.Option("--label", help="Also name it (e.g. emergency-20261201-2207).")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pin an existing backup: retention keeps it until --keep-until, whatever the policy
    says (its reasons say so). Exit 2 for an unknown id or a bad date. Does not start Prefect."""
    from runbook.catalog import utcnow
    from runbook.pins import Pin, parse_pin

    pin = parse_pin(label, keep_until, utcnow())  # bad input: exit 2 naming the option
    if pin.keep_until is None:
        fail(f"--keep-until {keep_until!r}: give a date, a moment or a duration to pin until")
    _cfg, catalog = open_catalog(config)
    record = catalog.pin(backup_id, pin.keep_until, pin.label)
    if as_json:
        emit_json({"backup": _backup_json(record)})
    else:
        shown = Pin(label=record.label, keep_until=record.keep_until).describe()
        typer.echo(f"backup {record.id} ({record.target}, {record.status.value}): {shown}")


@backups_app.command("unpin")
@operator_errors
def backups_unpin(
    backup_id: Annotated[str, typer.Argument(help="Backup id (see `runbook backups list`).")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a backup's pin: retention treats it like any other again (its label stays).
    Does not start Prefect."""
    _cfg, catalog = open_catalog(config)
    before = catalog.get_backup(backup_id)
    record = catalog.unpin(backup_id)
    if as_json:
        emit_json({"backup": _backup_json(record), "was_pinned": before.keep_until is not None})
    else:
        from runbook.pins import format_moment

        was = (
            f"no longer pinned (was until {format_moment(before.keep_until)})"
            if before.keep_until
            else "was not pinned"
        )
        typer.echo(f"backup {record.id} ({record.target}, {record.status.value}): {was}")


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
    cfg, catalog = open_catalog(config)
    if backup_id:
        catalog.get_backup(backup_id)  # unknown ids fail before Prefect starts
    if target:
        cfg.target(target)
    from flows.verify_backups import verify_backups

    _completed, summary = run_flow(
        verify_backups,
        config_path_of(config),
        backup_ids=[backup_id] if backup_id else [],
        targets=[target] if target else [],
    )
    reports = [_report_json(r) for r in summary.reports]
    if as_json:
        emit_json(reports[0] if len(reports) == 1 else {"ok": summary.ok, "verifications": reports})
    else:
        console = make_console()
        for r in summary.reports:
            for check in r.artifacts:
                mark = "[green]ok[/]" if check.ok else f"[red]{plain(check.problem)}[/]"
                console.print(
                    f"{plain(r.backup_id)}  {plain(check.key)}  {mark}  {plain(check.detail)}"
                )
                if check.remedy:
                    console.print(f"  what to do: {plain(check.remedy)}")
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
    cfg, _catalog_ = open_catalog(config)
    cfg.select_targets(target)
    from flows.retention import retention as retention_flow

    completed, summary = run_flow(
        retention_flow, config_path_of(config), dry_run=not apply, targets=target or []
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
                plain(d.target),
                plain(d.id),
                d.status,
                d.at.strftime("%Y-%m-%d %H:%M"),
                f"[{style}]{d.action}[/]",
                plain("; ".join(d.reasons)),
            )
        console = make_console()
        console.print(table)
        g = summary.garbage
        console.print(
            f"garbage: {g['incomplete_uploads']} unfinished upload(s) removed; uncommitted "
            f"folders {'deleted' if apply else 'to delete'}: {len(g['orphans_deleted'])}; "
            f"committed folders imported: {len(g['orphans_imported'])}"
        )
    raise typer.Exit(EXIT_OK if completed else EXIT_FAILED)
