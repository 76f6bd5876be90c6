"""Where a drill restores: scratch databases (always prefixed, never the source database) on a
drill server, and the record of where a drill's scratch lives. `refuse_source` is the one
place that decides whether a drill server is the source database."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from runbook.config import PostgresTarget
from runbook.errors import PermanentError, RunbookError
from runbook.secrets import describe_dsn
from runbook.systems.postgres import connect

SCRATCH_PREFIX = "runbook_drill_"


STALE_AFTER = timedelta(hours=24)  # a running drill row this old from another host is dead


class DrillRefused(RunbookError):
    """The drill plan is unsafe (it would restore into the source database)."""


def scratch_name(target: str, now: datetime) -> str:
    safe = re.sub(r"[^a-z0-9_]", "_", target.lower())[:30]
    return f"{SCRATCH_PREFIX}{safe}_{now.strftime('%Y%m%dt%H%M%Sz')}"


@dataclass(frozen=True)
class ScratchPlace:
    """Where one drill's scratch lives, as the catalog records it ('server|database|folder'):
    `embedded:<folder>/pg` (a throwaway embedded PostgreSQL), `postgres:<host:port>` (the
    team's drill server) or `redis-server` (a throwaway one inside the work folder)."""

    server: str
    database: str  # "" for Redis
    workdir: Path

    def __str__(self) -> str:
        return f"{self.server}|{self.database}|{self.workdir}"

    @classmethod
    def parse(cls, text: str) -> ScratchPlace:
        server, database, workdir = text.split("|")
        return cls(server, database, Path(workdir))

    @property
    def what(self) -> str:
        """What a person would call it: the scratch database, else the work folder."""
        return self.database or str(self.workdir)


def drop_database(admin_dsn: str, name: str) -> None:
    if not name.startswith(SCRATCH_PREFIX):
        raise PermanentError(f"refusing to drop {name!r}: not a drill scratch database")
    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def is_source_database(
    target: PostgresTarget,
    dsn: str,
    server: tuple[str | None, str] | None = None,
    source: Mapping[str, Any] | None = None,
) -> bool:
    """Whether `dsn` is the target's source database: by DSN alone, or, given the server's
    (system identifier, database) once connected, by the system identifier against the
    backup's `source` facts and the database name (another spelling of the same server)."""
    source = source or {}
    if describe_dsn(dsn) == describe_dsn(target.dsn.get_secret_value()):
        return True
    system_id, database = server or (None, conninfo_to_dict(dsn).get("dbname") or "")
    return (
        system_id is not None
        and system_id == source.get("system_identifier")
        and database == source.get("database")
    )


def refuse_source(
    target: PostgresTarget,
    drill_dsn: str,
    *,
    server: tuple[str | None, str] | None = None,
    source: Mapping[str, Any] | None = None,
    scratch: str | None = None,
) -> None:
    """Refuse a drill server that is the source database: a drill never restores into (or
    from) it. Before anything is recorded, by DSN alone; once connected (`server`: the drill
    server's system identifier and current database), also by the system identifier against
    the backup's `source` facts, so another spelling of the same server is caught too; and a
    scratch database that would carry the source database's name."""
    source = source or {}
    same_dsn = describe_dsn(drill_dsn) == describe_dsn(target.dsn.get_secret_value())
    system_id, database = server or (None, conninfo_to_dict(drill_dsn).get("dbname") or "")
    same_server = same_dsn or (
        system_id is not None and system_id == source.get("system_identifier")
    )
    if same_dsn or (same_server and database == source.get("database")):
        raise DrillRefused(
            f"targets.postgres[{target.name}].drill.dsn points at the source database "
            f"{database!r} on the source server: a drill never restores into (or from) the "
            "source; point drill.dsn at another database or server, or use {server: embedded}"
        )
    if same_server and scratch is not None and scratch == source.get("database"):
        raise DrillRefused(f"scratch database {scratch!r} would be the source database")
