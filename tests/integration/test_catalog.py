"""The catalog on SQLite and on PostgreSQL, its migrations, and the per-target locks."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from runbook.catalog import (
    COMMITTED,
    HEAD_REVISION,
    BackupStatus,
    BackupStep,
    BackupTransitionError,
    Catalog,
    current_revision,
    utcnow,
)
from runbook.catalog.backups import TRANSITIONS
from runbook.errors import NotFoundError
from runbook.locks import LockTimeout, named_lock
from runbook.manifest import Manifest, ManifestArtifact
from runbook.pins import PinError


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path, pg15):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    name = pg15.create_database("rbcatalog")
    yield pg15.url(name)
    pg15.drop_database(name)


def manifest(backup_id: str, at, artifacts: int = 1, target: str = "app") -> Manifest:
    return Manifest(
        backup_id=backup_id,
        target=target,
        kind="postgres",
        started_at=at,
        finished_at=at,
        artifacts=[
            ManifestArtifact(
                name="database" if n == 0 else f"schema-s{n}",
                key=f"{target}/{backup_id}/{'database' if n == 0 else f'schema-s{n}'}.pgdump.zst",
                content="pg_dump-custom",
                bytes=10,
                logical_bytes=40,
                sha256="ab" * 32,
                seconds=0.5,
                schema_name=None if n == 0 else f"s{n}",
            )
            for n in range(artifacts)
        ],
    )


def start(catalog: Catalog, backup_id: str, at=None, target: str = "app") -> None:
    catalog.start(
        backup_id,
        target=target,
        kind="postgres",
        storage="local:/x",
        started_at=at or utcnow(),
    )


def test_lifecycle_and_queries(catalog_url):
    catalog = Catalog(catalog_url)
    assert current_revision(catalog.engine) == HEAD_REVISION
    now = utcnow()
    for i, status in enumerate(
        [BackupStatus.VERIFIED, BackupStatus.FAILED, BackupStatus.VERIFIED, BackupStatus.CORRUPT]
    ):
        backup_id = f"b{i}"
        at = now + timedelta(minutes=i)
        start(catalog, backup_id, at)
        if status == BackupStatus.FAILED:
            catalog.mark_failed(backup_id, BackupStep.DUMP, "pg_dump died", at=at)
            continue
        catalog.mark_stored(backup_id, manifest(backup_id, at))
        key = f"app/{backup_id}/database.pgdump.zst"
        if status == BackupStatus.VERIFIED:
            catalog.mark_verified(backup_id, started_at=at, finished_at=at, keys=[key])
        else:
            problem = {"key": key, "problem": "checksum", "detail": "sha256 differs"}
            catalog.mark_corrupt(backup_id, started_at=at, finished_at=at, problems=[problem])

    assert [b.id for b in catalog.list_backups(statuses=COMMITTED)] == ["b3", "b2", "b0"]
    assert catalog.latest_backup("app").id == "b2"
    record = catalog.get_backup("b2")
    assert record.started_at.tzinfo is not None and record.artifacts[0].bytes == 10
    assert record.artifacts[0].seconds == 0.5 and record.bytes_stored == 10
    catalog.mark_verified("b2", started_at=now, finished_at=now, keys=[record.artifacts[0].key])
    assert catalog.get_backup("b2").artifacts[0].verified_at == now
    catalog.mark_corrupt(
        "b2",
        started_at=now,
        finished_at=now,
        problems=[{"key": "k", "problem": "checksum", "detail": "d"}],
    )
    assert catalog.verifications("b2")[-1].problems == [
        {"key": "k", "problem": "checksum", "detail": "d"}
    ]
    assert [v.ok for v in catalog.verifications("b2")] == [True, True, False]
    corrupt = catalog.get_backup("b3")
    assert corrupt.failed_step == BackupStep.VERIFY and corrupt.error == "checksum: sha256 differs"
    assert corrupt.artifacts[0].problem == "sha256 differs" and not corrupt.artifacts[0].verified_at
    failed = catalog.get_backup("b1")
    assert (failed.status, failed.failed_step, failed.error) == (
        BackupStatus.FAILED,
        BackupStep.DUMP,
        "pg_dump died",
    )
    # Storing again from a manifest replaces the artifacts (an import: storage wins).
    catalog.mark_deleting("b2")
    catalog.mark_deleted("b2")
    catalog.import_stored(manifest("b2", now, artifacts=2), "local:/x")
    assert [a.name for a in catalog.get_backup("b2").artifacts] == ["database", "schema-s1"]
    catalog.mark_deleting("b0")
    catalog.mark_deleted("b0")
    assert "b0" not in [b.id for b in catalog.list_backups()]
    assert "b0" in [b.id for b in catalog.list_backups(include_deleted=True)]
    with pytest.raises(NotFoundError, match="unknown backup id 'nope'"):
        catalog.get_backup("nope")
    # Reopening an up-to-date catalog is idempotent.
    assert Catalog(catalog_url).get_backup("b3").status == BackupStatus.CORRUPT


def test_naive_datetimes_are_refused(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(Exception, match="naive datetime"):
        start(catalog, "x", utcnow().replace(tzinfo=None))


# --- transitions ---------------------------------------------------------------------------

# The legal way to each status, from a new backup.
PATHS: dict[BackupStatus, list[str]] = {
    BackupStatus.RUNNING: [],
    BackupStatus.STORED: ["mark_stored"],
    BackupStatus.VERIFIED: ["mark_stored", "mark_verified"],
    BackupStatus.CORRUPT: ["mark_stored", "mark_corrupt"],
    BackupStatus.FAILED: ["mark_failed"],
    BackupStatus.LOCKED: ["mark_locked"],
    BackupStatus.DELETING: ["mark_deleting"],
    BackupStatus.DELETED: ["mark_deleting", "mark_deleted"],
}


def move(catalog: Catalog, backup_id: str, transition: str):
    """Call one named transition with plausible arguments."""
    now = utcnow()
    calls = {
        "start": lambda: catalog.start(
            backup_id, target="app", kind="postgres", storage="local:/x", started_at=now
        ),
        "mark_stored": lambda: catalog.mark_stored(backup_id, manifest(backup_id, now)),
        "import_stored": lambda: catalog.import_stored(manifest(backup_id, now), "local:/x"),
        "mark_failed": lambda: catalog.mark_failed(backup_id, BackupStep.DUMP, "died"),
        "mark_locked": lambda: catalog.mark_locked(backup_id, "another backup is running"),
        "mark_verified": lambda: catalog.mark_verified(
            backup_id, started_at=now, finished_at=now, keys=[]
        ),
        "mark_corrupt": lambda: catalog.mark_corrupt(
            backup_id,
            started_at=now,
            finished_at=now,
            problems=[{"key": "k", "problem": "size", "detail": "short"}],
        ),
        "mark_deleting": lambda: catalog.mark_deleting(backup_id),
        "mark_deleted": lambda: catalog.mark_deleted(backup_id),
        "pin": lambda: catalog.pin(backup_id, now + timedelta(days=1), "kept"),
        "unpin": lambda: catalog.unpin(backup_id),
    }
    assert set(calls) == set(TRANSITIONS)
    return calls[transition]()


@pytest.fixture(scope="module")
def sqlite_catalog(tmp_path_factory):
    return Catalog(f"sqlite:///{tmp_path_factory.mktemp('transitions') / 'c.db'}")


@pytest.mark.parametrize("status", list(BackupStatus))
@pytest.mark.parametrize("transition", sorted(TRANSITIONS))
def test_each_transition_moves_only_from_the_statuses_it_names(sqlite_catalog, transition, status):
    catalog = sqlite_catalog
    backup_id = f"{transition}-{status}"
    move(catalog, backup_id, "start")
    for step in PATHS[status]:
        move(catalog, backup_id, step)
    before = catalog.get_backup(backup_id)
    assert before.status == status
    allowed, to = TRANSITIONS[transition]
    if status in allowed:
        assert move(catalog, backup_id, transition).status == (to or status)  # None: it stays
    else:
        # pin and unpin are the operator's (`runbook backups pin`): a PinError, exit 2
        refused = PinError if to is None else BackupTransitionError
        with pytest.raises(refused, match=f"backup {backup_id} is {status}"):
            move(catalog, backup_id, transition)
        assert catalog.get_backup(backup_id) == before  # nothing changed


def test_start_counts_attempts_and_forgets_the_last_failure(sqlite_catalog):
    catalog = sqlite_catalog
    move(catalog, "retried", "start")
    catalog.mark_failed("retried", BackupStep.STORE, "TransientStorageError: 500")
    again = move(catalog, "retried", "start")
    assert again.attempts == 2 and again.status == BackupStatus.RUNNING
    assert again.error is None and again.failed_step is None and again.finished_at is None


def test_import_stored_records_an_unknown_backup_from_its_manifest(sqlite_catalog):
    at = utcnow() - timedelta(days=3)
    record = sqlite_catalog.import_stored(manifest("found", at, artifacts=2), "local:/x")
    assert record.status == BackupStatus.STORED and record.started_at == at
    assert record.error == "imported from storage; not yet verified"
    assert record.bytes_stored == 20 and record.bytes_logical == 80
    assert record.manifest_key == "app/found/manifest.json"
    assert [a.key for a in record.artifacts] == [
        "app/found/database.pgdump.zst",
        "app/found/schema-s1.pgdump.zst",
    ]


def test_transitions_of_an_unknown_id_say_so(sqlite_catalog):
    with pytest.raises(NotFoundError, match="unknown backup id 'ghost'"):
        sqlite_catalog.mark_failed("ghost", BackupStep.DUMP, "x")


def test_head_revision_constant_matches_alembic():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from runbook.catalog import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_models_and_migrations_agree(tmp_path):
    """Autogenerate finds nothing to do: the migration creates exactly the models' schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from runbook.catalog import Base

    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    with catalog.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_opening_a_new_catalog_together_migrate_it_once(backend, tmp_path, pg15):
    """A worker starting two flow runs on a new catalog: each opens it, one migrates."""
    import subprocess
    import sys

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.db'}"
    else:
        name = pg15.create_database("rbmigrate")
        url = pg15.url(name)
    code = "import sys; from runbook.catalog import Catalog; Catalog(sys.argv[1]).close()"
    try:
        processes = [
            subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=120)[1] for p in processes]
        assert [p.returncode for p in processes] == [0, 0, 0, 0], errors
        catalog = Catalog(url)
        assert current_revision(catalog.engine) == HEAD_REVISION
        catalog.close()
    finally:
        if backend == "postgresql":
            pg15.drop_database(name)


@pytest.mark.parametrize("backend", ["file", "advisory"])
def test_named_lock_excludes_and_times_out(backend, tmp_path, pg15):
    url = f"sqlite:///{tmp_path / 'c.db'}" if backend == "file" else pg15.url("postgres")
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with named_lock(url, "backup-app", timeout=5):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(5)
    started = time.monotonic()
    with pytest.raises(LockTimeout, match="backup-app"), named_lock(url, "backup-app", 0.5):
        pass
    assert 0.4 < time.monotonic() - started < 3
    with named_lock(url, "backup-other", 0.5) as waited:  # other names are independent
        assert waited < 0.5
    release.set()
    thread.join()
    with named_lock(url, "backup-app", 1) as waited:
        assert waited < 1
