"""The PostgreSQL maintenance procedures (invalid_indexes, vacuum, analyze_stale, reindex) on a
bloated database, on the PG15 service and the embedded PG18.

One database per server, built once for the module: tables a million rows strong with most
rows deleted or updated (autovacuum off), bloated indexes, and tables under every threshold.
The tests run in order on it: the plan names exactly what passes the thresholds (checked
against pgstattuple's exact counts and fresh builds of each index), a dry run (measure and
plan) changes nothing, and applying the plan in the window's order under a client load treats
what it planned, leaves the rest as it was and never makes the client wait.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from runbook.catalog.maintenance import MaintenanceAction, MaintenanceLedger, Outcome
from runbook.config import MaintenanceSettings, PostgresTarget
from tasks.maintenance.analyze_stale import AnalyzeStale
from tasks.maintenance.procedure import MaintenanceSession, MeasureContext
from tasks.maintenance.reindex import InvalidIndexes, Reindex
from tasks.maintenance.vacuum import Vacuum
from tests.support.pg import PgServer

LOCK_TIMEOUT = 1.0  # seconds; the client's worst latency must stay under this + 1 s
ROWS = 1_000_000

# What the fixture makes pass the default thresholds, per procedure.
EXPECTED = {
    "invalid_indexes": {"public.quiet_code_key"},
    "vacuum": {"public.bloat_deleted", "public.bloat_updated", "public.small_bloated"},
    "analyze_stale": {
        "public.bloat_deleted",
        "public.bloat_updated",
        "public.small_bloated",
        "public.stale_stats",
        "public.fresh_load",
    },
    "reindex": {
        "public.bloat_deleted_pkey",
        "public.bloat_updated_pkey",
        "public.index_churn_pkey",
        "public.index_churn_hash",
    },
}
UNTOUCHED_TABLES = {"public.healthy_big", "public.quiet"}
ORDER = (InvalidIndexes(), Vacuum(), AnalyzeStale(), Reindex())  # the registry's window order


class StandInLedger(MaintenanceLedger):
    """The ledger's history() over a list of done actions (the real one reads the catalog)."""

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


def _flush(conn: psycopg.Connection) -> None:
    """Make this backend's pending statistics visible now (PG15+), before any VACUUM reads
    them: otherwise a later flush can land after the VACUUM's own report."""
    conn.execute("SELECT pg_stat_force_next_flush()")


def _fill(conn: psycopg.Connection, table: str, rows: int, extra: str = "") -> None:
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id bigint PRIMARY KEY, grp int NOT NULL, payload text NOT NULL)"
            " WITH (autovacuum_enabled = false)"
        ).format(sql.Identifier(table))
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {} SELECT i, i %% 1000, md5(i::text) FROM generate_series(1, %s) i"
        ).format(sql.Identifier(table)),
        (rows,),
    )
    if extra:
        conn.execute(extra)
    _flush(conn)
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))


