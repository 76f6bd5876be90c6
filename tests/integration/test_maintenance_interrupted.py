"""Maintenance procedures where things go wrong or differ, on the PG15 service and the embedded
PG18: a worker killed mid-`REINDEX CONCURRENTLY` (the next window drops what it left), a build
running right now (left alone), `VACUUM FULL` behind a client's lock (retries; the clients
wait at most lock_timeout), and a database without pgstattuple (pg_stat figures, said so; the
reindex baseline of pg_index_watch through the ledger)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from runbook.catalog.maintenance import MaintenanceAction, MaintenanceLedger, Outcome
from runbook.config import MaintenanceSettings, PostgresTarget
from tasks.maintenance.procedure import MaintenanceSession, MeasureContext
from tasks.maintenance.reindex import InvalidIndexes, Reindex
from tasks.maintenance.relations import GENTLE_VACUUM, session_settings
from tasks.maintenance.vacuum import Vacuum
from tests.support.pg import PgServer

LOCK_TIMEOUT = 1.0
ROOT = Path(__file__).resolve().parents[2]


class StandInLedger(MaintenanceLedger):
    def __init__(self, actions: list[MaintenanceAction] | None = None) -> None:
        self.actions = list(actions or [])

    def history(
        self, target: str, procedure: str, object: str | None = None, limit: int = 20
    ) -> list[MaintenanceAction]:
        found = [
            a
            for a in self.actions
            if a.target == target
            and a.procedure == procedure
            and (object is None or a.object == object)
            and a.outcome == Outcome.DONE
        ]
        found.sort(key=lambda a: a.finished_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return found[:limit]


@pytest.fixture(params=["pg15", "pg18"])
def server(request: pytest.FixtureRequest) -> PgServer:
    return request.getfixturevalue(request.param)


def _plan(procedure, dsn: str, settings: MaintenanceSettings, ledger=None):
    target = PostgresTarget(name="app", dsn=dsn)
    with MaintenanceSession.open(target, settings) as session:
        context = MeasureContext(session, target, settings, ledger or StandInLedger())
        facts = procedure.measure(context)
        return facts, procedure.plan(facts, settings, target)


def _apply(procedure, dsn: str, settings: MaintenanceSettings, actions):
    target = PostgresTarget(name="app", dsn=dsn)
    with MaintenanceSession.open(target, settings) as session:
        return [procedure.apply(session, action) for action in actions]


def _indexes(conn: psycopg.Connection, table: str) -> dict[str, bool]:
    rows = conn.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = %s::regclass",
        (table,),
    )
    return dict(rows.fetchall())


# The worker: applies a reindex action as a window would. client_connection_check_interval
# lets its backend notice the worker's death mid-statement instead of finishing the build.
WORKER = """
import sys
from runbook.catalog.maintenance import MaintenanceAction
from runbook.config import MaintenanceSettings, PostgresTarget
from tasks.maintenance.procedure import MaintenanceSession
from tasks.maintenance.reindex import Reindex

action = MaintenanceAction(
    procedure="reindex", target="app", object="public.k_h", statement="", reason="",
    before={"schema": "public", "table": "k", "index": "k_h"},
)
target = PostgresTarget(name="app", dsn=sys.argv[1])
with MaintenanceSession.open(target, MaintenanceSettings()) as session:
    session.conn.execute("SET maintenance_work_mem = '1MB'")  # a slower, spilling build
    Reindex().apply(session, action)
