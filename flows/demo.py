"""The demo: the whole cycle against an embedded PostgreSQL, in one process.

1. Start an embedded PostgreSQL 18 and seed sample data (runbook/demo.py).
2. Write a config with local storage and a SQLite catalog.
3. Run the flows: backup, verify, DR drill (into a second, throwaway embedded server),
   health (twice: a baseline, then again after new log lines), retention dry run.
4. Print a summary.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from runbook.demo import (
    append_sample_log_lines,
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
    from flows.daily_health import daily_health
    from flows.dr_drill import dr_drill
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
    try:
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
        console.print(
            "[bold]5.[/] DR drill (restore into a throwaway PostgreSQL, validate, RTO/RPO)"
        )
        d_state = dr_drill(config_path=str(config), return_state=True)
        d = d_state.result(raise_on_failure=False)
        console.print("[bold]6.[/] health flow (PostgreSQL, Redis, host, logs, backup freshness)")
        daily_health(config_path=str(config), return_state=True)  # baseline of the log offsets
        append_sample_log_lines(workdir)
        h_state = daily_health(config_path=str(config), return_state=True)
        h = h_state.result(raise_on_failure=False)
        console.print("[bold]7.[/] retention flow (dry run)")
        r_state = retention(dry_run=True, config_path=str(config), return_state=True)
        r = r_state.result(raise_on_failure=False)
    finally:
        server.cleanup()  # stop it now: a caller that lives on (tests) must not keep it

    # A health run that finds something critical on a laptop is a finding, not a demo failure.
    failures = [s.name for s in (b_state, v_state, d_state, r_state) if not s.is_completed()]
    if as_json:
        print(
            json.dumps(
                {
                    "ok": not failures,
                    "backups": [x.model_dump(mode="json") for x in getattr(b, "backups", [])],
                    "verified": getattr(v, "ok", False),
                    "drills": [x.model_dump(mode="json") for x in getattr(d, "drills", [])],
                    "health": {
                        "status": getattr(h, "status", None),
                        "checks": [c.model_dump(mode="json") for c in getattr(h, "checks", [])],
                    },
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
    for record in getattr(d, "drills", []):
        verdict = "[green]passed[/]" if record.passed else "[red]FAILED[/]"
        console.print(
            f"DR drill of {record.target}: {verdict}, backup {record.backup_id}, "
            f"RTO {record.rto_seconds or 0:.1f}s, RPO {record.rpo_seconds or 0:.0f}s, "
            f"{sum(c.ok for c in record.checks)}/{len(record.checks)} checks ok"
        )
        if record.data_docs:
            console.print(f"  Great Expectations Data Docs: {record.data_docs}")
    if hasattr(h, "checks"):
        counts = {
            s: sum(1 for c in h.checks if c.status.value == s)
            for s in ("ok", "warn", "critical", "unknown")
        }
        console.print(
            f"health: {h.status.value}"
            + (f" ({h.severity})" if h.severity else "")
            + ", "
            + ", ".join(f"{n} {s}" for s, n in counts.items())
        )
        for c in h.checks:
            if c.status.value != "ok":
                console.print(f"  {c.status.value}: {c.check} on {c.target}: {c.message}")
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
