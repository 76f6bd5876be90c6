"""Measuring a restore's destination before planning: a PostgreSQL database (does it exist,
what does it hold, is it the backup's source, by DSN and by system identifier) or a folder
(does it exist, what does it hold, would the restore land on the backed-up paths)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from runbook.config import FilesTarget, PostgresTarget
from runbook.errors import RunbookError
from runbook.secrets import describe_dsn
from runbook.systems.postgres import connect, server_identity
from tasks.drills.scratch import is_source_database
from tasks.restore.plan import DestinationFacts
from tasks.restore.redis import url_with_password

_CONTENTS = """
    SELECT n.nspname, count(c.oid)
    FROM pg_namespace n LEFT JOIN pg_class c
      ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
    GROUP BY 1 ORDER BY 1
"""


def admin_dsn(dsn: str) -> str:
    """The same server, database `postgres` (to see and create databases)."""
    return make_conninfo(**{**conninfo_to_dict(dsn), "dbname": "postgres"})


def database_name(dsn: str) -> str:
    name = conninfo_to_dict(dsn).get("dbname")
    if not name:
        raise RunbookError("--into names no database (postgresql://user@host:port/DBNAME)")
    return str(name)


def database_exists(dsn: str) -> bool:
    with connect(admin_dsn(dsn), autocommit=True) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database_name(dsn),)
        ).fetchone()
    return found is not None


def create_database(dsn: str) -> None:
    with connect(admin_dsn(dsn), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database_name(dsn))))


def create_schema(dsn: str, schema: str) -> None:
    with connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def database_contents(dsn: str, schema: str | None) -> str:
    """What the database holds that a restore would collide with, "" when nothing: relations
    outside the system schemas, and schemas other than public (a schema restore: that schema)."""
    with connect(dsn, autocommit=True) as conn:
        rows = conn.execute(_CONTENTS).fetchall()
    if schema is not None:
        rows = [(name, count) for name, count in rows if name == schema]
        return f"schema {schema} exists ({rows[0][1]} relations)" if rows else ""
    relations = sum(count for _, count in rows)
    schemas = [name for name, count in rows if count or name != "public"]
    if not relations and not schemas:
        return ""
    return f"{relations} relations in schemas {', '.join(schemas)}"


def postgres_destination(
    target: PostgresTarget, dsn: str, source: Mapping[str, Any], schema: str | None
) -> DestinationFacts:
    """The facts `plan_restore` needs about a database destination (connects to its server)."""
    dbname = database_name(dsn)
    system_id, _, _ = server_identity(admin_dsn(dsn))
    exists = database_exists(dsn)
    return DestinationFacts(
        kind="postgres",
        where=describe_dsn(dsn),
        exists=exists,
        contents=database_contents(dsn, schema) if exists else "",
        is_source=is_source_database(target, dsn, server=(system_id, dbname), source=source),
    )


def _overlaps(a: str, b: str) -> bool:
    return os.path.commonpath([a, b]) in (a, b)


def lands_on_originals(target: FilesTarget, folder: Path) -> bool:
    """Whether extracting below `folder` (members are the absolute paths without '/') writes
    onto or around one of the paths the target backs up."""
    for path in target.paths:
        landing = os.path.realpath(folder / str(path).lstrip("/"))
        originals = {os.path.realpath(path), os.path.abspath(path)}
        if any(_overlaps(landing, original) for original in originals):
            return True
    return False


def files_destination(target: FilesTarget, folder: Path, in_place: bool) -> DestinationFacts:
    if in_place:
        shown = ", ".join(str(p) for p in target.paths)
        return DestinationFacts(
            kind="files", where=shown, exists=True, contents="", original_paths=True
        )
    entries = sorted(os.listdir(folder)) if folder.is_dir() else []
    if folder.exists() and not folder.is_dir():
        raise RunbookError(f"--into {folder} is a file, not a folder")
    contents = f"{len(entries)} entries, e.g. {entries[0]}" if entries else ""
    return DestinationFacts(
        kind="files",
        where=str(folder),
        exists=folder.exists(),
        contents=contents,
        original_paths=lands_on_originals(target, folder),
    )


PASSWORD_ENV = "RUNBOOK_RESTORE_PASSWORD"


def dsn_with_password(into: str) -> str:
    """`into` (a DSN, or a redis:// URL) with the password from $RUNBOOK_RESTORE_PASSWORD
    when it names none: the CLI
    puts a DSN's password there, so it is never a flow parameter Prefect stores."""
    password = os.environ.get(PASSWORD_ENV)
    if password and into.startswith(("redis://", "rediss://")):
        return url_with_password(into, password)
    if not password or not (into.startswith(("postgresql://", "postgres://")) or "=" in into):
        return into
    params = conninfo_to_dict(into)
    if params.get("password"):
        return into
    return make_conninfo(**{**params, "password": password})
