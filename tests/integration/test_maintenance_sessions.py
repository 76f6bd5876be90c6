"""idle_connections on the PG15 service and the embedded PG18: idle sessions this test opened
are planned and ended, excluded ones kept, a session busy again after planning is left alone,
and planning alone (a dry run) ends nothing.

The procedure works on the target's database only, and every test's target is a database of
its own: sessions of other test runs on the shared PG15 service are never candidates.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from runbook.catalog.maintenance import MaintenanceAction, Outcome
from runbook.config import MaintenanceSettings, PostgresTarget
from runbook.config.maintenance import IdleConnectionSettings
from runbook.systems.postgres import IdleSession, connect
from tasks.maintenance.idle_connections import IdleConnections, IdleFacts
from tests.support.memory_ledger import MemoryLedger, apply, plan
from tests.support.pg import PgServer

IDLE = IdleConnections()
APP = "rb-test-idle"


@pytest.fixture(params=["pg15", "pg18"])
def server(request: pytest.FixtureRequest) -> PgServer:
    return request.getfixturevalue(request.param)


@pytest.fixture
def sessions() -> Iterator[Callable[..., psycopg.Connection]]:
    """open(dsn, autocommit=True, **params) -> a client session, closed after the test."""
    opened: list[psycopg.Connection] = []

    def open_session(dsn: str, autocommit: bool = True, **params: Any) -> psycopg.Connection:
        params.setdefault("application_name", APP)
        conn = psycopg.connect(dsn, autocommit=autocommit, **params)
        conn.execute("SELECT 1")  # with autocommit: idle; without: idle in transaction
        opened.append(conn)
        return conn

    yield open_session
    for conn in opened:
        conn.close()


@pytest.fixture
def other_role(server: PgServer) -> Iterator[str]:
    """A login role of this test's own, dropped afterwards."""
    name = f"rb_idle_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def settings(**idle: Any) -> MaintenanceSettings:
    return MaintenanceSettings(idle_connections=IdleConnectionSettings(**idle))


def target(dsn: str) -> PostgresTarget:
    return PostgresTarget(name="db", dsn=dsn)


def alive(admin_dsn: str, pids: list[int]) -> set[int]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
        ).fetchall()
    return {pid for (pid,) in rows}


def plan_until(
    dsn: str, config: MaintenanceSettings, pids: set[int], ledger: MemoryLedger
) -> list[MaintenanceAction]:
    """Plan until every session in `pids` is idle past the threshold (at most 20 s)."""
    deadline = time.monotonic() + 20
    while True:
        actions = plan(IDLE, target(dsn), config, ledger)
        planned = {a.before["pid"] for a in actions}
        if pids <= planned or time.monotonic() > deadline:
            return actions
        time.sleep(0.2)


def dsn_name(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]


def by_pid(actions: list[MaintenanceAction]) -> dict[Any, MaintenanceAction]:
    return {a.before["pid"]: a for a in actions}


def test_idle_sessions_planned_then_ended_and_excluded_ones_kept(
    server: PgServer, make_database, sessions, other_role: str
) -> None:
    dsn = make_database(server, seed=False)
    idle = [sessions(dsn) for _ in range(2)]
    kept = {
        "application": sessions(dsn, application_name="rb-keep-app"),
        "user": sessions(server.dsn(dsn_name(dsn), user=other_role)),
        "in transaction under its threshold": sessions(dsn, autocommit=False),
    }
    runbook_own = connect(dsn, autocommit=True)  # application "runbook", as a window's lock
    runbook_own.execute("SELECT 1")
    config = settings(
        idle_after="1s",
        idle_in_transaction_after="1h",
        exclude_applications=["rb-keep-app"],
        exclude_users=[other_role],
    )
    ledger = MemoryLedger()
    idle_pids = {conn.info.backend_pid for conn in idle}
    kept_pids = {conn.info.backend_pid for conn in kept.values()} | {runbook_own.info.backend_pid}
    try:
        actions = plan_until(dsn, config, idle_pids, ledger)

        # The plan: exactly our two idle sessions, each with its reason and before figures.
        assert set(by_pid(actions)) == idle_pids, [a.before for a in actions]
        for action in actions:
            assert action.procedure == "idle_connections" and action.destructive
            assert action.outcome is Outcome.PLANNED
            assert action.object == f"pid {action.before['pid']}"
            assert action.reason.startswith("idle for ") and action.reason.endswith(" > 1s")
            assert action.before["user"] == "postgres"
            assert action.before["application"] == APP
            assert action.before["state"] == "idle"
            assert action.before["database"] == dsn_name(dsn)
            assert action.before["client"] == ("127.0.0.1" if server.name == "pg15" else "local")
            assert action.before["idle_seconds"] >= 1  # rounded to 0.1 s
            assert "pg_terminate_backend" in action.statement

        # Without the exclusions, the excluded application and user would be planned too;
        # the in-transaction session is under its own threshold, Runbook's own always kept.
        unexcluded = plan(IDLE, target(dsn), settings(idle_after="1s"), ledger)
        assert set(by_pid(unexcluded)) == idle_pids | {
            kept["application"].info.backend_pid,
            kept["user"].info.backend_pid,
        }

        # Planning alone (what a dry run does) ended nothing.
        assert alive(server.admin_dsn, [*idle_pids, *kept_pids]) == idle_pids | kept_pids

        done = apply(IDLE, target(dsn), config, actions, ledger)
        assert [a.outcome for a in done] == [Outcome.DONE, Outcome.DONE]
        assert all(a.after == {"terminated": True, "ended": True} for a in done), done
        assert alive(server.admin_dsn, [*idle_pids, *kept_pids]) == kept_pids
        for conn in idle:
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        for why, conn in kept.items():
            assert conn.execute("SELECT 2").fetchone() == (2,), why
        assert runbook_own.execute("SELECT 3").fetchone() == (3,)
    finally:
        runbook_own.close()


