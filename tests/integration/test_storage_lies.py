"""Storage is not trusted (issue 15, items 1 and 2): a manifest edited, relabelled, planted or
made invalid in storage is found by verification and refused by import, and retention never
lets a backup that only claims to be good cost the one that is."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from runbook.catalog import BackupStatus, BackupStep, utcnow
from runbook.manifest import Manifest, manifest_key, new_backup_id
from runbook.runtime import open_runtime
from tasks.backups.dump import run_backup
from tasks.backups.retention import apply_retention, collect_garbage, make_plan
from tasks.backups.verify import verify_backup


def backup_verified(runtime, target: str):
    """One backup of `target`, verified; its catalog record."""
    backup_id = new_backup_id()
    run_backup(
        runtime.config, runtime.config.target(target), runtime.catalog, runtime.storage, backup_id
    )
    assert verify_backup(runtime.catalog, runtime.storage, backup_id).ok
    return runtime.catalog.get_backup(backup_id)


@pytest.fixture
def files_runtime(tmp_path, write_config):
    """A files target `conf` (two files) with local storage; keep_last 1, nothing else."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "app.conf").write_text("port = 8080\n")
    (etc / "db.conf").write_text("pool = 5\n")
    config = write_config(
        {"files": [{"name": "conf", "paths": ["etc"]}]},
        retention={"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0, "grace": "1h"},
    )
    return open_runtime(config)


def manifest_path(runtime, record) -> Path:
    return runtime.config.storage.path / record.manifest_key


def edit_manifest(runtime, record, change) -> None:
    path = manifest_path(runtime, record)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


# --- 1. verification compares the stored manifest with what the backup committed ----------


def test_a_manifest_whose_source_was_edited_in_storage_is_a_manifest_problem(
    pg15, make_database, write_config
):
    config = write_config({"postgres": [{"name": "app", "dsn": make_database(pg15)}]})
    runtime = open_runtime(config)
    record = backup_verified(runtime, "app")
    assert record.manifest_sha256 and len(record.manifest_sha256) == 64

    def lie(data: dict) -> None:
        data["source"]["row_counts"]["shop.orders"] += 1000
        data["source"]["schema"]["tables"] = data["source"]["schema"]["tables"][:1]

    edit_manifest(runtime, record, lie)
    report = verify_backup(runtime.catalog, runtime.storage, record.id)

    assert not report.ok
    [finding] = [c for c in report.artifacts if c.problem == "manifest"]
    assert finding.key == record.manifest_key
    assert "source.row_counts" in finding.detail and "source.schema" in finding.detail
    assert "not the manifest this backup committed" in finding.detail
    # The artifacts themselves are intact, and are still read back and said to be.
    assert [c.ok for c in report.artifacts if c.problem != "manifest"] == [True]
    after = runtime.catalog.get_backup(record.id)
    assert after.status == BackupStatus.CORRUPT and after.failed_step == BackupStep.VERIFY
    assert after.error.startswith("manifest: ")
    assert [v.ok for v in runtime.catalog.verifications(record.id)] == [True, False]


def test_another_backups_manifest_relabelled_as_this_one_does_not_verify(files_runtime):
    runtime = files_runtime
    older = backup_verified(runtime, "conf")
    newer = backup_verified(runtime, "conf")
    # The newer backup's manifest, relabelled with the older one's id, replaces the older
    # one's; the older one's own archive is deleted.
    data = json.loads(manifest_path(runtime, newer).read_text())
    data["backup_id"] = older.id
    manifest_path(runtime, older).write_text(json.dumps(data, indent=2))
    (runtime.config.storage.path / older.artifacts[0].key).unlink()

    report = verify_backup(runtime.catalog, runtime.storage, older.id)

    assert not report.ok
    problems = {c.problem: c for c in report.problems}
    assert set(problems) == {"manifest", "missing"}
    assert f"outside conf/{older.id}/" in problems["manifest"].detail
    assert problems["missing"].key == older.artifacts[0].key  # what the catalog recorded
    assert runtime.catalog.get_backup(older.id).status == BackupStatus.CORRUPT
    # The newer backup is untouched and still verifies.
    assert verify_backup(runtime.catalog, runtime.storage, newer.id).ok


def test_a_manifest_that_lists_other_artifacts_than_the_catalog_recorded(files_runtime):
    """Same id, valid keys inside its own folder, but not what was committed."""
    runtime = files_runtime
    record = backup_verified(runtime, "conf")

    def swap(data: dict) -> None:
        data["artifacts"][0]["bytes"] += 1
        data["artifacts"][0]["key"] = f"conf/{record.id}/other.tar.zst"

    edit_manifest(runtime, record, swap)
    report = verify_backup(runtime.catalog, runtime.storage, record.id)
    [finding] = [c for c in report.problems if c.problem == "manifest"]
    assert f"conf/{record.id}/files.tar.zst" in finding.detail  # what the catalog recorded
    assert "artifacts" in finding.detail
    assert runtime.catalog.get_backup(record.id).status == BackupStatus.CORRUPT


@pytest.mark.parametrize("damage", ["escaping key", "not json", "another id", "not an object"])
def test_an_invalid_manifest_is_a_recorded_finding_never_a_crash(damage, files_runtime):
    runtime = files_runtime
    record = backup_verified(runtime, "conf")
    path = manifest_path(runtime, record)
    if damage == "escaping key":
        edit_manifest(runtime, record, lambda d: d["artifacts"][0].update(key="../../../x"))
    elif damage == "not json":
        path.write_bytes(b'{"format": "runbook-backup-manifest", \xff')
    elif damage == "another id":
        edit_manifest(runtime, record, lambda d: d.update(backup_id="20200101T000000Z-000000"))
    else:
        path.write_text("[1, 2, 3]")

    report = verify_backup(runtime.catalog, runtime.storage, record.id)

    assert not report.ok
    assert report.problems[0].problem == "manifest"
    assert report.problems[0].key == record.manifest_key
    after = runtime.catalog.get_backup(record.id)
    assert after.status == BackupStatus.CORRUPT and after.error.startswith("manifest: ")
    assert [v.ok for v in runtime.catalog.verifications(record.id)] == [True, False]
    if damage == "escaping key":
        assert "../../../x" in report.problems[0].detail


# --- 2. import from storage never lets a backup vouch for what is not its own ------------


def plant(runtime, real, *, days_ahead: float, own_copy: bool) -> str:
    """A manifest planted in storage under a new id: dated `days_ahead` from now, its archive
    either the real backup's object (a reference outside its folder) or a byte copy of it
    inside its own folder."""
    at = utcnow() + timedelta(days=days_ahead)
    planted_id = new_backup_id(at)
    data = json.loads(manifest_path(runtime, real).read_text())
    data["backup_id"] = planted_id
    data["started_at"] = (at - timedelta(minutes=1)).isoformat()
    data["finished_at"] = at.isoformat()
    if own_copy:
        key = f"conf/{planted_id}/files.tar.zst"
        source = runtime.config.storage.path / real.artifacts[0].key
        target = runtime.config.storage.path / key
        target.parent.mkdir(parents=True)
        target.write_bytes(source.read_bytes())
        data["artifacts"][0]["key"] = key
    runtime.storage.put_bytes(manifest_key("conf", planted_id), json.dumps(data).encode())
    return planted_id


def retention_cycle(runtime) -> None:
    """What the daily retention and the weekly verification do, twice over: plan, delete,
    collect garbage (imports), verify the newest committed backup of the target."""
    for _ in range(2):
        plan = make_plan(
            runtime.catalog, runtime.storage, runtime.config.retention, None, utcnow(), "UTC"
        )
        apply_retention(runtime.catalog, runtime.storage, plan.decisions)
        collect_garbage(runtime.catalog, runtime.storage, plan.garbage)
        newest = runtime.catalog.list_backups(target="conf", statuses=None)[0]
        if newest.committed:
            verify_backup(runtime.catalog, runtime.storage, newest.id)


@pytest.mark.parametrize(
    ("days_ahead", "own_copy", "refusal"),
    [
        (365, False, "outside conf/"),  # the attack of the issue: future, the real object
        (-1, False, "outside conf/"),  # dated in the past, the real object
        (365, True, "in the future"),  # a byte copy of its own, future-dated
    ],
    ids=["future-foreign", "past-foreign", "future-own-copy"],
)
def test_a_planted_manifest_never_costs_the_real_backup(
    days_ahead, own_copy, refusal, files_runtime
):
    runtime = files_runtime
    real = backup_verified(runtime, "conf")
    planted = plant(runtime, real, days_ahead=days_ahead, own_copy=own_copy)

    plan = make_plan(
        runtime.catalog, runtime.storage, runtime.config.retention, None, utcnow(), "UTC"
    )
    [action] = [a for a in plan.garbage.actions if a.backup_id == planted]
    assert action.action == "refuse" and refusal in action.reason
    retention_cycle(runtime)

    survivor = runtime.catalog.get_backup(real.id)
    assert survivor.status == BackupStatus.VERIFIED
    assert all(runtime.storage.exists(a.key) for a in survivor.artifacts)
    assert verify_backup(runtime.catalog, runtime.storage, real.id).ok
    assert planted not in {b.id for b in runtime.catalog.list_backups(include_deleted=True)}


def test_an_honest_folder_the_catalog_forgot_is_still_imported(files_runtime):
    """Storage wins when the folder is a backup of its own, dated in the past."""
    runtime = files_runtime
    real = backup_verified(runtime, "conf")
    found = plant(runtime, real, days_ahead=-2, own_copy=True)
    plan = make_plan(
        runtime.catalog, runtime.storage, runtime.config.retention, None, utcnow(), "UTC"
    )
    collect_garbage(runtime.catalog, runtime.storage, plan.garbage)
    imported = runtime.catalog.get_backup(found)
    assert imported.status == BackupStatus.STORED and imported.manifest_sha256
    assert verify_backup(runtime.catalog, runtime.storage, found).ok


def test_retention_never_deletes_objects_another_kept_backup_references(files_runtime):
    """A catalog from before this check may hold a backup whose artifact is another backup's
    object: that object stays as long as the backup referring to it is kept."""
    runtime = files_runtime
    old = backup_verified(runtime, "conf")
    new = backup_verified(runtime, "conf")
    # A row whose manifest points into the old backup's folder (as an import used to allow).
    borrower = new_backup_id(utcnow() + timedelta(seconds=1))
    manifest = Manifest.model_validate_json(manifest_path(runtime, old).read_text())
    legacy = Manifest.model_construct(
        **{**dict(manifest), "backup_id": borrower, "finished_at": utcnow() + timedelta(seconds=1)}
    )
    runtime.catalog.import_stored(legacy, runtime.storage.describe())
    runtime.catalog.mark_verified(
        borrower, started_at=utcnow(), finished_at=utcnow(), keys=[old.artifacts[0].key]
    )

    plan = make_plan(
        runtime.catalog, runtime.storage, runtime.config.retention, None, utcnow(), "UTC"
    )
    decisions = {d.id: d for d in plan.decisions}
    assert decisions[old.id].action == "keep"
    assert f"referenced by kept backup {borrower}" in "; ".join(decisions[old.id].reasons)
    assert decisions[new.id].action == "delete"
    apply_retention(runtime.catalog, runtime.storage, plan.decisions)
    assert runtime.storage.exists(old.artifacts[0].key)
    assert runtime.catalog.get_backup(new.id).status == BackupStatus.DELETED
