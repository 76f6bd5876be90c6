"""PostgreSQL as Runbook talks to it: connections with classified errors (transient or
permanent, never a password in the text), the facts of a source database taken inside the
snapshot a dump uses, a server's identity, creating and dropping databases, and the idle
client sessions that health checks count and maintenance windows end."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from runbook.errors import PermanentError, TransientError
from runbook.secrets import describe_dsn, redact, split_dsn


class PostgresUnavailable(TransientError):
    """The server refused, timed out or is starting up: worth retrying."""


class PostgresAuthFailed(PermanentError):
    """Wrong password, unknown role or database: retrying cannot help."""


# SQLSTATEs that mean "try again later": too many connections, starting up / shutting down,
# serialization/deadlock, lock timeouts.
_TRANSIENT_SQLSTATES = {"53300", "57P01", "57P02", "57P03", "40001", "40P01", "55P03", "08006"}


_PERMANENT_SQLSTATES = {"28P01", "28000", "3D000", "42501"}


# libpq reports connection-time FATALs without a SQLSTATE: recognise them by their text.
_PERMANENT_MESSAGES = (
    "password authentication failed",
    "no password supplied",
    "does not exist",  # role or database
    "no pg_hba.conf entry",
    "permission denied",
    "certificate",
)


def classify_error(exc: BaseException, dsn: str) -> Exception:
    """A psycopg error -> PostgresUnavailable or PostgresAuthFailed with a password-free message."""
    _, password = safe_split(dsn)
    where = describe_dsn(dsn) if password is not None or dsn else "?"
    text = redact(str(exc).strip(), [password]) or type(exc).__name__
    text = " ".join(text.split())
    sqlstate = getattr(exc, "sqlstate", None)
    message = f"PostgreSQL {where}: {text}"
    lowered = text.lower()
    if sqlstate in _PERMANENT_SQLSTATES or any(m in lowered for m in _PERMANENT_MESSAGES):
        return PostgresAuthFailed(message)
    if (
        sqlstate in _TRANSIENT_SQLSTATES
        or sqlstate is None
        and isinstance(exc, psycopg.OperationalError)
    ):
        return PostgresUnavailable(message)
    return PermanentError(message)


def safe_split(dsn: str) -> tuple[str, str | None]:
    try:
        return split_dsn(dsn)
    except Exception:
        return "", None


def connect(
    dsn: str, *, connect_timeout: float = 10, autocommit: bool = False
) -> psycopg.Connection:
    """Connect, or raise a classified error that never contains the password."""
    try:
        return psycopg.connect(
            dsn,
            connect_timeout=max(1, int(connect_timeout)),
            autocommit=autocommit,
            application_name="runbook",
        )
    except psycopg.Error as exc:
        raise classify_error(exc, dsn) from None


_USER_RELATIONS = """
    SELECT c.oid, n.nspname, c.relname, c.relkind
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY n.nspname, c.relname
"""


_COLUMNS = """
    SELECT attrelid, attname, format_type(atttypid, atttypmod), attnotnull
    FROM pg_attribute WHERE attrelid = ANY(%s) AND attnum > 0 AND NOT attisdropped
    ORDER BY attrelid, attnum
"""


_PRIMARY_KEYS = """
    SELECT con.conrelid, array_agg(a.attname ORDER BY k.ord)
    FROM pg_constraint con
    CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
    WHERE con.contype = 'p' AND con.conrelid = ANY(%s)
    GROUP BY con.conrelid
"""


_INDEXES = """
    SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes
    WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
      AND schemaname NOT LIKE 'pg\\_toast%%'
    ORDER BY 1, 2, 3
"""


_FOREIGN_KEYS = """
    SELECT n.nspname, c.relname, con.conname, fn.nspname, fc.relname,
           (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(con.conkey)
              WITH ORDINALITY k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum),
           (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(con.confkey)
              WITH ORDINALITY k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum)
    FROM pg_constraint con
    JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_class fc ON fc.oid = con.confrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
    WHERE con.contype = 'f' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    ORDER BY 1, 2, 3
