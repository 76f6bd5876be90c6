"""`runbook restore`, `runbook restores list` and `runbook backups download`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from runbook.cli.backups import backups_app
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

restores_app = typer.Typer(help="Inspect past restores.", no_args_is_help=True)
app.add_typer(restores_app, name="restores")


def _overwrite(clean: bool, replace_source: bool, in_place: bool) -> str:
    if replace_source:
        return "replace-source"
    if in_place:
        return "in-place"
    return "clean" if clean else "no"


def _confirm_or_refuse(confirm: list[str], actions: list[str], yes: bool) -> None:
    """A plan that overwrites something: --yes, or a person at a terminal says yes; without a
    terminal and without --yes, refused (exit 2, nothing touched)."""
    if not confirm or yes:
        return
    if not sys.stdin.isatty():
        fail(f"confirmation needed: {'; '.join(confirm)}; pass --yes (nothing was done)")
    typer.echo("The restore will:", err=True)
    for action in actions:
        typer.echo(f"  - {action}", err=True)
    for reason in confirm:
        typer.echo(f"WARNING: {reason}", err=True)
    if not typer.confirm("Go ahead?", default=False, err=True):
        fail("not confirmed: nothing was done")


def _print_restore(r: dict) -> None:
    console = make_console()
    colour = "green" if r["status"] == "restored" else "red"
    backup = r["backup_id"] or "-"
    if r["fell_back_from"]:
        backup += f" (fell back from corrupt {r['fell_back_from']})"
    rto = f"{r['rto_seconds']:.1f} s" if r["rto_seconds"] is not None else "-"
    console.print(
        f"{plain(r['id'])}  {plain(r['target'])}  [{colour}]{r['status'].upper()}[/]  "
        f"backup {plain(backup)}  into {plain(r['into'])}  RTO {rto}"
    )
    if r["failed_step"]:
        console.print(f"  [red]failed at step {plain(r['failed_step'])}[/]")
    for hook in r["hooks"]:
        mark = "[green]ok[/]  " if hook["ok"] else "[red]FAIL[/]"
        console.print(f"  {mark} {plain(hook['name'])}: {plain(hook['detail'])}")
    passed = sum(1 for c in r["checks"] if c["ok"])
    console.print(f"  {passed} of {len(r['checks'])} checks passed")
    for c in r["checks"]:
        if not c["ok"] or c["name"] in ("backup integrity", "restore"):
            mark = "[green]ok[/]  " if c["ok"] else "[red]FAIL[/]"
            console.print(f"  {mark} {plain(c['name'])}: {plain(c['detail'])}")
    if r["error"]:
        console.print(f"  [red]error[/]: {plain(r['error'])}")
    if r["next_steps"] and r["status"] == "restored":
        console.print("Next steps:")
        for number, step in enumerate(r["next_steps"], start=1):
            console.print(f"  {number}. {plain(step)}")


def _print_plan(r: dict, confirm: list[str]) -> None:
    console = make_console()
    console.print(
        f"PLAN (dry run, nothing changed): {plain(r['target'])}  backup "
        f"{plain(r['backup_id'] or '-')}  into {plain(r['into'])}"
    )
    for action in r["plan"]:
        console.print(f"  {plain(action)}" if action.startswith("  ") else f"  - {plain(action)}")
    for reason in confirm:
        console.print(f"  [yellow]needs --yes[/]: {plain(reason)}")


@app.command()
@operator_errors
def restore(
    target: Annotated[str, typer.Option("--target", "-t", help="The target to restore.")],
    into: Annotated[
        str | None,
        typer.Option(
            help="A PostgreSQL DSN (new or empty database), a folder (files, Prometheus TSDB, "
            "Kubernetes YAML; Redis: the RDB and the steps to load it), redis://host:port "
            "(an empty server to load into) or k8s://CLUSTER (Kubernetes objects: server-side "
            "apply into that targets.kubernetes entry)."
        ),
    ] = None,
    backup_: Annotated[
        str, typer.Option("--backup", help="'latest' (newest verified) or a backup id")
    ] = "latest",
    schema: Annotated[str | None, typer.Option(help="Only this schema (pg_restore -n).")] = None,
    clean: Annotated[
        bool,
        typer.Option(
            "--clean",
            help="Into a non-empty destination: replace what the backup holds (Redis: "
            "FLUSHALL first).",
        ),
    ] = False,
    replace_source: Annotated[
        bool,
        typer.Option(
            "--replace-source", help="Into the backup's own source database or server (confirm)."
        ),
    ] = False,
    in_place: Annotated[
        bool, typer.Option("--in-place", help="Files: over their original paths (confirm).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Confirm without a prompt.")] = False,
    jobs: Annotated[int, typer.Option(help="pg_restore parallel jobs.")] = 2,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            help="k8s://: SOURCE=DEST applies SOURCE's objects into DEST (repeatable); DEST "
            "alone for a one-namespace backup.",
        ),
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", help="k8s://: only objects of this kind (repeatable)."),
    ] = None,
    force_conflicts: Annotated[
        bool,
        typer.Option(
            "--force-conflicts",
            help="k8s://: take over fields another field manager owns (kubectl's flag).",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Show the plan (k8s://: each object created / changed / unchanged, from the "
            "server's dry run) and change nothing.",
        ),
    ] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup into a database, a folder or a cluster, validate it against the
    manifest and measure the RTO. Exit 0 restored and validated (or planned with --dry-run),
    1 failed, 2 refused (nothing touched)."""
    from runbook.runtime import open_runtime
    from runbook.secrets import split_dsn
    from tasks.restore.destination import PASSWORD_ENV
    from tasks.restore.plan import RestoreRequest
    from tasks.restore.redis import split_url_password
    from tasks.restore.report import restore_json
    from tasks.restore.run import RestoreRun, planned_record, preflight

    config_path = config_path_of(config)
    runtime = open_runtime(config_path)
    overwrite = _overwrite(clean, replace_source, in_place)
    if into and "://" not in into and "=" not in into:
        into = str(Path(into).expanduser().resolve())  # a folder
    request = RestoreRequest(
        target=target,
        into=into or "",
        backup=backup_,
        schema=schema,
        overwrite=overwrite,
        confirmed=yes,
        jobs=jobs,
        namespaces=tuple(namespace or ()),
        kinds=tuple(kind or ()),
        force_conflicts=force_conflicts,
    )
    run = RestoreRun(runtime.config, runtime.catalog, runtime.storage, request)
    checked = preflight(run)
    if dry_run:
        shown = restore_json(planned_record(run, checked))
        shown["objects"] = [c.as_json() for c in checked.facts.changes]
        if as_json:
            emit_json({"restore": shown})
        else:
            _print_plan(shown, checked.plan.confirm)
        raise typer.Exit(EXIT_OK)
    _confirm_or_refuse(checked.plan.confirm, checked.plan.actions, yes)
    param_into = into or ""
    if into and into.startswith("k8s://"):
        pass  # a cluster's name: no secret in it
    elif into and into.startswith(("redis://", "rediss://")):
        param_into, password = split_url_password(into)
        if password:  # never a flow parameter: Prefect stores those
            os.environ[PASSWORD_ENV] = password
    elif into and ("://" in into or "=" in into):
        param_into, password = split_dsn(into)
        if password:  # never a flow parameter: Prefect stores those
            os.environ[PASSWORD_ENV] = password
    from flows.restore import restore as restore_flow

    _completed, summary = run_flow(
        restore_flow,
        config_path,
        target=target,
        into=param_into,
        backup=backup_,
        schema_name=schema or "",
        overwrite=overwrite,
        confirm=True,  # confirmed above, or nothing needed it
        jobs=jobs,
        namespaces=list(namespace or []),
        kinds=list(kind or []),
        force_conflicts=force_conflicts,
    )
    shown = restore_json(summary.restore)
    if as_json:
        emit_json({"restore": shown})
    else:
        _print_restore(shown)
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FAILED)


