"""PostgreSQL health checks, check_postgres-style, over one connection.

Checks about sessions, locks, transaction IDs, replication and slots look at the whole server
(pg_stat_activity, pg_locks and pg_database are cluster-wide); cache hit ratio, dead tuples,
vacuum age and size look at the target's database only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from runbook.config import PostgresHealth, PostgresTarget, Threshold
from runbook.errors import PermanentError
from runbook.health import CheckResult, Status, measured, timer
from runbook.secrets import describe_dsn, redact
from runbook.systems.postgres import (
    PostgresAuthFailed,
    PostgresUnavailable,
    connect,
    idle_sessions,
    safe_split,
)

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
    _, password = safe_split(dsn)
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
    sessions = idle_sessions(conn, idle_after=None, in_transaction_after=limit)
    if not sessions:
        return _Finding(
            0,
            f"no session idle in transaction longer than {_span(limit)}",
            health.idle_in_transaction,
        )
    count, oldest = len(sessions), sessions[0]
    return _Finding(
        count,
        f"{count} session{'' if count == 1 else 's'} idle in transaction longer than "
        f"{_span(limit)}; oldest: pid {oldest.pid} ({oldest.user}@{oldest.database}) for "
        f"{_span(oldest.idle_seconds)}, last query: {_preview(oldest.last_query)}",
        health.idle_in_transaction,
    )


def _probe_idle_connections(conn: psycopg.Connection, health: PostgresHealth) -> _Finding:
    limit = health.idle_connection_hours * 3600
    # Runbook 003's cleanup (pg_terminate_backend of sessions idle over the limit), counted with
    # the query the maintenance window's idle_connections procedure ends them with.
    sessions = idle_sessions(conn, idle_after=limit, in_transaction_after=None)
    if not sessions:
        return _Finding(
            0, f"no connection idle longer than {_span(limit)}", health.idle_connections
        )
    count = len(sessions)
    return _Finding(
        count,
        f"{count} connection{'' if count == 1 else 's'} idle longer than {_span(limit)} "
        f"(oldest idle for {_span(sessions[0].idle_seconds)}); runbook 003 terminates them",
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