def build_bloated(dsn: str) -> float:
    """The fixture database; returns the hash index's bytes per row right after its build
    (the baseline a past window's REINDEX would have recorded)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgstattuple")
        # Over thresholds: 80 % deleted; every row updated once (50 % dead, non-HOT).
        _fill(conn, "bloat_deleted", ROWS)
        _fill(conn, "bloat_updated", ROWS)
        # Index bloat without pending dead rows: 80 % deleted, then vacuumed.
        _fill(
            conn,
            "index_churn",
            ROWS,
            "CREATE INDEX index_churn_hash ON index_churn USING hash (id)",
        )
        hash_baseline = conn.execute(
            "SELECT pg_relation_size('index_churn_hash')::float8 / %s", (ROWS,)
        ).fetchone()[0]
        # Under every threshold: 5 % of rows updated, an index of 13 MB close to its fresh size.
        _fill(conn, "healthy_big", 600_000)
        # Small: 18,000 dead tuples (90 %) pass min_dead_tuples; its 0.4 MB index is under
        # the size floor however bloated.
        _fill(conn, "small_bloated", 20_000)
        # 6,000 dead tuples (23 %) are under min_dead_tuples, 30 % changed rows are not.
        _fill(conn, "stale_stats", 20_000)
        _fill(conn, "quiet", 5_000)
        conn.execute("ALTER TABLE quiet ADD COLUMN code int")
        conn.execute("UPDATE quiet SET code = id % 10")
        _flush(conn)
        conn.execute("VACUUM ANALYZE quiet")
        conn.execute(
            "CREATE TABLE fresh_load (id bigint PRIMARY KEY, note text)"
            " WITH (autovacuum_enabled = false)"
        )
        conn.execute("INSERT INTO fresh_load SELECT i, 'n' || i FROM generate_series(1, 10000) i")
        _flush(conn)
        conn.execute("VACUUM fresh_load")  # vacuumed, never analyzed
        conn.execute("DELETE FROM bloat_deleted WHERE id % 5 <> 0")
        conn.execute("UPDATE bloat_updated SET payload = payload || 'x'")
        conn.execute("DELETE FROM index_churn WHERE id % 5 <> 0")
        conn.execute("UPDATE healthy_big SET payload = payload || 'x' WHERE id % 20 = 0")
        conn.execute("DELETE FROM small_bloated WHERE id % 10 <> 0")
        conn.execute("UPDATE stale_stats SET payload = payload || 'x' WHERE id % 10 < 3")
        _flush(conn)
        conn.execute("VACUUM ANALYZE index_churn")
        # A failed CREATE UNIQUE INDEX CONCURRENTLY (duplicate codes) leaves an invalid index.
        try:
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY quiet_code_key ON quiet (code)")
        except psycopg.errors.UniqueViolation:
            pass
        else:
            raise AssertionError("the unique build over duplicate codes succeeded")
        _flush(conn)
    return hash_baseline


@dataclass
class Bloated:
    server: PgServer
    dsn: str
    target: PostgresTarget
    settings: MaintenanceSettings
    ledger: StandInLedger
    plans: dict[str, list[MaintenanceAction]] = field(default_factory=dict)
    applied: dict[str, list[tuple[MaintenanceAction, dict[str, Any]]]] = field(default_factory=dict)


@pytest.fixture(scope="module", params=["pg15", "pg18"])
def bloated(request: pytest.FixtureRequest) -> Iterator[Bloated]:
    server: PgServer = request.getfixturevalue(request.param)
    name = server.create_database(prefix="rbmaint")
    try:
        dsn = server.dsn(name)
        hash_baseline = build_bloated(dsn)
        target = PostgresTarget(name="app", dsn=dsn)
        settings = MaintenanceSettings(lock_timeout=timedelta(seconds=LOCK_TIMEOUT))
        # A past window rebuilt the hash index (no pgstatindex for hash: this is its baseline).
        finished = datetime.now(UTC) - timedelta(days=7)
        past = MaintenanceAction(
            procedure="reindex",
            target="app",
            object="public.index_churn_hash",
            statement="",
            reason="",
            outcome=Outcome.DONE,
            finished_at=finished,
            duration=2.0,
            before={"table_bytes": 60_000_000, "index_bytes": 40_000_000},
            after={"bytes_per_row": hash_baseline},
        )
        yield Bloated(server, dsn, target, settings, StandInLedger([past]))
    finally:
        server.drop_database(name)


def _measure_and_plan(bloated: Bloated) -> dict[str, list[MaintenanceAction]]:
    plans = {}
    with MaintenanceSession.open(bloated.target, bloated.settings) as session:
        context = MeasureContext(session, bloated.target, bloated.settings, bloated.ledger)
        for procedure in ORDER:
            facts = procedure.measure(context)
            plans[procedure.name] = procedure.plan(facts, bloated.settings, bloated.target)
    return plans


_TABLE_COUNTERS = """
SELECT schemaname || '.' || relname, n_live_tup, n_dead_tup, n_mod_since_analyze,
       n_tup_ins, n_tup_upd, n_tup_del, vacuum_count, autovacuum_count, analyze_count,
       autoanalyze_count, last_vacuum, last_analyze
