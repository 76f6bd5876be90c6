"""The catalog on SQLite and on PostgreSQL, its migrations, and the per-target locks."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from runbook.catalog import (
    COMMITTED,
    HEAD_REVISION,
    ArtifactRecord,
    BackupStatus,
    Catalog,
    current_revision,
    utcnow,
)
from runbook.errors import NotFoundError
from runbook.locks import LockTimeout, named_lock


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path, pg15):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    name = pg15.create_database("rbcatalog")
    yield pg15.url(name)
    pg15.drop_database(name)


def artifact(key: str) -> ArtifactRecord:
    return ArtifactRecord(
        name="database",
        key=key,
        content="pg_dump-custom",
        codec="zstd",
        bytes=10,
        logical_bytes=40,
        sha256="ab" * 32,
    )


def test_lifecycle_and_queries(catalog_url):
    catalog = Catalog(catalog_url)
    assert current_revision(catalog.engine) == HEAD_REVISION
    now = utcnow()
    for i, status in enumerate(
        [BackupStatus.VERIFIED, BackupStatus.FAILED, BackupStatus.VERIFIED, BackupStatus.CORRUPT]
    ):
        backup_id = f"b{i}"
        catalog.create_backup(
            backup_id=backup_id,
            target="app",
            kind="postgres",
            storage="local:/x",
            started_at=now + timedelta(minutes=i),
        )
        catalog.add_artifact(backup_id, artifact(f"app/{backup_id}/database.pgdump.zst"))
        catalog.update_backup(backup_id, status=status, finished_at=now + timedelta(minutes=i))

    assert [b.id for b in catalog.list_backups(statuses=COMMITTED)] == ["b3", "b2", "b0"]
    assert catalog.latest_backup("app").id == "b2"
    record = catalog.get_backup("b2")
    assert record.started_at.tzinfo is not None and record.artifacts[0].bytes == 10
    catalog.record_artifact_check("b2", "app/b2/database.pgdump.zst", verified_at=now, problem=None)
    assert catalog.get_backup("b2").artifacts[0].verified_at == now
    catalog.add_verification(
        "b2",
        started_at=now,
        finished_at=now,
        ok=False,
        problems=[{"key": "k", "problem": "checksum"}],
    )
    assert catalog.verifications("b2")[0].problems == [{"key": "k", "problem": "checksum"}]
    catalog.clear_artifacts("b2")
    assert catalog.get_backup("b2").artifacts == []
    catalog.update_backup("b0", status=BackupStatus.DELETED)
    assert "b0" not in [b.id for b in catalog.list_backups()]
    assert "b0" in [b.id for b in catalog.list_backups(include_deleted=True)]
    with pytest.raises(NotFoundError, match="unknown backup id 'nope'"):
        catalog.get_backup("nope")
    # Reopening an up-to-date catalog is idempotent.
    assert Catalog(catalog_url).get_backup("b2").status == BackupStatus.VERIFIED


def test_naive_datetimes_are_refused(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(Exception, match="naive datetime"):
        catalog.create_backup(
            backup_id="x",
            target="t",
            kind="files",
            storage="s",
            started_at=utcnow().replace(tzinfo=None),
        )


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
