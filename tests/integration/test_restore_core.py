"""Restores for real (issue 16) against real servers, without Prefect
(tasks.restore.run.run_restore): PostgreSQL 15 and the embedded 18, refusals, --clean, one
schema, hooks, a restore killed mid-way, `backups download`."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import psycopg
import pytest

from runbook.catalog import RestoreLog, RestoreStatus
from runbook.runtime import open_runtime
from runbook.systems.postgres import connect, schema_facts, schema_fingerprint
from tasks.restore.download import download_backup
from tasks.restore.plan import RestoreRefused, RestoreRequest
from tasks.restore.run import RestoreRun, run_restore, sweep_dead_restores
from tests.integration.test_drill_core import take_backup


def restore(runtime, **request):
    return run_restore(
        RestoreRun(runtime.config, runtime.catalog, runtime.storage, RestoreRequest(**request))
    )


def facts(dsn: str) -> tuple[dict[str, int], str]:
    """(exact row count per table, schema fingerprint) of a database."""
    with connect(dsn, autocommit=True) as conn:
        schema = schema_facts(conn)
        counts = {
            f"{t['schema']}.{t['name']}": conn.execute(
                f'SELECT count(*) FROM "{t["schema"]}"."{t["name"]}"'
            ).fetchone()[0]
            for t in schema["tables"]
        }
    return counts, schema_fingerprint(schema)


@pytest.fixture
def scratch_names(request):
    """Database names for restores to create, dropped afterwards on their server."""
    made = []

    def name(server, prefix="rbrestore"):
        dbname = f"{prefix}_{os.urandom(4).hex()}"
        made.append((server, dbname))
        return dbname

    yield name
    for server, dbname in made:
        server.drop_database(dbname)


@pytest.mark.parametrize("server_name", ["pg15", "pg18"])
def test_restore_into_a_new_database_equals_the_source(
    server_name, request, pg15, make_database, write_config, scratch_names
):
    server = request.getfixturevalue(server_name)
    source = make_database(pg15)
    runtime = open_runtime(write_config({"postgres": [{"name": "app", "dsn": source}]}))
    backup_id = take_backup(runtime, "app")
    into = server.dsn(scratch_names(server))

    record = restore(runtime, target="app", into=into)

    assert record.status == RestoreStatus.RESTORED, (record.error, record.checks)
    assert record.backup_id == backup_id and record.error is None and record.failed_step is None
    assert facts(into) == facts(source)
    names = {c.name for c in record.checks}
    assert {"backup integrity", "restore", "rows shop.orders", "schema fingerprint"} <= names
    assert (
        f"pg_restore {server.major}."
        in next(c for c in record.checks if c.name == "restore").detail
    )
    assert 0 < record.rto_seconds < 300
    assert set(record.timings) >= {"download", "restore", "validation"}
    assert "create database" in " ".join(record.plan)
    assert RestoreLog(runtime.catalog).get(record.id).status == "restored"
    assert not any(p.startswith(f"runbook-restore-app-{record.id}") for p in os.listdir("/tmp"))


def test_refused_into_the_source_database_touches_nothing(pg15, make_database, write_config):
    source = make_database(pg15)
    runtime = open_runtime(write_config({"postgres": [{"name": "app", "dsn": source}]}))
    take_backup(runtime, "app")
    before = facts(source)
    dbname = psycopg.conninfo.conninfo_to_dict(source)["dbname"]
    other_spelling = f"host=localhost port=5432 user=postgres dbname={dbname}"

    for into in (source, other_spelling):  # the DSN, and the system identifier + name
        with pytest.raises(RestoreRefused, match="source database"):
            restore(runtime, target="app", into=into)
        with pytest.raises(RestoreRefused, match="source database"):
            restore(runtime, target="app", into=into, overwrite="clean", confirmed=True)
    with pytest.raises(RestoreRefused, match="confirmation needed"):
        restore(runtime, target="app", into=source, overwrite="replace-source")

    assert facts(source) == before
    assert RestoreLog(runtime.catalog).list() == []  # nothing recorded


def test_replace_source_with_confirmation(pg15, make_database, write_config):
    source = make_database(pg15)
    runtime = open_runtime(write_config({"postgres": [{"name": "app", "dsn": source}]}))
    take_backup(runtime, "app")
    before = facts(source)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("DELETE FROM shop.orders WHERE id % 3 = 0")  # the accident

    record = restore(runtime, target="app", into=source, overwrite="replace-source", confirmed=True)

    assert record.restored, (record.error, record.checks)
    assert facts(source) == before


def test_clean_into_a_non_empty_database(pg15, make_database, write_config, scratch_names):
    source = make_database(pg15)
    runtime = open_runtime(write_config({"postgres": [{"name": "app", "dsn": source}]}))
    take_backup(runtime, "app")
    into = pg15.dsn(scratch_names(pg15))
    assert restore(runtime, target="app", into=into).restored
    with psycopg.connect(into, autocommit=True) as conn:
        conn.execute("DELETE FROM shop.orders WHERE id < 100")
        conn.execute("UPDATE shop.customers SET city = 'nowhere'")

    with pytest.raises(RestoreRefused, match="not empty.*--clean"):
        restore(runtime, target="app", into=into)
    with pytest.raises(RestoreRefused, match="confirmation needed"):
        restore(runtime, target="app", into=into, overwrite="clean")
    record = restore(runtime, target="app", into=into, overwrite="clean", confirmed=True)

    assert record.restored, (record.error, record.checks)
    assert facts(into) == facts(source)
    assert "--clean --if-exists" in " ".join(record.plan)


def test_one_schema_only(pg15, make_database, write_config, scratch_names):
    source = make_database(pg15)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA audit; CREATE TABLE audit.events (id int PRIMARY KEY)")
        conn.execute("INSERT INTO audit.events SELECT generate_series(1, 50)")
    runtime = open_runtime(
        write_config(
            {
                "postgres": [
                    {"name": "per-schema", "dsn": source, "schemas": ["shop"]},
                    {"name": "whole", "dsn": source},
                ]
            }
        )
    )
    want = {k: v for k, v in facts(source)[0].items() if k.startswith("shop.")}
    for name in ("per-schema", "whole"):  # runbook 003's archive, and -n of the whole one
        take_backup(runtime, name)
        into = pg15.dsn(scratch_names(pg15))
        record = restore(runtime, target=name, into=into, schema="shop")
        assert record.restored, (record.error, record.checks)
        assert facts(into)[0] == want
        assert record.schema_name == "shop"
    with pytest.raises(Exception, match="no schema 'nope'"):
        restore(runtime, target="whole", into=pg15.dsn(scratch_names(pg15)), schema="nope")


class HookServer(http.server.BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        self.calls.append(f"{self.command} {self.path}")
        self.send_response(204)
        self.end_headers()

    do_DELETE = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def hook_url():
    HookServer.calls = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HookServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_hooks_run_in_order_and_post_hooks_also_when_the_restore_fails(
    pg15, make_database, write_config, scratch_names, tmp_path, hook_url
):
    source = make_database(pg15)
    trail = tmp_path / "trail"
    into_name = scratch_names(pg15)
    into = pg15.dsn(into_name)

    def step(word, extra=""):
        return {
            "name": word,
            "command": ["sh", "-c", f'echo {word} >> "$TRAIL"{extra}'],
            "env": {"TRAIL": str(trail)},
        }

    # The second pre step recreates the schema the archive creates (as an application that
    # came back too early would): pg_restore --exit-on-error fails on it.
    sabotage = {
        "name": "app recreates its schema",
        "command": ["psql", "-q", "-d", into, "-c", "CREATE SCHEMA shop"],
    }
    hooks = {
        "pre": [
            {"name": "maintenance on", "http": {"method": "POST", "url": f"{hook_url}/on"}},
            step("stop"),
        ],
        "post": [step("start"), {"http": {"method": "DELETE", "url": f"{hook_url}/on"}}],
    }
    runtime = open_runtime(
        write_config({"postgres": [{"name": "app", "dsn": source, "restore": hooks}]})
    )
    take_backup(runtime, "app")

    record = restore(runtime, target="app", into=into)
    assert record.restored, (record.error, record.checks)
    assert trail.read_text().split() == ["stop", "start"]
    assert HookServer.calls == ["POST /on", "DELETE /on"]
    assert [h.name for h in record.hooks] == [
        "pre: maintenance on",
        "pre: stop",
        "post: start",
        f"post: DELETE {hook_url}/on",
    ]
    assert all(h.ok for h in record.hooks)

    # Fails in the restore step: the post steps still run, in order, and the record says so.
    trail.unlink()
    HookServer.calls.clear()
    pg15.drop_database(into_name)
    with psycopg.connect(pg15.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{into_name}"')
    hooks["pre"].append(sabotage)
    runtime = open_runtime(
        write_config({"postgres": [{"name": "app", "dsn": source, "restore": hooks}]})
    )
    record = restore(runtime, target="app", into=into)
    assert record.status == RestoreStatus.FAILED and record.failed_step == "restore"
    assert "already exists" in record.error and "incomplete" in record.error
    assert trail.read_text().split() == ["stop", "start"]
    assert HookServer.calls == ["POST /on", "DELETE /on"]

    # A failing pre step: nothing restored, the post steps run.
    trail.unlink()
    hooks["pre"] = [{"command": ["false"]}]
    runtime = open_runtime(
        write_config({"postgres": [{"name": "app", "dsn": source, "restore": hooks}]})
    )
    record = restore(runtime, target="app", into=pg15.dsn(scratch_names(pg15)), backup="latest")
    assert record.status == RestoreStatus.FAILED and record.failed_step == "pre-hooks"
    assert [(h.name, h.ok) for h in record.hooks] == [
        ("pre: false", False),
        ("post: start", True),
        (f"post: DELETE {hook_url}/on", True),
    ]
    assert trail.read_text().split() == ["start"]
    assert not any(c.name == "restore" for c in record.checks)


RESTORE_IN_A_CHILD = textwrap.dedent(
    """
    import sys
    from runbook.runtime import open_runtime
    from runbook.stopping import stop_on_signals
    from tasks.restore.plan import RestoreRequest
    from tasks.restore.run import RestoreRun, run_restore
    stop_on_signals()
    runtime = open_runtime(sys.argv[1])
    request = RestoreRequest(target="app", into=sys.argv[2], jobs=1)
    run_restore(RestoreRun(runtime.config, runtime.catalog, runtime.storage, request))
    """
)


def _wait_for_step(log: RestoreLog, step: str, child, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = log.list(limit=1)
        if found and found[0].status == "running" and found[0].failed_step == step:
            return found[0].id
        assert child.poll() is None, "the restore ended before it was killed"
        time.sleep(0.05)
    raise AssertionError(f"the restore never reached step {step}")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_restore_killed_midway_is_interrupted_never_restored(
    how, pg15, make_database, write_config, scratch_names
):
    source = make_database(pg15, customers=100, orders=10)
    with psycopg.connect(source, autocommit=True) as conn:  # enough for pg_restore to take a while
        conn.execute(
            "CREATE TABLE shop.big AS SELECT g AS id, md5(g::text) AS v "
            "FROM generate_series(1, 1500000) g; ALTER TABLE shop.big ADD PRIMARY KEY (id);"
            "CREATE INDEX ON shop.big (v)"
        )
    config = write_config({"postgres": [{"name": "app", "dsn": source}]})
    runtime = open_runtime(config)
    take_backup(runtime, "app")
    into = pg15.dsn(scratch_names(pg15))
    log = RestoreLog(runtime.catalog)
    child = subprocess.Popen([sys.executable, "-c", RESTORE_IN_A_CHILD, str(config), into])
    try:
        restore_id = _wait_for_step(log, "restore", child)
        time.sleep(0.5)  # pg_restore is at work
        restorers = [
            p
            for p in psutil.Process(child.pid).children(recursive=True)
            if p.name() == "pg_restore"
        ]
        child.send_signal(how)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    psutil.wait_procs(restorers, timeout=10)
    assert not [p for p in restorers if p.is_running()], "pg_restore outlived the restore"

    record = log.get(restore_id)
    if how == signal.SIGKILL:
        assert record.status == RestoreStatus.RUNNING  # nobody could say otherwise yet
        assert [r.id for r in sweep_dead_restores(log, "app")] == [restore_id]
        record = log.get(restore_id)
        assert "died in step restore" in record.error
    else:
        assert "stopped by SIGTERM" in record.error
    assert record.status == RestoreStatus.INTERRUPTED and record.failed_step == "restore"
    assert "incomplete" in record.error and not record.restored


def test_backups_download_verified_in_native_formats(pg15, make_database, write_config, tmp_path):
    source = make_database(pg15)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("port = 1\n")
    runtime = open_runtime(
        write_config(
            {
                "postgres": [{"name": "app", "dsn": source}],
                "files": [{"name": "conf", "paths": ["etc"]}],
            }
        )
    )
    pg_id, files_id = take_backup(runtime, "app"), take_backup(runtime, "conf")

    got = download_backup(runtime.catalog, runtime.storage, pg_id, tmp_path / "dl")
    assert got.report.ok and [p.name for p in got.files] == [f"app-{pg_id}-database.pgdump"]
    listing = subprocess.run(
        ["pg_restore", "--list", str(got.files[0])], capture_output=True, text=True, check=True
    ).stdout
    assert "TABLE DATA shop orders" in listing
    got = download_backup(runtime.catalog, runtime.storage, files_id, tmp_path / "dl")
    assert [p.suffix for p in got.files] == [".tar"]
    names = subprocess.run(["tar", "-tf", str(got.files[0])], capture_output=True, text=True)
    assert str(tmp_path / "etc" / "app.conf").lstrip("/") in names.stdout

    # Damaged in storage: nothing kept, the damage named.
    stored = runtime.config.storage.path / runtime.catalog.get_backup(pg_id).artifacts[0].key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    got = download_backup(runtime.catalog, runtime.storage, pg_id, tmp_path / "dl2")
    assert not got.report.ok and got.files == []
    assert got.report.problems[0].problem == "checksum"
    assert list((tmp_path / "dl2").iterdir()) == []
    assert json.dumps(got.report.model_dump(mode="json"))  # a report a script can print
