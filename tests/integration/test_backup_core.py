"""The backup and verification core against real servers, without Prefect."""

from __future__ import annotations

import io
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import zstandard

from runbook.catalog import COMMITTED, BackupStatus, BackupStep
from runbook.manifest import new_backup_id, read_manifest
from runbook.runtime import open_runtime
from runbook.storage import StorageError
from runbook.storage.local import LocalStorage
from runbook.streams import ProcessFailed
from runbook.systems.pg_tools import embedded_bin_dir, pick_binary
from runbook.systems.postgres import PostgresAuthFailed
from tasks.backups import dump
from tasks.backups.dump import run_backup
from tasks.backups.retention import collect_garbage, find_orphans, plan_garbage
from tasks.backups.verify import verify_backup
from tests.support.pg import PASSWORD, PASSWORD_ROLE


def backup_once(runtime, target: str, backup_id: str | None = None, storage=None):
    """One run_backup of a target with the runtime's config, catalog and storage."""
    return run_backup(
        runtime.config,
        runtime.config.target(target),
        runtime.catalog,
        storage or runtime.storage,
        backup_id or new_backup_id(),
    )


def backup_and_verify(config_path: Path, target: str):
    runtime = open_runtime(config_path)
    backup_id = new_backup_id()
    outcome = backup_once(runtime, target, backup_id)
    report = verify_backup(runtime.catalog, runtime.storage, backup_id)
    return runtime, outcome, report


def decompress(path: Path) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())