def test_idle_in_transaction_over_its_own_threshold(
    server: PgServer, make_database, sessions
) -> None:
    dsn = make_database(server, seed=False)
    in_transaction = sessions(dsn, autocommit=False)
    plain = sessions(dsn)  # idle, but under the (long) idle threshold
    config = settings(idle_after="1h", idle_in_transaction_after="1s")
    ledger = MemoryLedger()
    pid = in_transaction.info.backend_pid
    actions = plan_until(dsn, config, {pid}, ledger)
    assert set(by_pid(actions)) == {pid}
    (action,) = actions
    assert action.before["state"] == "idle in transaction"
    assert action.reason.startswith("idle in transaction for ") and action.reason.endswith("> 1s")

    (done,) = apply(IDLE, target(dsn), config, actions, ledger)
    assert done.after == {"terminated": True, "ended": True}
    assert alive(server.admin_dsn, [pid, plain.info.backend_pid]) == {plain.info.backend_pid}


def test_a_session_busy_again_after_planning_is_not_killed(
    server: PgServer, make_database, sessions
) -> None:
    dsn = make_database(server, seed=False)
    busy, woke = sessions(dsn), sessions(dsn)
    config = settings(idle_after="2s")
    ledger = MemoryLedger()
    pids = [busy.info.backend_pid, woke.info.backend_pid]
    actions = plan_until(dsn, config, set(pids), ledger)
    assert set(by_pid(actions)) == set(pids)

    # `busy` runs a query through apply; `woke` ran one and is idle again, for less than 2 s.
    result: list[Any] = []
    worker = threading.Thread(
        target=lambda: result.append(busy.execute("SELECT pg_sleep(1.5), 'done'").fetchone())
    )
    worker.start()
    try:
        wait_for_state(server.admin_dsn, busy.info.backend_pid, "active")
        woke.execute("SELECT 1")
        done = apply(IDLE, target(dsn), config, actions, ledger)
    finally:
        worker.join(10)
    assert [a.after["terminated"] for a in done] == [False, False], done
    assert all("no longer idle" in a.after["kept"] for a in done)
    assert result == [("", "done")]
    assert alive(server.admin_dsn, pids) == set(pids)
    assert woke.execute("SELECT 4").fetchone() == (4,)


def wait_for_state(admin_dsn: str, pid: int, state: str) -> None:
    deadline = time.monotonic() + 10
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
            if row.fetchone() == (state,):
                return
            time.sleep(0.05)
    raise AssertionError(f"pid {pid} never became {state}")


def test_plan_is_pure_and_ignores_sessions_of_other_databases() -> None:
    """The plan decides from the facts and settings alone: thresholds per kind, exclusions,
    Runbook's own applications, and the target's database only."""

    def session(pid: int, idle: float, **fields: Any) -> IdleSession:
        values: dict[str, Any] = {
            "pid": pid,
            "user": "app",
            "application": "web",
            "client": "10.0.0.7",
            "database": "shop",
            "state": "idle",
            "idle_seconds": idle,
            "backend_start": datetime(2024, 6, 2, 1, 0, tzinfo=UTC),
            "last_query": "SELECT secret",
        }
        return IdleSession(**{**values, **fields})

    facts = IdleFacts(
        "shop",
        [
            session(1, 4980),  # 1h23m: planned
            session(2, 3000),  # 50m, under 1h
            session(3, 9000, database="other"),  # another database's
            session(4, 9000, user="replicator"),  # excluded user
            session(5, 9000, application="pgbouncer"),  # excluded application
            session(6, 9000, application="runbook-lock"),  # Runbook's own
            session(7, 2000, state="idle in transaction"),  # 33m > 30m: planned
            session(8, 1000, state="idle in transaction (aborted)"),  # 16m < 30m
        ],
    )
    config = settings(exclude_users=["replicator"], exclude_applications=["pgbouncer"])
    actions = IDLE.plan(facts, config, target("postgresql://localhost/shop"))
    assert [(a.object, a.reason) for a in actions] == [
        ("pid 1", "idle for 1h23m > 1h"),
        ("pid 7", "idle in transaction for 33m > 30m"),
    ]
    assert actions[0].before == {
        "pid": 1,
        "user": "app",
        "application": "web",
        "client": "10.0.0.7",
        "database": "shop",
        "state": "idle",
        "idle_seconds": 4980,
        "idle_after_seconds": 3600.0,
        "backend_start": "2024-06-02T01:00:00+00:00",
    }
    assert all("secret" not in str(a.model_dump()) for a in actions)
    assert IDLE.plan(facts, config, target("postgresql://localhost/shop")) == actions
