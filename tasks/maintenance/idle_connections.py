"""idle_connections: runbook 003's "Kill idle connections"

    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE state = 'idle' AND query_start < now() - interval '1 hour';

as a plan a person can read first, one action per session, and sessions idle in a transaction
over their own (shorter) threshold likewise.

- measure: the client sessions of the target's database idle longer than `idle_after` or idle
  in a transaction longer than `idle_in_transaction_after` (runbook/systems/postgres.py's
  `idle_sessions`, the query the health checks count with). Idle time counts from
  `state_change` (when the session went idle), not runbook 003's `query_start`, so a session
  whose long query has just finished is not "idle for an hour".
- plan (pure): one destructive action per session, longest idle first, with the reason in
  numbers ("idle for 1h23m > 1h") and `before` = pid, user, application, client, database,
  state, idle time. Kept, with no action: the configured `exclude_users` and
  `exclude_applications`, and Runbook's own sessions (application `runbook` or `runbook-*`:
  the window's own connection, the per-target lock held through the window).
- apply: terminate only if the session is still the same one (pid and backend_start), still in
  the planned state and still idle past the threshold, checked in the same statement, so a
  session that went back to work between plan and apply is left alone. `after` says whether it
  was signalled and whether it ended (PostgreSQL >= 14 waits up to 5 s for the end).

Scope: the target's database only. Runbook 003's query is server-wide, but a window works on
one target (a database); sessions of other databases belong to other applications and to
their own targets' windows. A team that wants a server-wide sweep configures a target for each
database (or one for the `postgres` database, which covers only its own sessions).
Never touched: walsenders (physical or logical replication), autovacuum and background or
parallel workers (only `backend_type = 'client backend'` is considered), and the maintenance
session itself (`pid <> pg_backend_pid()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from psycopg import sql

from runbook.catalog.maintenance import Figure, MaintenanceAction
from runbook.config import MaintenanceSettings, PostgresTarget
from runbook.formatting import human_duration
from runbook.systems.postgres import IDLE_IN_TRANSACTION, IdleSession, idle_sessions
from tasks.maintenance.procedure import MaintenanceSession, MeasureContext

# Runbook's own connections (systems/postgres.connect, the per-target lock in runbook/locks.py).
RUNBOOK_APPLICATION = "runbook"

# PostgreSQL >= 14: pg_terminate_backend(pid, timeout) waits this long for the session to end.
TERMINATE_WAIT_MS = 5000

# Re-checked in the same statement: the same session (pid and backend_start), still in the
# planned kind of idleness, for longer than the threshold.
_TERMINATE = """
    SELECT {terminate} FROM pg_stat_activity
    WHERE pid = %(pid)s AND backend_start = %(backend_start)s::timestamptz
      AND backend_type = 'client backend' AND datname = current_database()
      AND state = ANY(%(states)s)
      AND state_change < now() - make_interval(secs => %(after)s::float8)
"""


@dataclass(frozen=True)
class IdleFacts:
    database: str
    sessions: list[IdleSession]


def _idle_text(seconds: float) -> str:
    """'42.3s' under a minute, else '1h23m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    return human_duration(timedelta(seconds=seconds))


def _is_runbook(application: str) -> bool:
    return application == RUNBOOK_APPLICATION or application.startswith(RUNBOOK_APPLICATION + "-")


class IdleConnections:
    name: ClassVar[str] = "idle_connections"
    destructive: ClassVar[bool] = True

    def measure(self, context: MeasureContext) -> IdleFacts:
        settings = context.settings.idle_connections
        database = context.session.query("SELECT current_database()")[0][0]
        sessions = idle_sessions(
            context.session.conn,
            idle_after=settings.idle_after.total_seconds(),
            in_transaction_after=settings.idle_in_transaction_after.total_seconds(),
            this_database_only=True,
        )
        return IdleFacts(database, sessions)

    def plan(
        self, facts: IdleFacts, settings: MaintenanceSettings, target: PostgresTarget
    ) -> list[MaintenanceAction]:
        idle = settings.idle_connections
        excluded_users = set(idle.exclude_users)
        excluded_applications = set(idle.exclude_applications)
        actions = []
        for session in sorted(facts.sessions, key=lambda s: (-s.idle_seconds, s.pid)):
            if session.database != facts.database:
                continue
            if session.user in excluded_users or session.application in excluded_applications:
                continue
            if _is_runbook(session.application):
                continue
            in_transaction = session.state in IDLE_IN_TRANSACTION
            limit = idle.idle_in_transaction_after if in_transaction else idle.idle_after
            if session.idle_seconds <= limit.total_seconds():
                continue
            actions.append(_terminate_action(session, limit, target))
        return actions

    def apply(self, session: MaintenanceSession, action: MaintenanceAction) -> dict[str, Figure]:
        before = action.before
        in_transaction = before["state"] in IDLE_IN_TRANSACTION
        states = list(IDLE_IN_TRANSACTION) if in_transaction else ["idle"]
        waits = session.server_major >= 14
        terminate = sql.SQL("pg_terminate_backend(pid, {})").format(TERMINATE_WAIT_MS)
        if not waits:
            terminate = sql.SQL("pg_terminate_backend(pid)")
        rows = session.query(
            sql.SQL(_TERMINATE).format(terminate=terminate),
            {
                "pid": before["pid"],
                "backend_start": before["backend_start"],
                "states": states,
                "after": before["idle_after_seconds"],
            },
        )
        if not rows:
            return {
                "terminated": False,
                "ended": False,
                "kept": "no longer idle past the threshold (busy again, or gone) at apply time",
            }
        # Before 14 pg_terminate_backend only signals: whether the session has ended is unknown.
        return {"terminated": True, "ended": bool(rows[0][0]) if waits else None}


def _terminate_action(
    session: IdleSession, limit: timedelta, target: PostgresTarget
) -> MaintenanceAction:
    kind = "idle in transaction" if session.state in IDLE_IN_TRANSACTION else "idle"
    threshold = human_duration(limit, exact=True)
    return MaintenanceAction(
        procedure=IdleConnections.name,
        target=target.name,
        object=f"pid {session.pid}",
        statement=(
            f"SELECT pg_terminate_backend({session.pid}) -- if still {kind} for more than "
            f"{threshold}"
        ),
        reason=f"{kind} for {_idle_text(session.idle_seconds)} > {threshold}",
        destructive=True,
        estimate_seconds=0.1,
        before={
            "pid": session.pid,
            "user": session.user,
            "application": session.application,
            "client": session.client,
            "database": session.database,
            "state": session.state,
            "idle_seconds": round(session.idle_seconds, 1),
            "idle_after_seconds": limit.total_seconds(),
            "backend_start": session.backend_start.isoformat(),
        },
    )
