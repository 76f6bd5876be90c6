"""Configuration and operator mistakes, and faults that are not worth a retry (issue 15,
item 6): each is one line naming the problem (exit 2, no traceback) from the real `runbook`
command, or one clear error recorded for the backup."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runbook.catalog import BackupStatus, BackupStep
from runbook.manifest import new_backup_id
from runbook.retry import is_transient
from runbook.runtime import open_runtime
from runbook.storage import StorageError
from tasks.backups.dump import run_backup
from tests.support.s3 import make_bucket

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = str(Path(sys.executable).parent / "runbook")
MIB = 1024 * 1024


def limit_memory() -> None:  # the child may not take the machine down if it regresses
    resource.setrlimit(resource.RLIMIT_AS, (3 * 1024 * MIB, 3 * 1024 * MIB))


def runbook(*args: str, timeout: float = 60, bounded: bool = False) -> tuple[int, str, str, float]:
    """The real command in a child process: (exit code, stdout, stderr, seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    started = time.monotonic()
    done = subprocess.run(
        [RUNBOOK, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        preexec_fn=limit_memory if bounded else None,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def assert_one_line(code: int, out: str, err: str, *expected: str) -> None:
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in out + err
    for text in expected:
        assert text in lines[0], lines[0]


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 10):
        refs = ", ".join([f"*a{n - 1}"] * 9)
        levels.append(f"a{n}: &a{n} [{refs}]")
    config = tmp_path / "runbook.yaml"
    config.write_text("\n".join(["x-bomb:", *("  " + line for line in levels)]) + "\n")
    code, out, err, seconds = runbook(
        "check-config", "--config", str(config), timeout=30, bounded=True
    )
    assert_one_line(code, out, err, "runbook.yaml", "alias")
    assert seconds < 10


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    config = tmp_path / "runbook.yaml"
    config.write_text(
        "catalog: sqlite:///catalog.db\n"
        "retention: {keep_last: 30}\n"
        "targets:\n"
        "  files:\n"
        "    - {name: conf, paths: [.]}\n"
        "retention: {keep_last: 1}\n"
    )
    code, out, err, _ = runbook("check-config", "--config", str(config))
    assert_one_line(code, out, err, "'retention'", "line 2", "line 6")


def test_a_config_file_that_is_not_utf8(tmp_path):
    config = tmp_path / "runbook.yaml"
    config.write_bytes("catalog: sqlite:///catalog.db\n# caf\xe9\n".encode("latin-1"))
    code, out, err, _ = runbook("check-config", "--config", str(config))
    assert_one_line(code, out, err, "runbook.yaml", "UTF-8")


@pytest.mark.parametrize("command", [["backups", "list"], ["backup"]])
def test_a_catalog_file_that_is_not_a_database(command, tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "catalog.db").write_bytes(b"this is a text file, not SQLite\n" * 100)
    config = tmp_path / "runbook.yaml"
    config.write_text(
        "catalog: sqlite:///catalog.db\n"
        "storage: {kind: local, path: backups}\n"
        "targets: {files: [{name: conf, paths: [etc]}]}\n"
    )
    code, out, err, _ = runbook(*command, "--config", str(config))
    assert_one_line(code, out, err, "catalog.db", "not a database")


def test_a_drill_of_a_files_target(tmp_path):
    (tmp_path / "etc").mkdir()
    config = tmp_path / "runbook.yaml"
    config.write_text(
        "catalog: sqlite:///catalog.db\n"
        "storage: {kind: local, path: backups}\n"
        "targets: {files: [{name: conf, paths: [etc]}]}\n"
    )
    # Files targets are drilled like the others now (issue 16): no longer refused for their
    # kind, the request goes through the same checks (the drill itself:
    # tests/integration/test_restore_files.py).
    code, out, err, _ = runbook("drill", "-t", "conf", "--backup", "nope", "--config", str(config))
    assert_one_line(code, out, err, "unknown backup id 'nope'")
    assert "files target" not in err


# --- faults a retry cannot cure, and the first cause of one that failed ---------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (needs the right to mount: root, as on the CI machines)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_clear_error_and_never_retried(small_disk, tmp_path, write_config):
    data = tmp_path / "data"
    data.mkdir()
    (data / "blob.bin").write_bytes(os.urandom(8 * MIB))  # twice the disk, incompressible
    config = write_config(
        {"files": [{"name": "vm", "paths": ["data"]}]},
        storage={"kind": "local", "path": str(small_disk)},
        backup={"compression_level": 1},
    )
    runtime = open_runtime(config)
    backup_id = new_backup_id()
    with pytest.raises(StorageError) as caught:
        run_backup(
            runtime.config, runtime.config.target("vm"), runtime.catalog, runtime.storage, backup_id
        )
    assert not is_transient(caught.value)  # Prefect's retry condition says no
    assert "No space left on device" in str(caught.value)
    record = runtime.catalog.get_backup(backup_id)
    assert (record.status, record.failed_step) == (BackupStatus.FAILED, BackupStep.STORE)
    assert "No space left on device" in record.error
    assert [p for p in small_disk.rglob("*") if p.is_file()] == []  # its temp file is gone


def test_after_an_s3_outage_the_recorded_error_is_the_uploads(
    tmp_path, write_config, moto_server, faulty_s3_proxy
):
    every = ("GET", "PUT", "POST", "DELETE", "HEAD")
    proxy = faulty_s3_proxy(fail_first=10**6, methods=every)  # S3 is down, for everything
    storage = make_bucket(moto_server).model_dump(mode="json") | {
        "endpoint_url": proxy.endpoint_url,
        "max_attempts": 1,
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("x = 1\n")
    config = write_config({"files": [{"name": "conf", "paths": ["etc"]}]}, storage=storage)
    runtime = open_runtime(config)
    backup_id = new_backup_id()
    with pytest.raises(StorageError) as caught:
        target = runtime.config.target("conf")
        run_backup(runtime.config, target, runtime.catalog, runtime.storage, backup_id)
    assert "PutObject" in str(caught.value)
    record = runtime.catalog.get_backup(backup_id)
    assert record.failed_step == BackupStep.STORE
    assert "PutObject" in record.error and "ListObjectsV2" not in record.error
