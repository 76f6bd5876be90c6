"""DR restore drills against real servers, without Prefect (tasks.drills.drill.run_drill)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from runbook.catalog import BackupStatus, DrillLog, utcnow
from runbook.errors import NotFoundError
from runbook.manifest import new_backup_id
from runbook.runtime import open_runtime
from tasks.backups.dump import run_backup
from tasks.backups.verify import verify_backup
from tasks.drills.drill import DrillRefused, DrillRun, run_drill
from tasks.drills.scratch import SCRATCH_PREFIX, ScratchPlace
from tests.integration.test_backup_core import claim_a_missing_table


def take_backup(runtime, target: str) -> str:
    backup_id = new_backup_id()
    run_backup(
        runtime.config, runtime.config.target(target), runtime.catalog, runtime.storage, backup_id
    )
    assert verify_backup(runtime.catalog, runtime.storage, backup_id).ok
    return backup_id


def drill(runtime, target: str, backup: str = "latest", **kwargs):
    return run_drill(
        DrillRun(
            runtime.config,
            runtime.catalog,
            runtime.storage,
            runtime.config.target(target),
            backup,
            **kwargs,
        )
    )


def check(record, name: str):
    found = [c for c in record.checks if c.name == name]
    assert found, f"no check {name!r} in {[c.name for c in record.checks]}"
    return found[0]


def scratch_databases(pg15) -> list[str]:
    with psycopg.connect(pg15.admin_dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'runbook\\_drill\\_%'"
            )
        ]


def test_pg15_backup_drilled_on_embedded_pg18_passes(pg15, make_database, write_config):
    dsn = make_database(pg15)
    config = write_config({"postgres": [{"name": "app", "dsn": dsn, "rto": "10m", "rpo": "1h"}]})
    runtime = open_runtime(config)
    backup_id = take_backup(runtime, "app")
    folders_before = {p for p in os.listdir("/tmp") if p.startswith("runbook-drill-app-")}
    steps: list[str] = []

    record = drill(runtime, "app", on_step=steps.append)

    assert record.passed, [c for c in record.checks if not c.ok]
    # The log's last word counts what the report lists, not only the validation checks.
    assert steps[-1] == f"drill passed: {len(record.checks)} of {len(record.checks)} checks passed"
    assert record.backup_id == backup_id and record.fell_back_from is None
    assert check(record, "rows shop.orders").ok
    assert "3000" in check(record, "rows shop.orders").detail
    assert check(record, "restore").ok and "pg_restore 18." in check(record, "restore").detail
    assert check(record, "amcheck").ok
    assert 0 < record.rto_seconds < 600 and record.rto_target_seconds == 600
    assert 0 <= record.rpo_seconds < 3600
    assert set(record.timings) >= {"download", "restore", "validation", "cleanup"}
    assert record.kept is False and record.scratch is None
    assert record.failed_step is None and record.error is None
    # The throwaway server and the work folder are gone.
    folders_after = {p for p in os.listdir("/tmp") if p.startswith("runbook-drill-app-")}
    assert folders_after <= folders_before
    assert DrillLog(runtime.catalog).get(record.id).status == "passed"
    # No data_docs configured: no Data Docs, but the GX result is kept in the catalog.
    assert record.data_docs is None
    assert DrillLog(runtime.catalog).gx_result(record.id)["success"] is True


def test_pg15_backup_drilled_into_a_scratch_database_on_the_pg15_service(
    pg15, make_database, write_config
):
    dsn = make_database(pg15)
    config = write_config(
        {"postgres": [{"name": "app", "dsn": dsn, "drill": {"dsn": pg15.admin_dsn}}]}
    )
    runtime = open_runtime(config)
    take_backup(runtime, "app")
    before = scratch_databases(pg15)

    record = drill(runtime, "app")

    assert record.passed, [c for c in record.checks if not c.ok]
    assert "pg_restore 15." in check(record, "restore").detail
    assert SCRATCH_PREFIX + "app_" in check(record, "restore").detail
    assert scratch_databases(pg15) == before  # dropped afterwards


def test_gx_result_is_kept_and_data_docs_are_built_where_configured(
    pg15, make_database, write_config, tmp_path
):
    dsn = make_database(pg15)
    config = write_config(
        {"postgres": [{"name": "app", "dsn": dsn, "drill": {"dsn": pg15.admin_dsn}}]},
        drills={"data_docs": "data-docs"},  # relative to the config file
    )
    runtime = open_runtime(config)
    take_backup(runtime, "app")

    record = drill(runtime, "app")

    assert record.passed, [c for c in record.checks if not c.ok]
    assert record.data_docs == str(tmp_path / "data-docs" / record.id / "index.html")
    index = (tmp_path / "data-docs" / record.id / "index.html").read_text()
    assert "restore" in index  # the drill's one validation page, linked from the index
    gx_result = DrillLog(runtime.catalog).gx_result(record.id)
    assert gx_result["success"] is True
    # One validation per drill over a facts table with one row per table of the manifest.
    (validation,) = gx_result["validations"]
    assert validation["meta"]["active_batch_definition"]["data_asset_name"] == "restored tables"
    tables = {c.name.split(" ", 1)[1] for c in record.checks if c.name.startswith("columns ")}
    assert "shop.orders" in tables
    assert {r["result"]["element_count"] for r in validation["results"]} == {len(tables)}
    assert gx_result["statistics"]["evaluated_expectations"] == 5
    assert (
        gx_result["statistics"]["successful_expectations"]
        == gx_result["statistics"]["evaluated_expectations"]
    )
    # Lists do not load the GX result; the record still says where the Data Docs are.
    listed = DrillLog(runtime.catalog).list(target="app")[0]
    assert listed.id == record.id and listed.data_docs == record.data_docs


def flip_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_latest_falls_back_to_the_previous_backup(pg15, make_database, write_config):
    config = write_config({"postgres": [{"name": "app", "dsn": make_database(pg15)}]})
    runtime = open_runtime(config)
    older = take_backup(runtime, "app")
    newest = take_backup(runtime, "app")
    artifact = runtime.catalog.get_backup(newest).artifacts[0]
    flip_byte(runtime.config.storage.path / artifact.key)

    record = drill(runtime, "app")

    assert record.passed
    assert record.backup_id == older and record.fell_back_from == newest
    assert f"fell back from corrupt backup {newest}" in check(record, "backup integrity").detail
    assert runtime.catalog.get_backup(newest).status == BackupStatus.CORRUPT

    # An explicit id that is corrupt fails the drill.
    explicit = drill(runtime, "app", newest)
    assert not explicit.passed and explicit.backup_id == newest
    assert "checksum" in check(explicit, "backup integrity").detail
    # It failed at picking the backup, nothing was restored; the check says why.
    assert explicit.failed_step == "pick" and explicit.error is None
    assert set(explicit.timings) == {"download", "cleanup"}


def test_archive_lacking_a_table_of_the_manifest_fails_naming_it(
    pg15, make_database, write_config, monkeypatch
):
    # The backup's own manifest claims a table its archive lacks (a manifest edited in storage
    # is refused as a manifest problem before: tests/integration/test_storage_lies.py).
    config = write_config({"postgres": [{"name": "app", "dsn": make_database(pg15)}]})
    runtime = open_runtime(config)
    claim_a_missing_table(monkeypatch)
    backup_id = new_backup_id()
    run_backup(
        runtime.config, runtime.config.target("app"), runtime.catalog, runtime.storage, backup_id
    )
    monkeypatch.undo()

    record = drill(runtime, "app", backup_id)

    assert not record.passed
    failing = [c for c in record.checks if not c.ok]
    assert any("shop.refunds" in c.detail for c in failing), failing
    # Reading the archive back already shows it: no restore into a scratch database.
    assert record.failed_step == "pick" and check(record, "backup integrity") in failing


def test_a_sequence_behind_its_column_fails_the_drill(pg15, make_database, write_config):
    dsn = make_database(pg15)
    with psycopg.connect(dsn) as conn:  # someone reset the sequence: next insert collides
        conn.execute("SELECT setval('shop.invoice_no', 5)")
    config = write_config({"postgres": [{"name": "app", "dsn": dsn}]})
    runtime = open_runtime(config)
    take_backup(runtime, "app")

    record = drill(runtime, "app")

    assert not record.passed and record.failed_step == "validate" and record.error is None
    assert record.rto_seconds is not None  # a failed validation still measures RTO and RPO
    sequence = check(record, "sequence shop.invoice_no")
    assert not sequence.ok and "shop.orders" in sequence.detail


def test_rto_target_of_one_second_fails_with_the_measured_figure(pg15, make_database, write_config):
    dsn = make_database(pg15)
    with psycopg.connect(dsn) as conn:  # enough data that restoring takes over a second
        conn.execute(
            "CREATE TABLE public.events AS SELECT g AS id, md5(g::text) AS a, "
            "md5((g * 3)::text) AS b FROM generate_series(1, 600000) g"
        )
        conn.execute("ALTER TABLE public.events ADD PRIMARY KEY (id)")
    config = write_config({"postgres": [{"name": "app", "dsn": dsn, "rto": "1s"}]})
    runtime = open_runtime(config)
    take_backup(runtime, "app")

    record = drill(runtime, "app")

    assert not record.passed and record.failed_step == "objectives"
    rto = check(record, "rto")
    assert not rto.ok and "MISSED target 1s" in rto.detail
    assert f"RTO {record.rto_seconds:.1f}s" in rto.detail and record.rto_seconds > 1
    assert all(c.ok for c in record.checks if c.name != "rto")


def test_a_plan_pointing_at_the_source_database_is_refused(pg15, make_database, write_config):
    dsn = make_database(pg15)
    config = write_config({"postgres": [{"name": "app", "dsn": dsn, "drill": {"dsn": dsn}}]})
    runtime = open_runtime(config)
    take_backup(runtime, "app")
    with pytest.raises(DrillRefused, match="source database"):
        drill(runtime, "app")
    assert DrillLog(runtime.catalog).list(target="app") == []  # refused before anything ran

    # The same server under another spelling (host name vs address): caught by identity once
    # connected, and recorded as refused, which is no drill result (freshness ignores it).
    other = dsn.replace("127.0.0.1", "localhost")
    config = write_config({"postgres": [{"name": "app", "dsn": dsn, "drill": {"dsn": other}}]})
    runtime = open_runtime(config)
    with pytest.raises(DrillRefused, match="source"):
        drill(runtime, "app")
    (refused,) = DrillLog(runtime.catalog).list(target="app")
    assert refused.status == "refused" and refused.failed_step is None
    assert "source database" in refused.error
    from tasks.health.freshness import check_drill_freshness

    (age,) = check_drill_freshness(runtime.config, runtime.catalog, utcnow())
    assert age.status.value == "warn" and "no DR drill has passed yet" in age.message


def test_an_unknown_or_foreign_backup_id_is_refused_and_records_nothing(
    pg15, make_database, write_config
):
    config = write_config(
        {
            "postgres": [{"name": "app", "dsn": make_database(pg15)}],
            "files": [{"name": "etc", "paths": ["."]}],
        }
    )
    runtime = open_runtime(config)
    other = take_backup(runtime, "etc")
    with pytest.raises(NotFoundError, match="no-such-id"):
        drill(runtime, "app", backup="no-such-id")
    with pytest.raises(NotFoundError, match="belongs to target 'etc'"):
        drill(runtime, "app", backup=other)
    assert DrillLog(runtime.catalog).list() == []


def test_keep_on_failure_keeps_the_scratch_database(pg15, make_database, write_config):
    config = write_config(
        {
            "postgres": [
                {
                    "name": "app",
                    "dsn": make_database(pg15),
                    "rto": "1ms",
                    "drill": {"dsn": pg15.admin_dsn},
                }
            ]
        }
    )
    runtime = open_runtime(config)
    take_backup(runtime, "app")
    record = drill(runtime, "app", keep_on_failure=True)
    assert not record.passed and record.kept and record.failed_step == "objectives"
    _where, kept_db, kept_folder = record.scratch.split("|")
    assert kept_db in scratch_databases(pg15)
    assert os.path.isdir(kept_folder)
    pg15.drop_database(kept_db)
    shutil.rmtree(kept_folder)


def test_a_killed_drill_leaves_a_database_the_next_drill_drops(
    pg15, make_database, write_config, tmp_path
):
    config = write_config(
        {
            "postgres": [
                {"name": "app", "dsn": make_database(pg15), "drill": {"dsn": pg15.admin_dsn}}
            ]
        }
    )
    runtime = open_runtime(config)
    take_backup(runtime, "app")
    script = textwrap.dedent(f"""
        from runbook.runtime import open_runtime
        from tasks.drills.drill import DrillRun, run_drill
        rt = open_runtime({str(config)!r})
        run_drill(DrillRun(rt.config, rt.catalog, rt.storage, rt.config.target("app")))
    """)
    before = set(scratch_databases(pg15))
    victim = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    leftover = None
    deadline = time.monotonic() + 120
    while leftover is None and time.monotonic() < deadline:
        for name in set(scratch_databases(pg15)) - before:
            with psycopg.connect(pg15.dsn(name)) as conn:
                restored = conn.execute("SELECT to_regclass('shop.orders') IS NOT NULL").fetchone()[
                    0
                ]
            if restored:
                leftover = name
        time.sleep(0.05)
    assert leftover, "the drill never restored"
    os.killpg(victim.pid, signal.SIGKILL)  # the drill and its children, after the restore
    victim.wait()
    time.sleep(0.5)
    assert leftover in scratch_databases(pg15)

    record = drill(runtime, "app")

    assert record.passed
    assert leftover not in scratch_databases(pg15)
    assert f"dropped {leftover}" in check(record, "leftovers").detail
    dead = [d for d in DrillLog(runtime.catalog).list(target="app") if d.id != record.id][0]
    assert dead.status == "failed" and "process died" in dead.error
    # Killed once its table was restored: in the restore step, or validating it.
    assert dead.failed_step in ("restore", "validate")


def test_redis_drill_compares_key_counts(write_config):
    import socket

    with socket.create_connection(("127.0.0.1", 6379), timeout=5) as sock:
        sock.sendall(
            b"SELECT 11\r\nFLUSHDB\r\n"
            + b"".join(f"SET drill:{i} v{i}\r\n".encode() for i in range(25))
        )
        time.sleep(0.3)
    config = write_config({"redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/11"}]})
    runtime = open_runtime(config)
    take_backup(runtime, "cache")

    record = drill(runtime, "cache")

    assert record.passed, record.checks
    assert check(record, "keys db11").detail.startswith("25 keys restored, 25 at backup time")


def redis_send(commands: list[str], db: int) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", 6379), timeout=5) as sock:
        sock.sendall(f"SELECT {db}\r\n".encode() + "".join(f"{c}\r\n" for c in commands).encode())
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):  # every reply read: every command done
            pass


def test_a_busy_redis_with_expiring_keys_drills_clean(write_config):
    import threading

    redis_send(["FLUSHDB"] + [f"SET keep:{i} v{i}" for i in range(40)], db=12)
    redis_send([f"SET session:{i} s{i} PX 9000" for i in range(10)], db=12)
    expire_at = time.monotonic() + 9
    stop = threading.Event()
    written = []

    def writer() -> None:  # keeps adding keys while the snapshot is taken
        while not stop.is_set():
            redis_send([f"SET new:{len(written)} x"], db=12)
            written.append(1)
            time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    config = write_config({"redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/12"}]})
    runtime = open_runtime(config)
    try:
        backup_id = take_backup(runtime, "cache")
    finally:
        stop.set()
        thread.join()
    from runbook.manifest import read_manifest

    source = read_manifest(runtime.storage, "cache", backup_id).source
    before, after = source["keys_per_db"]["db12"], source["keys_per_db_after"]["db12"]
    assert before >= 50 and after > before  # the writer ran across the snapshot
    assert source["expires_per_db"]["db12"] == 10
    time.sleep(max(0.0, expire_at - time.monotonic()) + 0.5)  # the sessions have expired now

    record = drill(runtime, "cache")

    keys = check(record, "keys db12")
    assert record.passed, record.checks
    assert keys.ok and "within the expected" in keys.detail
    assert "10 keys had a TTL" in keys.detail
    restored = int(keys.detail.split()[0])
    assert before - 10 <= restored <= after


def test_a_restore_that_fails_names_the_restore_step(pg15, make_database, write_config):
    # Roles live outside any one database, so pg_dump leaves them out: a policy for a role the
    # drill server lacks stops pg_restore --exit-on-error (the classic DR surprise).
    dsn = make_database(pg15)
    role = f"runbook_reader_{os.getpid()}"
    with psycopg.connect(pg15.admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role}")
    try:
        with psycopg.connect(dsn) as conn:
            conn.execute(f"CREATE POLICY readers ON shop.orders FOR SELECT TO {role} USING (true)")
        config = write_config({"postgres": [{"name": "app", "dsn": dsn}]})  # embedded drill server
        runtime = open_runtime(config)
        take_backup(runtime, "app")
        with psycopg.connect(dsn) as conn:
            conn.execute("DROP POLICY readers ON shop.orders")
    finally:
        with psycopg.connect(pg15.admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")

    record = drill(runtime, "app")

    assert not record.passed and record.failed_step == "restore"
    assert record.error.startswith("PermanentError: pg_restore") and "failed" in record.error
    assert check(record, "backup integrity").ok
    assert "restore" not in {c.name for c in record.checks}  # no restore check: it raised
    assert "validation" not in record.timings and record.rto_seconds is None
    assert record.scratch is None and not os.path.exists(f"/tmp/runbook-drill-app-{record.id}")


def test_a_failing_sweep_names_the_sweep_step(write_config):
    # The team's drill server is down: sweeping its leftover scratch databases is the first
    # thing that needs it.
    config = write_config(
        {
            "postgres": [
                {
                    "name": "app",
                    "dsn": "postgresql://postgres@127.0.0.1:5432/app",
                    "drill": {"dsn": "postgresql://postgres@127.0.0.1:1/postgres"},
                }
            ]
        }
    )
    runtime = open_runtime(config)

    record = drill(runtime, "app")

    assert not record.passed and record.failed_step == "sweep"
    assert record.error and "127.0.0.1" in record.error and record.backup_id is None
    assert DrillLog(runtime.catalog).get(record.id).failed_step == "sweep"


def test_the_scratch_database_is_on_record_before_it_exists(pg15, make_database, write_config):
    config = write_config(
        {
            "postgres": [
                {"name": "app", "dsn": make_database(pg15), "drill": {"dsn": pg15.admin_dsn}}
            ]
        }
    )
    runtime = open_runtime(config)
    take_backup(runtime, "app")
    seen = []

    def watch_restore(step, function, drill, *args):  # a StepRunner that looks first
        if step == "restore":
            place = ScratchPlace.parse(DrillLog(runtime.catalog).get(drill.id).scratch)
            seen.append((place.database, place.database in scratch_databases(pg15)))
        return function(drill, *args)

    run = DrillRun(runtime.config, runtime.catalog, runtime.storage, runtime.config.target("app"))
    record = run_drill(run, watch_restore)

    assert record.passed, [c for c in record.checks if not c.ok]
    ((database, existed),) = seen
    assert database.startswith(SCRATCH_PREFIX + "app_") and not existed
    assert database in check(record, "restore").detail
    assert record.scratch is None and database not in scratch_databases(pg15)


def test_a_killed_drill_leaves_an_embedded_server_the_next_drill_removes(
    pg15, make_database, write_config
):
    config = write_config({"postgres": [{"name": "app", "dsn": make_database(pg15)}]})
    runtime = open_runtime(config)
    take_backup(runtime, "app")
    script = textwrap.dedent(f"""
        from runbook.runtime import open_runtime
        from tasks.drills.drill import DrillRun, run_drill
        rt = open_runtime({str(config)!r})
        run_drill(DrillRun(rt.config, rt.catalog, rt.storage, rt.config.target("app")))
    """)
    victim = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    postmaster = None
    deadline = time.monotonic() + 120
    while postmaster is None and time.monotonic() < deadline:
        running = DrillLog(runtime.catalog).list(target="app", status="running")
        if running and running[0].scratch:
            place = ScratchPlace.parse(running[0].scratch)
            pid_file = Path(place.server.removeprefix("embedded:")) / "postmaster.pid"
            lines = pid_file.read_text().splitlines() if pid_file.exists() else []
            if len(lines) > 7 and lines[7].strip() == "ready":  # started, serving the drill
                postmaster = psutil.Process(int(lines[0]))
        time.sleep(0.05)
    assert postmaster, "the drill never started its embedded server"
    os.killpg(victim.pid, signal.SIGKILL)  # the drill; its server runs on (pg_ctl detaches it)
    victim.wait()
    assert place.workdir.is_dir()
    after_sweep = []

    def watch_sweep(step, function, drill, *args):  # a StepRunner that looks afterwards
        value = function(drill, *args)
        if step == "sweep":
            after_sweep.append((postmaster.is_running(), place.workdir.exists()))
        return value

    run = DrillRun(runtime.config, runtime.catalog, runtime.storage, runtime.config.target("app"))
    record = run_drill(run, watch_sweep)

    assert record.passed
    assert f"dropped {place.database}" in check(record, "leftovers").detail
    # Stopped by the sweep, not left running without its data folder.
    assert after_sweep == [(False, False)]
    dead = DrillLog(runtime.catalog).get(running[0].id)
    assert dead.status == "failed" and dead.failed_step in ("restore", "validate")
