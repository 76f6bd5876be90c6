"""log_archive on a real folder and the local backup storage: rotated logs archived (zstd),
verified from storage and only then deleted; the active log, a file still being appended and
a rotated file a process holds open for writing are never touched; a storage fault (a write
that fails, an object that reads back wrong) leaves every local file in place; archives
expire after keep_days."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import zstandard

from runbook.catalog import MaintenanceStatus, Outcome
from runbook.runtime import open_runtime
from runbook.storage import ObjectInfo, StorageError
from tests.support.maintenance import run_procedures

DAY = 86400


def old_file(path: Path, text: str, days: float) -> Path:
    path.write_text(text)
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp))
    return path


@pytest.fixture
def logs(tmp_path) -> Path:
    folder = tmp_path / "var" / "log" / "app"
    folder.mkdir(parents=True)
    return folder


def config_for(write_config, folder: Path, **archive):
    return write_config(
        maintenance={
            "windows": {"weekly": {"duration": "1h", "procedures": ["log_archive"]}},
            "log_archive": {"paths": [str(folder)], "older_than": "1d", **archive},
        },
    )


@pytest.fixture
def appender(logs) -> Iterator[Path]:
    """A process appending a line to the active log every 20 ms."""
    active = logs / "app.log"
    code = (
        "import sys, time\n"
        "with open(sys.argv[1], 'a', buffering=1) as f:\n"
        "    while True:\n"
        "        f.write('line\\n'); time.sleep(0.02)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(active)])
    try:
        while not active.exists() or active.stat().st_size == 0:
            time.sleep(0.01)
        yield active
    finally:
        proc.kill()
        proc.wait(10)


def test_rotated_logs_are_archived_verified_then_deleted(write_config, logs, appender):
    rotated = [
        old_file(logs / "app.log.1", "yesterday's lines\n" * 5000, 2),
        old_file(logs / "app.log.2", "older lines\n" * 3000, 9),
    ]
    recent = old_file(logs / "app.log.3", "rotated an hour ago\n", 1 / 24)
    other = old_file(logs / "notes.txt", "not a log\n", 40)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in rotated}
    config = config_for(write_config, logs)

    dry = run_procedures(config, ["log_archive"], dry_run=True)
    assert [a.object for a in dry.actions] == [str(p) for p in rotated]
    assert {a.outcome for a in dry.actions} == {Outcome.DRY_RUN}
    assert all(p.exists() for p in rotated)
    assert dry.targets == ["@host"]

    size_before = appender.stat().st_size
    run = run_procedures(config, ["log_archive"], dry_run=False)
    assert run.status == MaintenanceStatus.DONE, run.error
    assert [a.outcome for a in run.actions] == [Outcome.DONE, Outcome.DONE]
    assert not any(p.exists() for p in rotated)
    assert recent.exists() and other.exists()
    assert appender.exists() and appender.stat().st_size >= size_before  # never truncated

    storage = open_runtime(config).storage
    for action in run.actions:
        key = str(action.after["key"])
        assert key.startswith("_logs/") and action.after["verified"] is True
        manifest = json.loads(storage.get_bytes(key + ".manifest.json"))
        stored = storage.get_bytes(key)
        assert hashlib.sha256(stored).hexdigest() == manifest["sha256"]
        original = zstandard.ZstdDecompressor().decompressobj().decompress(stored)
        assert hashlib.sha256(original).hexdigest() == digests[Path(manifest["source"]).name]
        assert manifest["sha256_original"] == digests[Path(manifest["source"]).name]
        assert action.before["bytes"] > int(action.after["stored_bytes"])


def test_a_rotated_file_open_for_writing_is_never_touched(write_config, logs):
    held = old_file(logs / "worker.log.1", "still being written\n", 3)
    code = "import sys, time\nf = open(sys.argv[1], 'a')\nprint('ok', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(held)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ok"
        stamp = time.time() - 3 * DAY  # opening does not touch the mtime; make sure
        os.utime(held, (stamp, stamp))
        run = run_procedures(config_for(write_config, logs), ["log_archive"], dry_run=False)
    finally:
        proc.kill()
        proc.wait(10)
    [action] = run.actions
    assert action.outcome == Outcome.SKIPPED
    assert f"open for writing by pid {proc.pid}" in action.error
    assert held.read_text() == "still being written\n"


class FaultyStorage:
    """The real storage, but writes fail or reads come back with a flipped byte."""

    def __init__(self, real, fault: str) -> None:
        self.real = real
        self.fault = fault

    def __getattr__(self, name):
        return getattr(self.real, name)

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        if self.fault == "put" and not key.endswith(".manifest.json"):
            for _ in chunks:
                pass
            raise StorageError(f"write {key}: 500 Internal Server Error")
        if self.fault == "manifest" and key.endswith(".manifest.json"):
            raise StorageError(f"write {key}: disk full")
        return self.real.put(key, chunks)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return self.put(key, [data])

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.get(key))

    def get(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        for index, chunk in enumerate(self.real.get(key, chunk_size)):
            if self.fault == "corrupt" and index == 0 and not key.endswith(".json"):
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            yield chunk


@pytest.mark.parametrize("fault", ["put", "corrupt", "manifest"])
def test_a_storage_fault_leaves_every_local_file_in_place(write_config, logs, fault, monkeypatch):
    rotated = [
        old_file(logs / "app.log.1", "a\n" * 1000, 2),
        old_file(logs / "app.log.2.gz", "b\n" * 1000, 3),
    ]
    config = config_for(write_config, logs)
    runtime = open_runtime(config)
    monkeypatch.setattr(runtime, "storage", FaultyStorage(runtime.storage, fault))
    run = run_procedures(config, ["log_archive"], dry_run=False)
    assert run.status == MaintenanceStatus.FAILED
    assert [a.outcome for a in run.actions] == [Outcome.FAILED, Outcome.FAILED]
    assert all(p.exists() for p in rotated)
    assert all("left in place" in a.error or "StorageError" in a.error for a in run.actions)
    assert list(runtime.storage.real.list("_logs/")) == [], "no archive without its manifest"


def test_archives_expire_after_keep_days(write_config, logs):
    old_file(logs / "app.log.5", "forty days ago\n", 40)
    fresh = old_file(logs / "app.log.1", "two days ago\n", 2)
    config = config_for(write_config, logs, keep_days=30)
    first = run_procedures(config, ["log_archive"], dry_run=False)
    assert [a.outcome for a in first.actions] == [Outcome.DONE, Outcome.DONE]
    assert not fresh.exists()
    storage = open_runtime(config).storage
    assert len(list(storage.list("_logs/"))) == 4

    second = run_procedures(config, ["log_archive"], dry_run=False)
    [expired] = second.actions
    assert expired.outcome == Outcome.DONE and "app.log.5" in expired.object
    assert "keep_days 30" in expired.reason
    left = [info.key for info in storage.list("_logs/")]
    assert len(left) == 2 and all("app.log.1" in key for key in left)