print("finished")
"""


def test_a_worker_killed_mid_reindex_leaves_an_invalid_index_the_next_window_drops(
    server: PgServer, make_database
) -> None:
    dsn = make_database(server, seed=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE k AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, 1000000) i"
        )
        conn.execute("CREATE INDEX k_h ON k (h)")
        dbname = conn.info.dbname
        worker_dsn = make_conninfo(dsn, options="-c client_connection_check_interval=100")
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, worker_dsn],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while not _indexes(conn, "k").keys() - {"k_h"}:
                assert worker.poll() is None, worker.communicate()
                assert time.monotonic() < deadline, "no _ccnew index appeared"
                time.sleep(0.02)
            assert worker.poll() is None, "the REINDEX finished before the kill"
            phase = conn.execute(
                "SELECT phase FROM pg_stat_progress_create_index WHERE datname = %s", (dbname,)
            ).fetchone()
            os.kill(worker.pid, signal.SIGKILL)
        finally:
            worker.wait(30)
        assert worker.returncode == -signal.SIGKILL
        assert phase is not None  # it was building when killed
        deadline = time.monotonic() + 30
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'REINDEX%%'",
            (dbname,),
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the killed worker's backend runs on"
            time.sleep(0.05)
        assert _indexes(conn, "k") == {"k_h": True, "k_h_ccnew": False}

    settings = MaintenanceSettings(lock_timeout=timedelta(seconds=LOCK_TIMEOUT))
    facts, actions = _plan(InvalidIndexes(), dsn, settings)
    (action,) = actions
    assert action.object == "public.k_h_ccnew"
    assert "interrupted REINDEX CONCURRENTLY of k_h" in action.reason
    assert action.statement == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."k_h_ccnew"'
    (after,) = _apply(InvalidIndexes(), dsn, settings, actions)
    assert after == {"index_bytes": 0, "exists": False, "attempts": 1}
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert _indexes(conn, "k") == {"k_h": True}
        assert conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone() == (0,)
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute("EXPLAIN SELECT id FROM k WHERE h = md5('42')").fetchall()
        assert "k_h" in str(plan)
    assert _plan(InvalidIndexes(), dsn, settings)[1] == []


def test_a_build_running_now_is_not_a_leftover(server: PgServer, make_database) -> None:
    dsn = make_database(server, seed=False)
    settings = MaintenanceSettings(lock_timeout=timedelta(seconds=LOCK_TIMEOUT))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE p AS SELECT i AS id, 'n' || i AS note FROM generate_series(1, 10000) i"
        )
    holder = psycopg.connect(dsn)
    holder.execute("UPDATE p SET note = note WHERE id = 1")  # a writer's open transaction
    failure: list[BaseException] = []

    def build() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE INDEX CONCURRENTLY p_note ON p (note)")
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=build)
    thread.start()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 10
            while _indexes(conn, "p") != {"p_note": False}:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        facts, actions = _plan(InvalidIndexes(), dsn, settings)
        (found,) = facts.indexes
        assert found.name == "p_note" and found.building_pid is not None
        assert actions == []
    finally:
        holder.commit()
        holder.close()
        thread.join(30)
    assert not failure
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert _indexes(conn, "p") == {"p_note": True}


def test_vacuum_full_only_for_listed_tables_under_the_limit_and_it_waits_at_most_lock_timeout(
    server: PgServer, make_database
) -> None:
    dsn = make_database(server, seed=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgstattuple")
        for table, rows in (("full_listed", 100_000), ("full_too_big", 300_000)):
            conn.execute(
                f"CREATE TABLE {table} (id bigint PRIMARY KEY, grp int, payload text)"
                " WITH (autovacuum_enabled = false)"
            )
            conn.execute(
                f"INSERT INTO {table} SELECT i, i % 100, md5(i::text)"
                f" FROM generate_series(1, {rows}) i"
            )
            conn.execute(f"DELETE FROM {table} WHERE id % 10 <> 0")
        conn.execute("SELECT pg_stat_force_next_flush()")
    settings = MaintenanceSettings(
        lock_timeout=timedelta(seconds=LOCK_TIMEOUT),
        vacuum={
            "full_tables": ["public.full_listed", "public.full_too_big"],
            "full_max_bytes": 12 << 20,
        },
    )
    _, actions = _plan(Vacuum(), dsn, settings)
    by_table = {a.object: a for a in actions}
    full, plain = by_table["public.full_listed"], by_table["public.full_too_big"]
    assert full.statement == 'VACUUM (FULL, ANALYZE) "public"."full_listed"'
    assert full.destructive and full.before["mode"] == "full"
    assert "listed in vacuum.full_tables" in full.reason
    assert plain.statement == 'VACUUM (ANALYZE) "public"."full_too_big"'
    assert not plain.destructive and "> 12.0 MiB: plain VACUUM" in plain.reason

    # A client's open transaction holds the table for 2.5 lock_timeouts; another client reads.
    holder = psycopg.connect(dsn)
    holder.execute("UPDATE full_listed SET grp = grp WHERE id = 10")
    stop, latencies = threading.Event(), []

    def read() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                started = time.perf_counter()
                conn.execute("SELECT payload FROM full_listed WHERE id = 500").fetchall()
                latencies.append(time.perf_counter() - started)
                time.sleep(0.01)

    reader = threading.Thread(target=read)
    reader.start()
    release = threading.Timer(2.5 * LOCK_TIMEOUT, lambda: (holder.commit(), holder.close()))
    release.start()
    try:
        (after,) = _apply(Vacuum(), dsn, settings, [full])
    finally:
        release.join()
        stop.set()
        reader.join(10)
    assert after["attempts"] >= 2  # gave up behind the client's lock, retried
    assert max(latencies) < LOCK_TIMEOUT + 1, max(latencies)
    assert after["table_bytes"] < 0.25 * full.before["table_bytes"]
    assert after["live_tuples"] == 10_000 and after["dead_tuples"] < 0.05 * 10_000


def test_without_pgstattuple_pg_stat_figures_and_the_baseline_of_past_rebuilds(
    server: PgServer, make_database
) -> None:
    dsn = make_database(server, seed=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE nx (id bigint PRIMARY KEY, payload text)"
            " WITH (autovacuum_enabled = false)"
        )
        conn.execute("INSERT INTO nx SELECT i, md5(i::text) FROM generate_series(1, 200000) i")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("VACUUM ANALYZE nx")
        fresh_per_row = conn.execute(
            "SELECT pg_relation_size('nx_pkey') / 200000.0::float8"
        ).fetchone()[0]
        conn.execute("DELETE FROM nx WHERE id % 5 <> 0")
        conn.execute("SELECT pg_stat_force_next_flush()")
    settings = MaintenanceSettings(
        lock_timeout=timedelta(seconds=LOCK_TIMEOUT), reindex={"min_bytes": 256 << 10}
    )
    facts, (vacuum,) = _plan(Vacuum(), dsn, settings)
    assert not facts.pgstattuple.usable
    assert "dead tuples 80.0 %" in vacuum.reason and "pg_stat)" in vacuum.reason
    assert "pgstattuple is not installed in this database" in vacuum.reason
    assert vacuum.before["dead_source"] == "pg_stat"

    # No pgstatindex and no rebuild in the ledger: the index cannot be judged.
    facts, actions = _plan(Reindex(), dsn, settings)
    (index,) = facts.indexes
    assert index.pages is None and index.baseline is None and actions == []

    # A past window's rebuild recorded the bytes per row: 5x that now (80 % deleted).
    past = MaintenanceAction(
        procedure="reindex",
        target="app",
        object="public.nx_pkey",
        statement="",
        reason="",
        outcome=Outcome.DONE,
        finished_at=datetime.now(UTC) - timedelta(days=7),
        duration=3.0,
        before={"table_bytes": 10_000_000, "index_bytes": 5_000_000},
        after={"bytes_per_row": float(fresh_per_row)},
    )
    ledger = StandInLedger([past])
    facts, (reindex,) = _plan(Reindex(), dsn, settings, ledger)
    assert reindex.before["method"] == "bytes per row"
    assert reindex.before["bloat_ratio"] == pytest.approx(5, rel=0.05)
    work = reindex.before["table_bytes"] + reindex.before["index_bytes"]
    assert reindex.estimate_seconds == pytest.approx(3.0 * work / 15_000_000, abs=0.01)

    (vacuumed,) = _apply(Vacuum(), dsn, settings, [vacuum])
    assert vacuumed["dead_source"] == "pg_stat" and vacuumed["dead_tuples"] < 2_000
    (rebuilt,) = _apply(Reindex(), dsn, settings, [reindex])
    assert rebuilt["bytes_per_row"] == pytest.approx(fresh_per_row, rel=0.15)
    done = reindex.model_copy(
        update={
            "outcome": Outcome.DONE,
            "after": rebuilt,
            "duration": 0.5,
            "finished_at": datetime.now(UTC),
        }
    )
    ledger.actions.append(done)
    facts, actions = _plan(Reindex(), dsn, settings, ledger)
    assert actions == []  # measured against its own rebuild: no bloat left
    assert facts.indexes[0].baseline.bytes_per_row == rebuilt["bytes_per_row"]


def test_dead_tuples_pruned_by_readers_still_get_their_vacuum(
    server: PgServer, make_database
) -> None:
    dsn = make_database(server, seed=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgstattuple")
        conn.execute(
            "CREATE TABLE pr (id bigint PRIMARY KEY, n int, payload text)"
            " WITH (autovacuum_enabled = false)"
        )
        conn.execute("INSERT INTO pr SELECT i, 0, md5(i::text) FROM generate_series(1, 100000) i")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("VACUUM ANALYZE pr")
        conn.execute("UPDATE pr SET n = 1")  # no room on the pages: every new version elsewhere
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT count(*) FROM pr")  # reading full pages prunes them
        approx = conn.execute("SELECT dead_tuple_count FROM pgstattuple_approx('pr')").fetchone()
        assert approx[0] < 10_000  # 100,000 dead tuples became dead line pointers
    settings = MaintenanceSettings(lock_timeout=timedelta(seconds=LOCK_TIMEOUT))
    _, (action,) = _plan(Vacuum(), dsn, settings)
    assert action.statement == 'VACUUM (ANALYZE) "public"."pr"'
    assert action.before["dead_source"] == "pg_stat" and action.before["dead_tuples"] >= 90_000
    assert "pruned to line pointers that VACUUM still has to clear" in action.reason
    (after,) = _apply(Vacuum(), dsn, settings, [action])
    assert after["dead_tuples"] < 1_000
    with psycopg.connect(dsn, autocommit=True) as conn:
        visible = conn.execute("SELECT scanned_percent FROM pgstattuple_approx('pr')").fetchone()
        assert visible[0] < 5  # VACUUM cleared the line pointers: pages all-visible again


def test_a_role_without_superuser_still_vacuums_on_pg_stat_figures(
    pg18: PgServer, make_database
) -> None:
    """No pg_stat_scan_tables (pgstattuple), no wal_compression (superuser): the table's owner
    still gets its VACUUM, paced, and the reason says which figures it stands on."""
    dsn = make_database(pg18, seed=False)
    dbname = conninfo_to_dict(dsn)["dbname"]
    role = f"rbmaint_{dbname[-10:]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgstattuple")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    try:
        owner_dsn = pg18.dsn(dbname, user=role)
        with psycopg.connect(owner_dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE owned (id bigint PRIMARY KEY, payload text)"
                " WITH (autovacuum_enabled = false)"
            )
            conn.execute(
                "INSERT INTO owned SELECT i, md5(i::text) FROM generate_series(1, 50000) i"
            )
            conn.execute("DELETE FROM owned WHERE id % 2 = 0")
            conn.execute("SELECT pg_stat_force_next_flush()")
        settings = MaintenanceSettings(lock_timeout=timedelta(seconds=LOCK_TIMEOUT))
        facts, (action,) = _plan(Vacuum(), owner_dsn, settings)
        assert not facts.pgstattuple.usable
        assert "this role may not run pgstattuple (GRANT pg_stat_scan_tables)" in action.reason
        target = PostgresTarget(name="app", dsn=owner_dsn)
        with MaintenanceSession.open(target, settings) as session:
            with session_settings(session, GENTLE_VACUUM) as applied:
                assert "wal_compression" not in applied  # refused: left as it was
                assert applied["vacuum_cost_delay"] == "2ms"
            after = Vacuum().apply(session, action)
        assert after["dead_tuples"] == 0 and after["live_tuples"] == 25_000
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
