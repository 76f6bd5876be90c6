"""The demo: backup -> verify -> retention (dry run) against an embedded PostgreSQL.

1. Start an embedded PostgreSQL 18 and seed sample data (runbook/demo.py).
2. Write a config with local storage and a SQLite catalog.
3. Run the backup flow, the verify flow and a retention dry run in this one process.
4. Print a summary table.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from runbook.demo import (
    redis_reachable,
    seed_sample_data,
    start_embedded_postgres,
    write_demo_config,
)


def run_demo(workdir: Path, as_json: bool = False) -> bool:
    """Seed, then run backup -> verify -> retention dry run and print a summary."""
    from rich.console import Console
    from rich.table import Table

    from flows.backup import backup
    from flows.retention import retention
    from flows.verify_backups import verify_backups
    from runbook.formatting import BACKUP_COLUMNS, backup_rows

    stream = sys.stderr if as_json else sys.stdout
    console = Console(stderr=as_json, highlight=False, width=None if stream.isatty() else 160)
    started = time.monotonic()
    workdir = workdir / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]1.[/] starting embedded PostgreSQL 18 in {workdir / 'pg'}")
    server = start_embedded_postgres(workdir / "pg")
    dsn = seed_sample_data(server)
    with_redis = redis_reachable()
    config = write_demo_config(workdir, dsn, with_redis)
    console.print(
        f"[bold]2.[/] config {config} (redis target: "
        f"{'yes' if with_redis else 'no Redis on 127.0.0.1:6379'})"
    )

    console.print("[bold]3.[/] backup flow (dump -> zstd -> sha256 -> storage, then verify)")
    b_state = backup(config_path=str(config), return_state=True)
    b = b_state.result(raise_on_failure=False)
    console.print("[bold]4.[/] verify flow (read every artifact back from storage)")
    v_state = verify_backups(config_path=str(config), return_state=True)
    v = v_state.result(raise_on_failure=False)
    console.print("[bold]5.[/] retention flow (dry run)")
    r_state = retention(dry_run=True, config_path=str(config), return_state=True)
    r = r_state.result(raise_on_failure=False)

    failures = [s.name for s in (b_state, v_state, r_state) if not s.is_completed()]
    if as_json:
        print(
            json.dumps(
                {
                    "ok": not failures,
                    "backups": [x.model_dump(mode="json") for x in getattr(b, "backups", [])],
                    "verified": getattr(v, "ok", False),
                    "retention": [d.model_dump(mode="json") for d in getattr(r, "decisions", [])],
                },
                indent=2,
                default=str,
            )
        )
        return not failures

    table = Table(title="Runbook demo: this run's backups")
    for column in BACKUP_COLUMNS:
        table.add_column(column)
    colour = lambda text, ok: f"[green]{text}[/]" if ok else f"[red]{text}[/]"  # noqa: E731
    for row in backup_rows(getattr(b, "backups", []), colour):
        table.add_row(*row)
    console.print(table)
    if r is not None and hasattr(r, "decisions"):
        keep = sum(1 for d in r.decisions if d.action == "keep")
        console.print(
            f"retention (dry run): keep {keep}, delete {len(r.decisions) - keep} "
            "(`runbook retention --config ... --apply` deletes)"
        )
    console.print(
        f"{'[green]all flows completed' if not failures else '[red]failed: ' + ', '.join(failures)}"
        f"[/] in {time.monotonic() - started:.0f} s. Try: .venv/bin/runbook backups list "
        f"--config {config}"
    )
    return not failures
