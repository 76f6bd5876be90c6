"""`runbook check-config`, `deploy` and `demo`: setting Runbook up and trying it."""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from runbook.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigOpt,
    JsonOpt,
    app,
    config_path_of,
    emit_json,
    fail,
    make_console,
    operator_errors,
    plain,
)
from runbook.errors import RunbookError

PoolOpt = Annotated[
    str,
    typer.Option(
        "--pool",
        help="The work pool the deployments go to: process (a worker on this machine) or "
        "kubernetes (one Job per flow run; needs a PostgreSQL catalog, S3 storage, "
        "result_storage and an image).",
        case_sensitive=False,
    ),
]


@app.command("check-config")
def check_config(
    config: ConfigOpt = None, as_json: JsonOpt = False, pool: PoolOpt = "process"
) -> None:
    """Validate the config file and list its targets (secrets masked). Environment variables
    the file uses but this shell does not set are listed: set them where the flows run. With
    --pool kubernetes, also refuse what a pod cannot run (SQLite catalog, local storage, no
    result_storage)."""
    from runbook.config import ALL_KINDS, load_config

    path = None
    unset: list[str] = []
    try:
        path = config_path_of(config)
        cfg = load_config(path, unset=unset)
        if pool.lower() == "kubernetes":
            from deployments.kubernetes import check_pool

            check_pool(cfg, image=None, check_image=False)  # the image is deploy's option
        elif pool.lower() != "process":
            raise RunbookError(f"--pool: {pool!r} is not a work pool (process or kubernetes)")
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
def deploy(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    pool: PoolOpt = "process",
    image: Annotated[
        str | None,
        typer.Option(
            help="--pool kubernetes: Runbook's image as the cluster pulls it "
            "(default $RUNBOOK_IMAGE; make image, then push it).",
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            help="--pool kubernetes: the namespace of the flow-run Jobs "
            "(default $RUNBOOK_NAMESPACE, else runbook).",
        ),
    ] = None,
) -> None:
    """Register Runbook's deployments (prefect.yaml, plus one per backup.schedules entry) with
    your Prefect server (PREFECT_API_URL): schedules in runbook.yaml's timezone, RUNBOOK_CONFIG
    pointing at the config, the config's target names as choices in the UI's Custom run.
    --pool kubernetes sends them to a Kubernetes work pool instead (README, "Deploy")."""
    from deployments.register import deploy_all

    path = config_path_of(config)
    result = deploy_all(path, pool=pool.lower(), image=image, namespace=namespace)
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
            plain(d.full_name),
            plain(d.schedule_text() or "on demand"),
            plain(d.next_run or "-"),
            plain(json.dumps(d.parameters) if d.parameters else ""),
        )
    console = make_console()
    console.print(table)
    for warning in result.warnings:
        console.print(f"[yellow]note[/]: {plain(warning)}")
    console.print(
        f"Start a worker for pool {plain(result.work_pool)}: "
        f"{plain(result.worker_command)}\n"
        f"Run one now: {plain(result.run_example)}"
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
    from runbook.cli.prefect_server import start_temporary_server

    start_temporary_server()  # in ephemeral mode: a server that dies with this process
    ok = run_demo(workdir.resolve(), as_json=as_json, keep_running=keep_running)
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)
