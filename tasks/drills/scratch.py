"""Scratch databases of drills: their names (always prefixed, never a source database's) and
dropping them (refused for any other name)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from psycopg import sql

from runbook.errors import PermanentError
from runbook.systems.postgres import connect

SCRATCH_PREFIX = "runbook_drill_"


STALE_AFTER = timedelta(hours=24)  # a running drill row this old from another host is dead


def scratch_name(target: str, now: datetime) -> str:
    safe = re.sub(r"[^a-z0-9_]", "_", target.lower())[:30]
    return f"{SCRATCH_PREFIX}{safe}_{now.strftime('%Y%m%dt%H%M%Sz')}"


def drop_database(admin_dsn: str, name: str) -> None:

    if not name.startswith(SCRATCH_PREFIX):
        raise PermanentError(f"refusing to drop {name!r}: not a drill scratch database")
    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
