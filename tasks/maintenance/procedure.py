"""What every maintenance procedure is: measure (read-only facts), plan (pure: facts and
settings -> actions with reasons and estimates), apply (one action, under the session's
lock_timeout and retries, returning its `after` figures).

A dry run is chosen once, at the top of the flow: it plans and publishes, and never calls
apply. Procedures have no dry-run branches.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import psycopg
from psycopg import sql

from runbook.catalog.maintenance import Figure, MaintenanceAction, MaintenanceLedger
from runbook.config import MaintenanceSettings, PostgresTarget
from runbook.systems.postgres import connect

LOCK_NOT_AVAILABLE = "55P03"


class LockNotGranted(Exception):
    """The statement could not get its lock within lock_timeout, retries included: no client
    waited behind it longer than that."""


@dataclass
class MaintenanceSession:
    """An autocommit connection to one target (VACUUM and REINDEX CONCURRENTLY cannot run in a
    transaction) that runs each statement under lock_timeout and statement_timeout and retries
    one that did not get its lock, with backoff."""

    conn: psycopg.Connection
    settings: MaintenanceSettings
    server_major: int

    @classmethod
    @contextmanager
    def open(
        cls, target: PostgresTarget, settings: MaintenanceSettings
    ) -> Iterator[MaintenanceSession]:
        with connect(
            target.dsn.get_secret_value(),
            connect_timeout=target.connect_timeout.total_seconds(),
            autocommit=True,
        ) as conn:
            conn.execute(
                sql.SQL("SET statement_timeout = {}").format(
                    sql.Literal(f"{int(settings.statement_timeout.total_seconds() * 1000)}ms")
                )
            )
            conn.execute(
                sql.SQL("SET lock_timeout = {}").format(
                    sql.Literal(f"{int(settings.lock_timeout.total_seconds() * 1000)}ms")
                )
            )
            yield cls(conn, settings, conn.info.server_version // 10000)

    @property
    def usable(self) -> bool:
        """Open, not broken and no statement left running (a stop abandons one)."""
        conn = self.conn
        return (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status != psycopg.pq.TransactionStatus.ACTIVE
        )

    def execute(self, statement: str | sql.Composable, params: Any = None) -> psycopg.Cursor:
        """One statement. A stop that lands while it runs (Prefect's TerminationSignal on a
        cancel, which psycopg does not treat as an interruption as it does Ctrl-C) cancels the
        statement on the server and closes the connection before it goes on up: otherwise the
        statement keeps running, and the next statement a `finally` sends fails with "another
        command is already in progress", an error that would hide the stop itself."""
        try:
            return self.conn.execute(statement, params)
        except Exception:
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                self.conn.cancel_safe(timeout=2)
            with contextlib.suppress(Exception):
                self.conn.close()
            raise

    def query(self, statement: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
        """A read (facts); no retry needed."""
        return self.execute(statement, params).fetchall()

    def run(self, statement: str | sql.Composable, params: Any = None) -> int:
        """A change, retried while it cannot get its lock; returns the attempts it took."""
        delay = self.settings.lock_timeout.total_seconds()
        for attempt in range(1, self.settings.lock_retries + 2):
            try:
                self.execute(statement, params)
                return attempt
            except psycopg.errors.LockNotAvailable:
                if attempt > self.settings.lock_retries:
                    raise LockNotGranted(
                        f"no lock within {self.settings.lock_timeout.total_seconds():g}s after "
                        f"{attempt} attempts (clients hold it)"
                    ) from None
                time.sleep(min(delay * 2 ** (attempt - 1), 30))
        raise AssertionError("unreachable")


@dataclass
class MeasureContext:
    """What measure() reads through: the session of the target's kind (a MaintenanceSession
    for PostgreSQL, tasks/maintenance/targets.py's RedisSession, HostSession, FilesSession,
    HttpSession, PrometheusSession),
    the target, the settings and the ledger."""

    session: Any
    target: Any  # tasks/maintenance/targets.py's MaintenanceTarget
    settings: MaintenanceSettings
    ledger: MaintenanceLedger


class Procedure(Protocol):
    """A maintenance procedure (tasks/maintenance/registry.py lists them).

    `kinds` says which targets it applies to (tasks/maintenance/targets.py: postgres, redis,
    files, http, prometheus, or host for the window's own chores); a procedure without it is
    PostgreSQL's. The window plans and applies it on each chosen target of those kinds,
    through that target's session."""

    name: ClassVar[str]
    destructive: ClassVar[bool]  # skipped when the pre-maintenance backup failed
    kinds: ClassVar[tuple[str, ...]]

    def measure(self, context: MeasureContext) -> Any:
        """Read-only facts for plan(): from the server (pg_stat_*, pgstattuple, ...) and from
        the ledger (an index's best size per row after its last rebuild, the last query
        baseline, how long the same action took before)."""

    def plan(
        self, facts: Any, settings: MaintenanceSettings, target: Any
    ) -> list[MaintenanceAction]:
        """Pure: the actions the facts call for, each with its reason, estimate and `before`."""

    def apply(self, session: Any, action: MaintenanceAction) -> dict[str, Figure]:
        """Carry out one action (under the session's lock_timeout and retries); return its
        `after` figures. Raises on failure (LockNotGranted when clients hold the lock)."""