FROM pg_stat_user_tables ORDER BY 1
"""
_RELATIONS = """
SELECT n.nspname || '.' || c.relname, c.relkind, c.relfilenode, pg_relation_size(c.oid),
       coalesce(i.indisvalid, true)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index i ON i.indexrelid = c.oid
WHERE n.nspname = 'public' ORDER BY 1
"""


def snapshot(dsn: str) -> dict[str, Any]:
    """Statistics counters, sizes, files and validity of every relation of the database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = {row[0]: row[1:] for row in conn.execute(_TABLE_COUNTERS)}
        relations = {row[0]: row[1:] for row in conn.execute(_RELATIONS)}
    return {"tables": tables, "relations": relations}


def exact_dead(conn: psycopg.Connection, table: str) -> tuple[int, int]:
    """(live, dead) tuples counted by pgstattuple: every page read."""
    return conn.execute(
        "SELECT tuple_count, dead_tuple_count FROM pgstattuple(%s::regclass)", (table,)
    ).fetchone()


def fresh_size(conn: psycopg.Connection, index: str) -> int:
    """Bytes of a fresh build of the same index definition on the same table."""
    definition = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (index,)).fetchone()[0]
    copy = "fresh_copy_of_index"
    statement = definition.replace("UNIQUE INDEX", "INDEX", 1).split(" ON ", 1)[1]
    conn.execute(f"CREATE INDEX {copy} ON {statement}")
    try:
        return conn.execute("SELECT pg_relation_size(%s::regclass)", (copy,)).fetchone()[0]
    finally:
        conn.execute(f"DROP INDEX {copy}")


