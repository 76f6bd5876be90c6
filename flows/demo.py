"""The demo: the whole cycle against an embedded PostgreSQL, in one process.

1. Start an embedded PostgreSQL 18 and seed sample data (runbook/demo.py).
2. Write a config with local storage and a SQLite catalog.
3. Run the flows: backup, verify, DR drill (into a second, throwaway embedded server),
   health (twice: a baseline, then again after new log lines), retention dry run.
4. Print a summary; with keep_running, keep the embedded PostgreSQL up until Ctrl-C so the
   commands and deployments can be tried against it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.backup import backup
from flows.daily_health import daily_health
from flows.dr_drill import dr_drill
from flows.retention import retention
from flows.verify_backups import verify_backups
from runbook.config import CONFIG_ENV
from runbook.demo import (
    append_sample_log_lines,
    redis_reachable,
    seed_sample_data,
    write_demo_config,
)
from runbook.errors import RunFailed
from runbook.formatting import BACKUP_COLUMNS, backup_rows
from runbook.systems.pg_servers import EmbeddedServer


def run_demo(workdir: Path, as_json: bool = False, keep_running: bool = False) -> bool:
    """Seed, run backup -> verify -> drill -> health -> retention (dry run), print a summary."""
    stream = sys.stderr if as_json else sys.stdout
    console = Console(stderr=as_json, highlight=False, width=None if stream.isatty() else 160)
    started = time.monotonic()
    workdir = workdir / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]1.[/] starting embedded PostgreSQL 18 in {workdir / 'pg'}")
    server = EmbeddedServer(workdir, keep_data=True)
    previous_config = os.environ.get(CONFIG_ENV)
    try:
        dsn = seed_sample_data(server)
        with_redis = redis_reachable()
        config = write_demo_config(workdir, dsn, with_redis)
        console.print(
            f"[bold]2.[/] config {config} (redis target: "
            f"{'yes' if with_redis else 'no Redis on 127.0.0.1:6379'})"
        )
        os.environ[CONFIG_ENV] = str(config)  # the flows read their config from here

        console.print("[bold]3.[/] backup flow (dump -> zstd -> sha256 -> storage, then verify)")
        b_state = backup(return_state=True)
        console.print("[bold]4.[/] verify flow (read every artifact back from storage)")
        v_state = verify_backups(return_state=True)
        console.print(
            "[bold]5.[/] DR drill (restore into a throwaway PostgreSQL, validate, RTO/RPO)"
        )
        d_state = dr_drill(return_state=True)
        console.print("[bold]6.[/] health flow (PostgreSQL, Redis, host, logs, backup freshness)")
        daily_health(return_state=True)  # baseline of the log offsets
        append_sample_log_lines(workdir)
        h_state = daily_health(return_state=True)
        console.print("[bold]7.[/] retention flow (dry run)")
        r_state = retention(dry_run=True, return_state=True)

        tour = Tour(*(summary(s) for s in (b_state, v_state, d_state, h_state, r_state)))
        # A health run that finds something critical on a laptop is a finding, not a failure.
        failures = [s.name for s in (b_state, v_state, d_state, r_state) if not s.is_completed()]
        if as_json:
            print(json.dumps(_as_json(tour, failures), indent=2, default=str))
        else:
            _print_summary(console, tour, failures, time.monotonic() - started, config)
        if keep_running:
            _serve_until_interrupted(console, server, config)
        elif not as_json:
            console.print(
                "The demo's embedded PostgreSQL stops now, so commands against it (runbook "
                "health, backup, drill, the deployments) would find it down. To try them, run "
                "[bold].venv/bin/runbook demo --keep-running[/] and, from another terminal, "
                f"pass --config {config}. Read-only commands work on the demo catalog any time."
            )
    finally:
        server.close()  # stop it now: a caller that lives on (tests) must not keep it
        if previous_config is None:
            os.environ.pop(CONFIG_ENV, None)
        else:
            os.environ[CONFIG_ENV] = previous_config
    return not failures


def summary(state: Any) -> Any:
    """A flow's summary, whether it completed or failed (a failed run carries it in RunFailed);
    None when the run crashed before it had one."""
    result = RunFailed.summary_of(state.result(raise_on_failure=False))
    return None if isinstance(result, BaseException) else result


class Tour(NamedTuple):
    """The summaries of the demo's flows (None where a flow crashed before it had one)."""

    backup: Any
    verify: Any
    drill: Any
    health: Any
    retention: Any


def _as_json(tour: Tour, failures: list[str]) -> dict[str, Any]:
    b, v, d, h, r = tour
    return {
        "ok": not failures,
        "backups": [x.model_dump(mode="json") for x in getattr(b, "backups", [])],
        "verified": getattr(v, "ok", False),
        "drills": [x.model_dump(mode="json") for x in getattr(d, "drills", [])],
        "health": {
            "status": getattr(h, "status", None),
            "checks": [c.model_dump(mode="json") for c in getattr(h, "checks", [])],
        },
        "retention": [x.model_dump(mode="json") for x in getattr(r, "decisions", [])],
    }


def _print_summary(
    console: Any, tour: Tour, failures: list[str], elapsed: float, config: Path
) -> None:
    b, _v, d, h, r = tour
    table = Table(title="Runbook demo: this run's backups")
    for column in BACKUP_COLUMNS:
        table.add_column(column)
    colour = lambda text, ok: f"[green]{escape(text)}[/]" if ok else f"[red]{escape(text)}[/]"  # noqa: E731
    for row in backup_rows(getattr(b, "backups", []), colour):
        table.add_row(*row)
    console.print(table)
    for record in getattr(d, "drills", []):
        verdict = "[green]passed[/]" if record.passed else "[red]FAILED[/]"
        console.print(
            f"DR drill of {escape(record.target)}: {verdict}, backup {record.backup_id}, "
            f"RTO {record.rto_seconds or 0:.1f}s, RPO {record.rpo_seconds or 0:.0f}s, "
            f"{sum(c.ok for c in record.checks)}/{len(record.checks)} checks ok"
        )
        if record.data_docs:
            console.print(f"  Great Expectations Data Docs: {escape(record.data_docs)}")
    if h is not None:
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
                console.print(escape(f"  {c.status.value}: {c.check} on {c.target}: {c.message}"))
    if r is not None:
        keep = sum(1 for x in r.decisions if x.action == "keep")
        console.print(
            f"retention (dry run): keep {keep}, delete {len(r.decisions) - keep} "
            "(`runbook retention --config ... --apply` deletes)"
        )
    verdict = (
        "[green]all flows completed" if not failures else "[red]failed: " + ", ".join(failures)
    )
    console.print(
        f"{verdict}[/] in {elapsed:.0f} s. Try: .venv/bin/runbook backups list "
        f"--config {escape(str(config))}"
    )


def _serve_until_interrupted(console: Any, server: Any, config: Path) -> None:
    """Keep the embedded PostgreSQL up until Ctrl-C (or SIGTERM)."""
    # Ctrl-C and a polite kill both stop it, even when started with SIGINT ignored (a
    # background job of a non-interactive shell inherits that).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    socket_dir = server.socket_dir
    console.print(
        f"The demo's PostgreSQL keeps running (socket in {socket_dir}) until you press Ctrl-C.\n"
        "From another terminal, for example:\n"
        f"  .venv/bin/runbook health --config {config}\n"
        f"  .venv/bin/runbook backup --config {config}\n"
        f"  .venv/bin/runbook drill --config {config}\n"
        "and with a Prefect server (see the README's Scheduling section):\n"
        f"  .venv/bin/runbook deploy --config {config}"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping the demo's PostgreSQL")
