"""Retention and a backup that is still running (issue 15, item 3): a running backup whose
process holds the target's lock is alive however old it is; only one whose lock is free is
abandoned."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

import pytest

from runbook.catalog import BackupStatus, utcnow
from runbook.locks import backup_lock, named_lock
from runbook.manifest import new_backup_id
from runbook.runtime import open_runtime
from tasks.backups.dump import run_backup
from tasks.backups.retention import apply_retention, collect_garbage, make_plan
from tasks.backups.verify import verify_backup
from tests.support.s3 import drop_bucket, make_bucket

MIB = 1024 * 1024


class Gate:
    """Wraps a storage: a put stops after `after` bytes until the test opens the gate."""

    def __init__(self, storage, after: int):
        self.storage = storage
        self.after = after
        self.holding = threading.Event()
        self.opened = threading.Event()

    def __getattr__(self, name):
        return getattr(self.storage, name)

    def put(self, key, chunks):
        def gated():
            sent = 0
            for chunk in chunks:
                yield chunk
                sent += len(chunk)
                if sent >= self.after and not self.opened.is_set():
                    self.holding.set()
                    self.opened.wait(120)

        return self.storage.put(key, gated())


@pytest.fixture(params=["local", "s3"])
def storage_section(request, moto_server):
    if request.param == "local":
        yield {"kind": "local", "path": "backups"}
        return
    settings = make_bucket(moto_server)
    yield settings.model_dump(mode="json") | {
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }
    drop_bucket(moto_server, settings.bucket)


def test_retention_never_touches_a_backup_whose_process_holds_the_lock(
    storage_section, tmp_path, write_config
):
    """A files backup held mid-upload (its lock held, a temp file or a multipart upload
    open) for longer than grace: retention keeps it and its upload, and it then commits."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "blob.bin").write_bytes(os.urandom(12 * MIB))  # incompressible: three S3 parts
    config = write_config(
        {"files": [{"name": "vm", "paths": ["data"]}]},
        storage=storage_section,
        backup={"compression_level": 1},
        retention={"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0, "grace": "1s"},
    )
    runtime = open_runtime(config)
    gate = Gate(runtime.storage, after=6 * MIB)  # past the first 5 MiB part
    backup_id = new_backup_id()
    outcome: list = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(
                run_backup(
                    runtime.config, runtime.config.target("vm"), runtime.catalog, gate, backup_id
                )
            )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert gate.holding.wait(60), "the backup never reached the gate"
        time.sleep(2.5)  # now older than grace, and so is its unfinished upload
        plan = make_plan(
            runtime.catalog, runtime.storage, runtime.config.retention, None, utcnow(), "UTC"
        )
        [decision] = [d for d in plan.decisions if d.id == backup_id]
        assert decision.status == "running" and decision.action == "keep"
        assert "holds the target's lock" in decision.reasons[0]
        apply_retention(runtime.catalog, runtime.storage, plan.decisions)
        report = collect_garbage(runtime.catalog, runtime.storage, plan.garbage)
        assert report.incomplete_uploads == 0
        assert runtime.catalog.get_backup(backup_id).status == BackupStatus.RUNNING
    finally:
        gate.opened.set()
        thread.join(120)

    assert errors == []
    assert outcome[0].record.status == BackupStatus.STORED
    assert verify_backup(runtime.catalog, runtime.storage, backup_id).ok


def test_a_running_backup_whose_lock_is_free_is_abandoned_after_grace(write_config, tmp_path):
    """The row a killed backup left: nobody holds the lock, it is older than grace."""
    (tmp_path / "etc").mkdir()
    config = write_config(
        {"files": [{"name": "conf", "paths": ["etc"]}]}, retention={"grace": "1h"}
    )
    runtime = open_runtime(config)
    at = utcnow() - timedelta(hours=2)
    runtime.catalog.start(
        "dead", target="conf", kind="files", storage=runtime.storage.describe(), started_at=at
    )
    runtime.storage.put_bytes("conf/dead/files.tar.zst", b"half an archive")
    runtime.catalog.start(
        "young",
        target="conf",
        kind="files",
        storage=runtime.storage.describe(),
        started_at=utcnow(),
    )
    plan = make_plan(runtime.catalog, runtime.storage, runtime.config.retention, None, utcnow())
    decisions = {d.id: d for d in plan.decisions}
    assert decisions["dead"].action == "delete"
    assert "no process holds the target's lock" in decisions["dead"].reasons[0]
    assert decisions["young"].action == "keep"  # its process may be about to take the lock
    assert apply_retention(runtime.catalog, runtime.storage, plan.decisions) == ["dead"]
    assert not runtime.storage.exists("conf/dead/files.tar.zst")

    # The same row while another process of the target holds the lock: kept.
    runtime.catalog.start(
        "held", target="conf", kind="files", storage=runtime.storage.describe(), started_at=at
    )
    with named_lock(runtime.config.catalog, backup_lock("conf"), 1):  # as its backup would
        plan = make_plan(runtime.catalog, runtime.storage, runtime.config.retention, None, utcnow())
    [held] = [d for d in plan.decisions if d.id == "held"]
    assert held.action == "keep" and "holds the target's lock" in held.reasons[0]
    assert runtime.catalog.get_backup("held").status == BackupStatus.RUNNING