@restores_app.command("list")
@operator_errors
def restores_list(
    target: Annotated[str | None, typer.Option("--target", "-t")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Past restores, newest first; a restore whose process died is shown interrupted (its
    destination incomplete). Does not start Prefect."""
    from runbook.catalog import RestoreLog
    from tasks.restore.report import restore_json
    from tasks.restore.run import sweep_dead_restores

    cfg, catalog = open_catalog(config)
    if target:
        cfg.target(target)
    restores = RestoreLog(catalog)
    sweep_dead_restores(restores, target)
    found = [restore_json(r) for r in restores.list(target=target, limit=limit)]
    if as_json:
        emit_json({"restores": found})
    elif not found:
        typer.echo("no restores yet (run `runbook restore`)")
    else:
        for r in found:
            _print_restore(r)


@backups_app.command("download")
@operator_errors
def backups_download(
    backup_id: Annotated[str, typer.Argument(help="A backup id (see `runbook backups list`).")],
    to: Annotated[Path, typer.Option("--to", help="The folder to download into.")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a backup from storage while downloading it, decompressed to .pgdump / .rdb /
    .tar. Exit 0 downloaded, 1 damaged (nothing kept). Does not start Prefect."""
    from runbook.runtime import open_runtime
    from tasks.restore.download import download_backup

    runtime = open_runtime(config_path_of(config))
    done = download_backup(runtime.catalog, runtime.storage, backup_id, to)
    problems = [
        {"key": c.key, "problem": c.problem, "detail": c.detail} for c in done.report.problems
    ]
    if as_json:
        emit_json(
            {
                "backup_id": backup_id,
                "ok": done.report.ok,
                "files": [str(p) for p in done.files],
                "problems": problems,
            }
        )
    elif done.report.ok:
        for path in done.files:
            typer.echo(f"{path}  ({path.stat().st_size} bytes, verified)")
    else:
        for p in problems:
            typer.echo(f"DAMAGED {p['key']}: {p['problem']}: {p['detail']}", err=True)
    raise typer.Exit(EXIT_OK if done.report.ok else EXIT_FAILED)
