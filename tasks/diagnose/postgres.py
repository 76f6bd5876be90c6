"""The PostgreSQL section: what `pg_stat_activity`, `pg_locks` and friends say during an
incident: activity with wait events, blocked queries with their blockers, long queries,
replication and slots, and the top statements when pg_stat_statements is installed.

Each part is one query under the section's statement_timeout; a part that fails (no
permission, no extension) is recorded under `errors` and the others still run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runbook.config import DiagnosticsSettings, PostgresTarget
from runbook.systems.postgres import connect
from tasks.diagnose.sections import Collected

ROWS = 200  # rows kept per part: a section is a snapshot to read, not a dump
QUERY_CHARS = 2000

ACTIVITY = f"""
    SELECT pid, usename AS user, datname AS database, application_name, client_addr,
           backend_type, state, wait_event_type, wait_event,
           now() - backend_start AS backend_age, now() - xact_start AS xact_age,
           now() - query_start AS query_age, left(query, {QUERY_CHARS}) AS query
    FROM pg_stat_activity
    WHERE pid <> pg_backend_pid()
    ORDER BY state = 'idle', query_start NULLS LAST
    LIMIT {ROWS}
"""

# Every waiting backend with each backend it waits for (pg_blocking_pids: heavyweight locks
# and the lock groups of parallel queries), and the lock it waits on.
BLOCKING = f"""
    SELECT w.pid AS blocked_pid, w.usename AS blocked_user, w.datname AS database,
           now() - w.query_start AS waiting_for, w.wait_event_type, w.wait_event,
           left(w.query, {QUERY_CHARS}) AS blocked_query,
           b.pid AS blocker_pid, b.usename AS blocker_user, b.state AS blocker_state,
           b.wait_event_type AS blocker_wait_event_type,
           now() - b.xact_start AS blocker_xact_age,
           left(b.query, {QUERY_CHARS}) AS blocker_query,
           (SELECT string_agg(DISTINCT l.locktype || ' ' || l.mode
                   || coalesce(' on ' || l.relation::regclass::text, ''), ', ')
              FROM pg_locks l WHERE l.pid = w.pid AND NOT l.granted) AS waiting_lock
    FROM pg_stat_activity w
    CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocking(pid)
    JOIN pg_stat_activity b ON b.pid = blocking.pid
    ORDER BY w.query_start
    LIMIT {ROWS}
"""

LONG_QUERIES = f"""
    SELECT pid, usename AS user, datname AS database, state, wait_event_type, wait_event,
           now() - query_start AS running_for, left(query, {QUERY_CHARS}) AS query
    FROM pg_stat_activity
    WHERE state <> 'idle' AND pid <> pg_backend_pid() AND backend_type = 'client backend'
      AND now() - query_start > %s
    ORDER BY query_start
    LIMIT {ROWS}
"""

REPLICATION = """
    SELECT pid, usename AS user, application_name, client_addr, state, sync_state,
           sent_lsn, write_lsn, flush_lsn, replay_lsn, write_lag, flush_lag, replay_lag
    FROM pg_stat_replication
"""

SLOTS = """
    SELECT slot_name, slot_type, database, active, restart_lsn,
           pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) AS retained_bytes
    FROM pg_replication_slots
"""

STANDBY = """
    SELECT pg_is_in_recovery() AS in_recovery,
           CASE WHEN pg_is_in_recovery() THEN now() - pg_last_xact_replay_timestamp() END
             AS replay_delay
"""

HAS_STATEMENTS = "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"

TOP_STATEMENTS = f"""
    SELECT queryid, calls, round(total_exec_time::numeric, 1) AS total_ms,
           round(mean_exec_time::numeric, 2) AS mean_ms, rows,
           shared_blks_hit, shared_blks_read, left(query, {QUERY_CHARS}) AS query
    FROM pg_stat_statements
    ORDER BY total_exec_time DESC
    LIMIT 20
"""


def _rows(conn: psycopg.Connection, query: str, params: tuple = ()) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return list(cur.fetchall())


def collect_postgres(target: PostgresTarget, settings: DiagnosticsSettings) -> Collected:
    """Activity, blocking, long queries, replication, top statements of one server."""
    timeout_ms = int(settings.section_timeout.total_seconds() * 1000 * 0.8)
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with connect(
        target.dsn.get_secret_value(),
        connect_timeout=target.connect_timeout.total_seconds(),
        autocommit=True,
    ) as conn:
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(timeout_ms),))
        conn.execute("SET application_name = 'runbook-diagnose'")
        data["server"] = {
            "version": conn.execute("SHOW server_version").fetchone()[0],
            "max_connections": int(conn.execute("SHOW max_connections").fetchone()[0]),
        }
        parts: dict[str, Callable[[], Any]] = {
            "activity": lambda: _rows(conn, ACTIVITY),
            "blocking": lambda: _rows(conn, BLOCKING),
            "long_queries": lambda: _rows(conn, LONG_QUERIES, (settings.long_query,)),
            "replication": lambda: {
                "standby": _rows(conn, STANDBY)[0],
                "replicas": _rows(conn, REPLICATION),
                "slots": _rows(conn, SLOTS),
            },
            "top_statements": lambda: (
                _rows(conn, TOP_STATEMENTS) if _rows(conn, HAS_STATEMENTS) else None
            ),
        }
        for name, read in parts.items():
            try:
                data[name] = read()
            except psycopg.Error as exc:
                errors[name] = " ".join(str(exc).split())
    if errors:
        data["errors"] = errors
    return Collected(data=data, summary=_summary(data), findings=_findings(data, settings))


def _summary(data: dict[str, Any]) -> str:
    activity = data.get("activity") or []
    active = sum(1 for r in activity if r.get("state") not in (None, "idle"))
    parts = [
        f"PostgreSQL {data['server']['version']}",
        f"{len(activity)} sessions ({active} not idle)",
        f"{len(data.get('blocking') or [])} blocked",
        f"{len(data.get('long_queries') or [])} long queries",
    ]
    if data.get("top_statements") is None and "top_statements" in data:
        parts.append("no pg_stat_statements")
    if data.get("errors"):
        parts.append(f"{len(data['errors'])} parts failed ({', '.join(data['errors'])})")
    return ", ".join(parts)


def _findings(data: dict[str, Any], settings: DiagnosticsSettings) -> list[str]:
    found = []
    for row in data.get("blocking") or []:
        waited = row.get("waiting_for")
        found.append(
            f"pid {row['blocked_pid']} is blocked by pid {row['blocker_pid']} "
            f"({row.get('blocker_state')}) on {row.get('waiting_lock') or 'a lock'}"
            + (f" for {waited.total_seconds():.0f}s" if waited is not None else "")
        )
    for row in data.get("long_queries") or []:
        found.append(
            f"pid {row['pid']} has run for {row['running_for'].total_seconds():.0f}s "
            f"(over {settings.long_query.total_seconds():g}s): {row['state']}"
        )
    for replica in (data.get("replication") or {}).get("slots") or []:
        if not replica.get("active"):
            found.append(f"replication slot {replica['slot_name']} is inactive")
    return found