def test_plan_names_exactly_what_passes_the_thresholds(bloated: Bloated) -> None:
    bloated.plans = _measure_and_plan(bloated)
    named = {name: {a.object for a in actions} for name, actions in bloated.plans.items()}
    assert named == EXPECTED

    # Independent truths: pgstattuple's exact counts, and a fresh build of every index.
    with psycopg.connect(bloated.dsn, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT relname FROM pg_stat_user_tables")]
        over = set()
        for table in tables:
            live, dead = exact_dead(conn, table)
            if dead >= 10_000 and 100 * dead / (live + dead) >= 20:
                over.add(f"public.{table}")
        assert over == EXPECTED["vacuum"]
        indexes = conn.execute(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indisvalid AND c.relnamespace = 'public'::regnamespace"
        ).fetchall()
        bloated_indexes = set()
        for index, size in indexes:
            if size >= 10 << 20 and size / fresh_size(conn, index) >= 1.5:
                bloated_indexes.add(f"public.{index}")
        assert bloated_indexes == EXPECTED["reindex"]

    vacuum = bloated.plans["vacuum"]
    assert [a.object for a in vacuum] == [  # worst dead-tuple ratio first
        "public.small_bloated",
        "public.bloat_deleted",
        "public.bloat_updated",
    ]
    by_object = {a.object: a for a in vacuum}
    deleted = by_object["public.bloat_deleted"]
    assert "dead tuples 80.0 %" in deleted.reason and "pgstattuple_approx" in deleted.reason
    assert deleted.statement == 'VACUUM (ANALYZE) "public"."bloat_deleted"'
    assert deleted.before["dead_tuples"] == 800_000 and deleted.before["mode"] == "plain"
    assert "dead tuples 50.0 %" in by_object["public.bloat_updated"].reason
    assert not any(a.destructive for a in vacuum)
    assert all(a.estimate_seconds > 0 for a in vacuum)

    analyze = {a.object: a for a in bloated.plans["analyze_stale"]}
    assert "30.0 % of rows changed" in analyze["public.stale_stats"].reason
    assert "never analyzed" in analyze["public.fresh_load"].reason
    assert "also in the vacuum plan" in analyze["public.bloat_deleted"].reason
    assert "also in the vacuum plan" not in analyze["public.stale_stats"].reason

    reindex = {a.object: a for a in bloated.plans["reindex"]}
    assert reindex["public.index_churn_pkey"].before["method"] == "pgstatindex"
    assert "18 % full" in reindex["public.index_churn_pkey"].reason
    assert "entries for dead rows" in reindex["public.bloat_deleted_pkey"].reason
    hashed = reindex["public.index_churn_hash"]
    assert hashed.before["method"] == "bytes per row"
    assert "after its last rebuild" in hashed.reason
    for action in reindex.values():
        assert action.before["bloat_ratio"] >= 1.5
        assert action.statement.startswith("REINDEX INDEX CONCURRENTLY ")

    (invalid,) = bloated.plans["invalid_indexes"]
    assert invalid.statement == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."quiet_code_key"'
    assert "failed or interrupted CREATE INDEX CONCURRENTLY" in invalid.reason


def test_dry_run_changes_nothing(bloated: Bloated) -> None:
    before = snapshot(bloated.dsn)
    plans = _measure_and_plan(bloated)  # a dry run: measure and plan, never apply
    after = snapshot(bloated.dsn)
    assert after == before
    assert {n: len(a) for n, a in plans.items()} == {n: len(e) for n, e in EXPECTED.items()}


class ClientLoad(threading.Thread):
    """Point selects and updates on the treated tables, back to back, each timed."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        rng = random.Random(7)

        def live_deleted() -> tuple[int]:
            return (5 * rng.randint(1, ROWS // 5),)  # bloat_deleted keeps every fifth row

        def any_row() -> tuple[int]:
            return (rng.randint(1, ROWS),)

        statements: list[tuple[str, Callable[[], tuple[int, ...]]]] = [
            ("SELECT payload FROM bloat_deleted WHERE id = %s", live_deleted),
            ("UPDATE bloat_deleted SET grp = grp + 1 WHERE id = %s", live_deleted),
            ("SELECT payload FROM bloat_updated WHERE id = %s", any_row),
            ("UPDATE bloat_updated SET grp = grp + 1 WHERE id = %s", any_row),
            (
                "SELECT count(*) FROM index_churn WHERE id BETWEEN %s AND %s + 500",
                lambda: any_row() * 2,
            ),
            (
                "SELECT payload FROM small_bloated WHERE id = %s",
                lambda: (10 * rng.randint(1, 2000),),
            ),
        ]
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    query, params = rng.choice(statements)
                    started = time.perf_counter()
                    cursor = conn.execute(query, params())
                    if cursor.description is not None:
                        cursor.fetchall()
                    self.latencies.append(time.perf_counter() - started)
                    time.sleep(0.002)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)


@dataclass
class LockHolder:
    """A client that holds a lock on a table for a while (its own choice): maintenance must
    give up and retry, never make the other clients wait."""

    dsn: str
    statement: str
    release_when: Callable[[psycopg.Connection], bool]
    thread: threading.Thread | None = None
    holding: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._hold, daemon=True)
        self.thread.start()
        assert self.holding.wait(10)

    def _hold(self) -> None:
        with psycopg.connect(self.dsn) as conn, psycopg.connect(self.dsn, autocommit=True) as look:
            conn.execute(self.statement)
            self.holding.set()
            deadline = time.monotonic() + 20
            while not self.release_when(look) and time.monotonic() < deadline:
                time.sleep(0.05)
            conn.commit()

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(30)


def _after_seconds(seconds: float) -> Callable[[psycopg.Connection], bool]:
    until = time.monotonic() + seconds
    return lambda _conn: time.monotonic() >= until


def _after_retry_of_reindex(table: str) -> Callable[[psycopg.Connection], bool]:
    """Release once a REINDEX's `_ccnew` copy exists on `table` and has waited longer than
    lock_timeout for us: that attempt has certainly given up."""
    seen: list[float] = []

    def release(conn: psycopg.Connection) -> bool:
        if not seen:
            ccnew = conn.execute(
                "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = %s::regclass AND c.relname LIKE '%%ccnew%%'",
                (table,),
            ).fetchone()[0]
            if ccnew:
                seen.append(time.monotonic())
            return False
        return time.monotonic() - seen[0] > LOCK_TIMEOUT * 1.5

    return release


def test_apply_treats_the_plan_under_a_client_load(bloated: Bloated) -> None:
    if not bloated.plans:
        bloated.plans = _measure_and_plan(bloated)
    untouched_before = snapshot(bloated.dsn)
    load = ClientLoad(bloated.dsn)
    load.start()
    time.sleep(0.5)
    started = time.perf_counter()
    with MaintenanceSession.open(bloated.target, bloated.settings) as session:
        gucs = "SELECT current_setting('vacuum_cost_delay'), current_setting('lock_timeout'),"
        gucs += " current_setting('max_parallel_maintenance_workers')"
        session_settings = session.query(gucs)
        for procedure in ORDER:
            holder = None
            if procedure.name == "vacuum":  # the first table vacuum takes is locked for 2.5 s
                first = bloated.plans["vacuum"][0].before["table"]
                holder = LockHolder(
                    bloated.dsn,
                    f"LOCK TABLE {first} IN SHARE UPDATE EXCLUSIVE MODE",
                    _after_seconds(2.5 * LOCK_TIMEOUT),
                )
            if procedure.name == "reindex":  # a writer's open transaction on index_churn
                holder = LockHolder(
                    bloated.dsn,
                    "UPDATE index_churn SET grp = grp WHERE id = 5",
                    _after_retry_of_reindex("index_churn"),
                )
            if holder:
                holder.start()
            results = []
            for action in bloated.plans[procedure.name]:
                results.append((action, procedure.apply(session, action)))
            bloated.applied[procedure.name] = results
            if holder:
                holder.join()
        assert session.query(gucs) == session_settings  # the gentler settings were put back
    window = time.perf_counter() - started
    time.sleep(0.3)
    load.stop.set()
    load.join(10)
    assert not load.errors
    assert len(load.latencies) > 200, "the client load did not run"
    worst = max(load.latencies)
    assert worst < LOCK_TIMEOUT + 1, (
        f"a client statement took {worst:.2f} s (window {window:.1f} s)"
    )

    attempts = {a.object: after["attempts"] for a, after in bloated.applied["vacuum"]}
    assert attempts[bloated.plans["vacuum"][0].object] >= 2  # gave up behind the lock, retried
    churn = [after for a, after in bloated.applied["reindex"] if "index_churn" in a.object]
    assert max(after["attempts"] for after in churn) >= 2
    assert sum(after["leftovers_dropped"] for after in churn) >= 1  # its own _ccnew copies

    with psycopg.connect(bloated.dsn, autocommit=True) as conn:
        for action, after in bloated.applied["vacuum"]:
            live, dead = exact_dead(conn, action.before["table"])
            assert dead < 0.05 * live, f"{action.object}: {dead} dead of {live} live"
            assert after["dead_tuples"] < 0.05 * after["live_tuples"]
            assert after["dead_source"] == "pgstattuple_approx"
        for action, after in bloated.applied["reindex"]:
            fresh = fresh_size(conn, action.before["index"])
            assert after["index_bytes"] <= 1.15 * fresh, (action.object, after, fresh)
            assert after["index_bytes"] < action.before["index_bytes"]
            assert after["bytes_per_row"] == pytest.approx(
                after["index_bytes"] / after["rows"], rel=1e-3
            )
        invalid = conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()[0]
        assert invalid == 0
        assert conn.execute("SELECT to_regclass('quiet_code_key')").fetchone()[0] is None

    analyzed = {a.object: after for a, after in bloated.applied["analyze_stale"]}
    for name in ("public.stale_stats", "public.fresh_load"):
        assert analyzed[name]["analyzed"] is True and analyzed[name]["modified_since_analyze"] == 0
    for name in EXPECTED["vacuum"]:  # the VACUUM (ANALYZE) refreshed them: not repeated
        assert analyzed[name]["analyzed"] is False

    after = snapshot(bloated.dsn)
    for table in UNTOUCHED_TABLES:
        assert after["tables"][table] == untouched_before["tables"][table]
    for relation, figures in untouched_before["relations"].items():
        if relation.startswith(("public.healthy_big", "public.quiet")) and relation != (
            "public.quiet_code_key"
        ):
            assert after["relations"][relation] == figures, relation