def restore_count(server, archive: bytes, tmp_path: Path, tables: list[str]) -> dict[str, int]:
    """pg_restore an archive into a fresh database on `server`; count rows of `tables`."""
    name = server.create_database("rbrestore")
    try:
        dump = tmp_path / "restore.pgdump"
        dump.write_bytes(archive)
        restore = pick_binary("pg_restore", server.major)
        subprocess.run(
            [restore.path, "--exit-on-error", "--no-owner", "-d", server.dsn(name), str(dump)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with psycopg.connect(server.dsn(name)) as conn:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        server.drop_database(name)


# --- PostgreSQL ------------------------------------------------------------------------------


def test_pg15_whole_and_per_schema_backup_verifies_and_restores(
    pg15, make_database, write_config, tmp_path
):
    dsn = make_database(pg15)
    config = write_config({"postgres": [{"name": "app", "dsn": dsn, "schemas": ["shop"]}]})
    runtime, outcome, report = backup_and_verify(config, "app")

    assert outcome.record.status == BackupStatus.STORED
    assert report.ok, report.artifacts
    record = runtime.catalog.get_backup(outcome.record.id)
    assert record.status == BackupStatus.VERIFIED and record.verified_at is not None
    assert [a.name for a in record.artifacts] == ["database", "schema-shop"]
    assert all(a.verified_at for a in record.artifacts)

    manifest = read_manifest(runtime.storage, "app", record.id)
    source = manifest.source
    assert source["server_major"] == 15
    assert source["row_counts"]["shop.customers"] == 300
    assert source["row_counts"]["shop.orders"] == 3000
    assert len(source["schema_fingerprint"]) == 64
    assert "15." in manifest.tools["pg_dump"]  # the closest client >= the server
    for artifact in manifest.artifacts:
        stored = runtime.config.storage.path / artifact.key
        assert stored.stat().st_size == artifact.bytes
    # Storage layout: <storage.path>/<key>, the manifest beside the artifacts.
    assert (runtime.config.storage.path / manifest.key).exists()

    archive = decompress(runtime.config.storage.path / manifest.artifacts[0].key)
    counts = restore_count(pg15, archive, tmp_path, ["shop.customers", "shop.orders"])
    assert counts == {"shop.customers": 300, "shop.orders": 3000}


def test_pg18_server_gets_pg18_tools_and_pg15_server_can_use_them(
    pg15, pg18, make_database, write_config
):
    dsn18 = make_database(pg18)
    dsn15 = make_database(pg15)
    config = write_config(
        {
            "postgres": [
                {"name": "new", "dsn": dsn18},
                {"name": "old", "dsn": dsn15, "bin_dir": str(embedded_bin_dir())},
            ]
        }
    )
    runtime, outcome18, report18 = backup_and_verify(config, "new")
    assert report18.ok, report18.artifacts
    assert (
        read_manifest(runtime.storage, "new", outcome18.record.id)
        .tools["pg_dump"]
        .startswith("pg_dump 18.")
    )
    _, outcome15, report15 = backup_and_verify(config, "old")
    assert report15.ok, report15.artifacts
    manifest = read_manifest(runtime.storage, "old", outcome15.record.id)
    assert manifest.source["server_major"] == 15
    assert manifest.tools["pg_dump"].startswith("pg_dump 18.")


def test_row_counts_come_from_the_dump_snapshot_while_writes_continue(
    pg15, make_database, write_config, tmp_path
):
    dsn = make_database(pg15)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE public.events (id bigserial PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO public.events (body) SELECT md5(g::text) FROM generate_series(1, 200000) g"
        )
    stop = threading.Event()
    inserted = [0]

    def writer() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO public.events (body) VALUES ('late'), ('later')")
                inserted[0] += 2

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        config = write_config({"postgres": [{"name": "busy", "dsn": dsn}]})
        runtime, outcome, report = backup_and_verify(config, "busy")
    finally:
        stop.set()
        thread.join()
    assert report.ok
    assert inserted[0] > 0
    manifest = read_manifest(runtime.storage, "busy", outcome.record.id)
    counted = manifest.source["row_counts"]["public.events"]
    archive = decompress(runtime.config.storage.path / manifest.artifacts[0].key)
    restored = restore_count(pg15, archive, tmp_path, ["public.events"])
    assert restored["public.events"] == counted
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.events").fetchone()[0] > counted


def test_wrong_password_fails_at_once_without_the_password_anywhere(
    pg18, make_database, write_config, caplog
):
    name = pg18.create_database("rbauth")
    try:
        dsn = pg18.dsn(name, user=PASSWORD_ROLE, password="not-" + PASSWORD)
        config = write_config({"postgres": [{"name": "locked-out", "dsn": dsn}]})
        runtime = open_runtime(config)
        backup_id = new_backup_id()
        started = time.monotonic()
        with pytest.raises(PostgresAuthFailed) as caught:
            backup_once(runtime, "locked-out", backup_id)
        assert time.monotonic() - started < 10
        message = str(caught.value)
        assert "password authentication failed" in message
        assert PASSWORD not in message and "not-" + PASSWORD not in message
        record = runtime.catalog.get_backup(backup_id)
        assert record.status == BackupStatus.FAILED and record.attempts == 1
        assert record.failed_step == BackupStep.CONNECT
        assert PASSWORD not in (record.error or "")
        assert PASSWORD not in caplog.text
        assert list(runtime.storage.list()) == []

        # The right password works through PGPASSWORD (never argv).
        good = write_config(
            {
                "postgres": [
                    {"name": "ok", "dsn": pg18.dsn(name, user=PASSWORD_ROLE, password=PASSWORD)}
                ]
            }
        )
        _, _, report = backup_and_verify(good, "ok")
        assert report.ok
    finally:
        pg18.drop_database(name)


def test_unknown_schema_fails_with_its_name(pg15, make_database, write_config):
    dsn = make_database(pg15, seed=False)
    config = write_config({"postgres": [{"name": "app", "dsn": dsn, "schemas": ["nosuch"]}]})
    runtime = open_runtime(config)
    backup_id = new_backup_id()
    with pytest.raises(Exception, match="schema 'nosuch' does not exist"):
        backup_once(runtime, "app", backup_id)
    assert runtime.catalog.get_backup(backup_id).failed_step == BackupStep.SNAPSHOT


# --- faults ----------------------------------------------------------------------------------


class SlowStorage(LocalStorage):
    """Local storage that reads its input slowly and says when the first chunk arrived."""

    def __init__(self, root: Path, delay: float = 0.05):
        super().__init__(root)
        self.delay = delay
        self.receiving = threading.Event()

    def put(self, key, chunks):
        def slow():
            for chunk in chunks:
                self.receiving.set()
                time.sleep(self.delay)
                yield chunk

        return super().put(key, slow())


def make_big_table(dsn: str, rows: int = 400_000) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE public.big (id bigint PRIMARY KEY, a text, b text)")
        conn.execute(
            "INSERT INTO public.big SELECT g, md5(g::text), md5((g * 7)::text) "
            "FROM generate_series(1, %s) g",
            (rows,),
        )


def find_child(name: str) -> psutil.Process | None:
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == name:
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_pg_dump_killed_half_way_leaves_no_backup_and_no_objects(pg15, make_database, write_config):
    dsn = make_database(pg15, seed=False)
    make_big_table(dsn)
    config = write_config({"postgres": [{"name": "app", "dsn": dsn}]})
    runtime = open_runtime(config)
    storage = SlowStorage(runtime.config.storage.path)
    backup_id = new_backup_id()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            backup_once(runtime, "app", backup_id, storage)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert storage.receiving.wait(30), "the dump never started streaming"
    victim = find_child("pg_dump")
    assert victim is not None
    victim.send_signal(signal.SIGKILL)
    thread.join(60)

    assert len(errors) == 1 and isinstance(errors[0], ProcessFailed)
    assert "SIGKILL" in str(errors[0])
    record = runtime.catalog.get_backup(backup_id)
    assert record.status == BackupStatus.FAILED and "pg_dump" in record.error
    assert record.failed_step == BackupStep.DUMP
    assert runtime.catalog.list_backups(statuses=COMMITTED) == []
    assert list(storage.list()) == []
    plan = plan_garbage(
        find_orphans(runtime.catalog, storage), record.started_at, runtime.config.retention.grace
    )
    collect_garbage(runtime.catalog, storage, plan)
    leftovers = [p for p in runtime.config.storage.path.rglob("*") if p.is_file()]
    assert leftovers == []


def test_underscore_folders_are_never_taken_for_orphaned_backups(write_config):
    """Log archives and diagnostics bundles share the storage; a three-level key under a
    `_`-folder looks like <target>/<id>/<object> but is no backup to import or collect."""
    runtime = open_runtime(write_config({}))
    runtime.storage.put_bytes("_logs/host/app.log.1.zst", b"archived log")
    runtime.storage.put_bytes("_custom/x/manifest.json", b"{}")
    runtime.storage.put_bytes("app/20260101T000000Z-abc/db.pgdump.zst", b"half a dump")
    orphans = find_orphans(runtime.catalog, runtime.storage)
    assert [(o.target, o.backup_id) for o in orphans] == [("app", "20260101T000000Z-abc")]


class GatedStorage(LocalStorage):
    """Local storage that holds a put after its first chunk until the test opens the gate."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.receiving = threading.Event()
        self.gate = threading.Event()

    def put(self, key, chunks):
        def gated():
            for chunk in chunks:
                self.receiving.set()
                self.gate.wait(60)
                yield chunk

        return super().put(key, gated())


def test_two_backups_of_one_target_never_dump_in_parallel(pg15, make_database, write_config):
    """The first backup is held mid-dump (holding the target's lock); the second waits
    lock_timeout, reports `locked` and never starts a pg_dump; then the first finishes."""
    dsn = make_database(pg15, seed=False)
    make_big_table(dsn)  # larger than the pipe and read-ahead buffers: pg_dump stays blocked
    config = write_config(
        {"postgres": [{"name": "app", "dsn": dsn}]}, backup={"lock_timeout": "1s"}
    )
    runtime = open_runtime(config)
    storage = GatedStorage(runtime.config.storage.path)
    first_id, second_id = new_backup_id(), new_backup_id()
    outcomes = {}

    def run(backup_id: str) -> None:
        outcomes[backup_id] = backup_once(runtime, "app", backup_id, storage)

    def dumps() -> int:
        return sum(1 for c in psutil.Process().children(recursive=True) if c.name() == "pg_dump")

    first = threading.Thread(target=run, args=(first_id,))
    first.start()
    assert storage.receiving.wait(30), "the first backup never started streaming"
    second = threading.Thread(target=run, args=(second_id,))
    second.start()
    most = 0
    while second.is_alive():
        most = max(most, dumps())
        time.sleep(0.02)
    storage.gate.set()
    first.join(120)

    assert most == 1  # only the first backup's pg_dump, held mid-stream
    assert outcomes[first_id].record.status == BackupStatus.STORED
    locked = outcomes[second_id].record
    assert locked.status == BackupStatus.LOCKED and locked.failed_step == BackupStep.LOCK
    assert "another backup of target 'app' is running" in locked.error
    assert not [i for i in storage.list() if i.key.startswith(f"app/{second_id}/")]


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_verify_names_the_damaged_artifact(damage, pg15, make_database, write_config):
    dsn = make_database(pg15)
    config = write_config({"postgres": [{"name": "app", "dsn": dsn, "schemas": ["shop"]}]})
    runtime, outcome, report = backup_and_verify(config, "app")
    assert report.ok
    record = runtime.catalog.get_backup(outcome.record.id)
    victim = runtime.config.storage.path / record.artifacts[1].key
    if damage == "flip":
        flip_byte(victim)
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-100])
    elif damage == "delete":
        victim.unlink()
    else:
        (runtime.config.storage.path / record.manifest_key).unlink()

    again = verify_backup(runtime.catalog, runtime.storage, record.id)
    assert not again.ok
    bad = again.problems
    expected = {
        "flip": "checksum",
        "truncate": "size",
        "delete": "missing",
        "manifest": "manifest",
    }[damage]
    assert [c.problem for c in bad] == [expected]
    if damage != "manifest":
        assert bad[0].key == record.artifacts[1].key
        good = [c for c in again.artifacts if c.ok]
        assert [c.key for c in good] == [record.artifacts[0].key]
    after = runtime.catalog.get_backup(record.id)
    assert after.status == BackupStatus.CORRUPT and expected in after.error
    assert after.failed_step == BackupStep.VERIFY
    assert all(c.remedy and "backup" in c.remedy for c in bad)
    history = runtime.catalog.verifications(record.id)
    assert [v.ok for v in history] == [True, False]


def test_verify_reports_a_table_the_archive_lacks(pg15, make_database, write_config, monkeypatch):
    # The manifest the backup commits lists a table its archive does not hold (a dump that
    # silently missed one). Editing the stored manifest instead is a manifest problem (the
    # seal: tests/integration/test_storage_lies.py); this is the archive's.
    dsn = make_database(pg15)
    config = write_config({"postgres": [{"name": "app", "dsn": dsn}]})
    claim_a_missing_table(monkeypatch)
    runtime, outcome, report = backup_and_verify(config, "app")
    assert [c.problem for c in report.problems] == ["content"]
    assert "shop.refunds" in report.problems[0].detail


def claim_a_missing_table(monkeypatch, rows: int = 12) -> None:
    """Make the next backup's manifest claim `shop.refunds` (`rows` rows), which the database
    and so the archive lack."""
    real_schema, real_counts = dump.schema_facts, dump.exact_row_counts
    refunds = {
        "schema": "shop",
        "name": "refunds",
        "partitioned": False,
        "columns": [["id", "bigint", True]],
        "primary_key": ["id"],
    }

    def schema_facts(conn):
        facts = real_schema(conn)
        return {**facts, "tables": [*facts["tables"], refunds]}

    def exact_row_counts(conn, tables):
        real = [t for t in tables if t is not refunds]
        return {**real_counts(conn, real), "shop.refunds": rows}

    monkeypatch.setattr(dump, "schema_facts", schema_facts)
    monkeypatch.setattr(dump, "exact_row_counts", exact_row_counts)


# --- Redis and files ------------------------------------------------------------------------


def test_redis_backup_is_an_rdb_with_key_counts(write_config):
    sock = __import__("socket").create_connection(("127.0.0.1", 6379), timeout=5)
    sock.sendall(b"SELECT 12\r\nFLUSHDB\r\nSET runbook:k1 v1\r\nSET runbook:k2 v2\r\n")
    time.sleep(0.2)
    sock.close()
    config = write_config({"redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/12"}]})
    runtime, outcome, report = backup_and_verify(config, "cache")
    assert report.ok, report.artifacts
    manifest = read_manifest(runtime.storage, "cache", outcome.record.id)
    assert manifest.source["keys_per_db"]["db12"] == 2
    rdb = decompress(runtime.config.storage.path / manifest.artifacts[0].key)
    assert rdb.startswith(b"REDIS") and b"runbook:k1" in rdb


def test_files_backup_is_a_tar_with_excludes(tmp_path, write_config):
    etc = tmp_path / "etc"
    (etc / "nested").mkdir(parents=True)
    (etc / "app.conf").write_text("port = 8080\n")
    (etc / "nested" / "secret.env").write_bytes(b"\x00binary\xff")
    (etc / "scratch.swp").write_text("junk")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("services: {}\n")
    config = write_config(
        {
            "files": [
                {"name": "config", "paths": ["etc", "docker-compose.yml"], "exclude": ["*.swp"]}
            ]
        }
    )
    runtime, outcome, report = backup_and_verify(config, "config")
    assert report.ok
    manifest = read_manifest(runtime.storage, "config", outcome.record.id)
    assert manifest.source["files"] == 3
    data = decompress(runtime.config.storage.path / manifest.artifacts[0].key)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = {m.name: m for m in tar.getmembers()}
        inner = str(etc / "nested" / "secret.env").lstrip("/")
        assert tar.extractfile(names[inner]).read() == b"\x00binary\xff"
        assert str(compose).lstrip("/") in names
        assert not any(n.endswith(".swp") for n in names)


def test_files_backup_of_a_missing_path_fails_naming_it(tmp_path, write_config):
    config = write_config({"files": [{"name": "config", "paths": ["does-not-exist"]}]})
    runtime = open_runtime(config)
    backup_id = new_backup_id()
    with pytest.raises(Exception, match="does-not-exist does not exist"):
        backup_once(runtime, "config", backup_id)
    record = runtime.catalog.get_backup(backup_id)
    assert record.status == BackupStatus.FAILED and record.failed_step == BackupStep.CONNECT


def test_a_long_ddl_lock_fails_the_backup_as_transient_instead_of_hanging(
    pg15, make_database, write_config
):
    from runbook.errors import TransientError

    dsn = make_database(pg15)
    config = write_config(
        {"postgres": [{"name": "app", "dsn": dsn}]}, backup={"table_lock_timeout": "1s"}
    )
    runtime = open_runtime(config)
    backup_id = new_backup_id()
    with psycopg.connect(dsn) as blocker:
        blocker.execute("LOCK TABLE shop.orders IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(TransientError, match="lock timeout"):
            backup_once(runtime, "app", backup_id)
        assert time.monotonic() - started < 15
    assert runtime.catalog.get_backup(backup_id).failed_step == BackupStep.SNAPSHOT


# --- the failing step ------------------------------------------------------------------------


class RefusingStorage(LocalStorage):
    """Local storage that refuses to store keys ending in `refuse` (access denied)."""

    def __init__(self, root: Path, refuse: str):
        super().__init__(root)
        self.refuse = refuse

    def put(self, key, chunks):
        if key.endswith(self.refuse):
            for _ in chunks:  # the dump streams, then the write is refused
                pass
            raise StorageError(f"{key}: access denied")
        return super().put(key, chunks)


@pytest.mark.parametrize(
    ("refuse", "step"),
    [(".tar.zst", BackupStep.STORE), ("manifest.json", BackupStep.MANIFEST)],
    ids=["artifact", "manifest"],
)
def test_a_storage_failure_records_the_step_and_leaves_no_objects(
    refuse, step, tmp_path, write_config
):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("x = 1\n")
    config = write_config({"files": [{"name": "config", "paths": ["etc"]}]})
    runtime = open_runtime(config)
    storage = RefusingStorage(runtime.config.storage.path, refuse)
    backup_id = new_backup_id()
    with pytest.raises(StorageError, match="access denied"):
        backup_once(runtime, "config", backup_id, storage)
    record = runtime.catalog.get_backup(backup_id)
    assert (record.status, record.failed_step) == (BackupStatus.FAILED, step)
    assert "access denied" in record.error and record.artifacts == []
    assert list(storage.list()) == []