"""


# Sequences with the column they feed (OWNED BY or identity), for the drill's sequence check.
_SEQUENCES = """
    SELECT sn.nspname, s.relname, ps.last_value, tn.nspname, t.relname, a.attname
    FROM pg_class s JOIN pg_namespace sn ON sn.oid = s.relnamespace
    LEFT JOIN pg_sequences ps ON ps.schemaname = sn.nspname AND ps.sequencename = s.relname
    LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
         AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
    LEFT JOIN pg_class t ON t.oid = d.refobjid
    LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
    LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE s.relkind = 'S' AND sn.nspname NOT IN ('pg_catalog', 'information_schema')
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass
                      AND e.objid = s.oid AND e.deptype = 'e')
    ORDER BY 1, 2
"""


def server_facts(conn: psycopg.Connection) -> dict[str, Any]:
    """Version, identity and size of the server and database (outside any snapshot)."""
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
        " current_database(), pg_database_size(current_database()),"
        " pg_encoding_to_char(encoding), datcollate"
        " FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    facts: dict[str, Any] = {
        "server_version": row[0],
        "server_version_num": row[1],
        "server_major": row[1] // 10000,
        "database": row[2],
        "database_bytes": row[3],
        "encoding": row[4],
        "collation": row[5],
        "system_identifier": None,
    }
    allowed = conn.execute(
        "SELECT has_function_privilege('pg_control_system()', 'execute')"
    ).fetchone()[0]
    if allowed:
        facts["system_identifier"] = str(
            conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
        )
    conn.commit()
    return facts


def schema_facts(conn: psycopg.Connection) -> dict[str, Any]:
    """Tables (ordered columns, primary key), indexes, foreign keys, sequences, extensions."""
    relations = conn.execute(_USER_RELATIONS).fetchall()
    oids = [r[0] for r in relations]
    columns: dict[int, list[list[Any]]] = {oid: [] for oid in oids}
    for relid, name, type_, notnull in conn.execute(_COLUMNS, (oids,)):
        columns[relid].append([name, type_, notnull])
    pks = dict(conn.execute(_PRIMARY_KEYS, (oids,)).fetchall())
    tables = [
        {
            "schema": schema,
            "name": name,
            "partitioned": kind == "p",
            "columns": columns[oid],
            "primary_key": list(pks.get(oid) or []),
        }
        for oid, schema, name, kind in relations
    ]
    indexes = [
        {"schema": s, "table": t, "name": n, "definition": d}
        for s, t, n, d in conn.execute(_INDEXES)
    ]
    foreign_keys = [
        {
            "schema": s,
            "table": t,
            "name": n,
            "ref_schema": rs,
            "ref_table": rt,
            "columns": list(cols or []),
            "ref_columns": list(rcols or []),
        }
        for s, t, n, rs, rt, cols, rcols in conn.execute(_FOREIGN_KEYS)
    ]
    sequences = [
        {
            "schema": s,
            "name": n,
            "last_value": last,
            "owned_by": {"schema": ts, "table": tt, "column": col} if tt else None,
        }
        for s, n, last, ts, tt, col in conn.execute(_SEQUENCES)
    ]
    extensions = [
        {"name": n, "version": v}
        for n, v in conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1")
    ]
    return {
        "tables": tables,
        "indexes": indexes,
        "foreign_keys": foreign_keys,
        "sequences": sequences,
        "extensions": extensions,
    }


def schema_fingerprint(schema: dict[str, Any]) -> str:
    """sha256 over what a restore must reproduce: tables with their columns and keys, index
    definitions, foreign keys, sequence and extension names (not values or versions)."""
    canonical = {
        "tables": [
            [t["schema"], t["name"], t["columns"], t["primary_key"]] for t in schema["tables"]
        ],
        "indexes": [
            [i["schema"], i["table"], i["name"], i["definition"]] for i in schema["indexes"]
        ],
        "foreign_keys": [
            [f["schema"], f["table"], f["name"], f["ref_schema"], f["ref_table"]]
            for f in schema["foreign_keys"]
        ],
        "sequences": [[s["schema"], s["name"]] for s in schema["sequences"]],
        "extensions": sorted(e["name"] for e in schema["extensions"]),
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def exact_row_counts(conn: psycopg.Connection, tables: list[dict[str, Any]]) -> dict[str, int]:
    """count(*) of every plain table (ONLY its own rows, as pg_dump dumps them)."""
    counts = {}
    for table in tables:
        if table["partitioned"]:
            continue
        query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
            sql.Identifier(table["schema"]), sql.Identifier(table["name"])
        )
        counts[f"{table['schema']}.{table['name']}"] = conn.execute(query).fetchone()[0]
    return counts


@contextmanager
def exported_snapshot(
    dsn: str, connect_timeout: float = 10, lock_timeout: float = 300
) -> Iterator[tuple[psycopg.Connection, str]]:
    """A REPEATABLE READ, READ ONLY transaction and its exported snapshot id.

    Everything read on the connection and every `pg_dump --snapshot=<id>` started while the
    block is open sees the same data. The transaction stays open until the block exits.
    Queries give up after `lock_timeout` seconds behind a conflicting lock (a long DDL) with a
    transient error, instead of hanging.
    """
    conn = connect(dsn, connect_timeout=connect_timeout)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        conn.execute(
            sql.SQL("SET lock_timeout = {}").format(
                sql.Literal(f"{max(1, int(lock_timeout * 1000))}ms")
            )
        )
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        yield conn, snapshot
    except psycopg.Error as exc:
        raise classify_error(exc, dsn) from None
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()


def server_identity(dsn: str) -> tuple[str | None, str, int]:
    """(system identifier or None, current database, major version) of a server."""
    with connect(dsn, autocommit=True) as conn:
        allowed = conn.execute(
            "SELECT has_function_privilege('pg_control_system()', 'execute')"
        ).fetchone()[0]
        system_id = None
        if allowed:
            system_id = str(
                conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
            )
        database = conn.execute("SELECT current_database()").fetchone()[0]
        return system_id, database, conn.info.server_version // 10000


def create_database(admin_dsn: str, name: str) -> None:
    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# pg_stat_activity states of a session that holds a transaction open and does nothing.
IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")


@dataclass(frozen=True)
class IdleSession:
    """A client session doing nothing, as pg_stat_activity shows it."""

    pid: int
    user: str | None
    application: str
    client: str  # client address, "local" for a Unix socket
    database: str | None
    state: str  # idle, idle in transaction, idle in transaction (aborted)
    idle_seconds: float  # since state_change: how long it has been in this state
    backend_start: datetime  # with pid, names the session (pids are reused)
    last_query: str  # its first 200 characters: may hold secrets, preview before showing


# Client backends only (never walsenders, autovacuum, background or parallel workers) and
# never the asking session. Idle time counts from state_change, when the session went idle:
# runbook 003 writes query_start, which for an idle session is when its last query *started*,
# so a session whose hour-long query ended a minute ago would count as idle for an hour.
_IDLE_SESSIONS = """
    SELECT pid, usename, coalesce(application_name, ''), coalesce(host(client_addr), 'local'),
           datname, state, extract(epoch FROM now() - state_change)::float8, backend_start,
           left(query, 200)
    FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
      AND (state = 'idle'
           AND state_change < now() - make_interval(secs => %(idle_after)s::float8)
           OR state = ANY(%(in_transaction)s)
           AND state_change < now() - make_interval(secs => %(in_transaction_after)s::float8))
      AND (NOT %(this_database_only)s OR datname = current_database())
    ORDER BY state_change, pid
"""


def idle_sessions(
    conn: psycopg.Connection,
    *,
    idle_after: float | None,
    in_transaction_after: float | None,
    this_database_only: bool = False,
) -> list[IdleSession]:
    """Client sessions idle longer than `idle_after` seconds and idle in a transaction longer
    than `in_transaction_after` seconds (None leaves that kind out), longest idle first;
    the whole server's, or the connection's database's only."""
    rows = conn.execute(
        _IDLE_SESSIONS,
        {
            "idle_after": idle_after,
            "in_transaction": list(IDLE_IN_TRANSACTION),
            "in_transaction_after": in_transaction_after,
            "this_database_only": this_database_only,
        },
    ).fetchall()
    return [IdleSession(*row) for row in rows]
