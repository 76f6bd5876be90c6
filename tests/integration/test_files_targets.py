"""Files targets on real files (issue 15, item 5): verification streams tar members, a
configured symlink to a folder is followed, an empty archive is no backup unless allowed, a
file that vanishes mid-backup is a warning, not a failure."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
import threading

import pytest
import zstandard

from runbook.catalog import BackupStatus, BackupStep
from runbook.manifest import new_backup_id, read_manifest
from runbook.runtime import open_runtime
from runbook.storage.local import LocalStorage
from tasks.backups.dump import run_backup, stream_tar
from tasks.backups.verify import verify_backup

MIB = 1024 * 1024

VERIFY_IN_A_CHILD = textwrap.dedent(
    """
    import sys
    from runbook.runtime import open_runtime
    from tasks.backups.verify import verify_backup
    runtime = open_runtime(sys.argv[1])
    report = verify_backup(runtime.catalog, runtime.storage, sys.argv[2])
    sys.exit(0 if report.ok else 1)
    """
)


def backup(runtime, target: str, storage=None):
    backup_id = new_backup_id()
    outcome = run_backup(
        runtime.config,
        runtime.config.target(target),
        runtime.catalog,
        storage or runtime.storage,
        backup_id,
    )
    return outcome.record


def members(runtime, record) -> dict[str, tarfile.TarInfo]:
    path = runtime.config.storage.path / record.artifacts[0].key
    data = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def peak_rss_of_verification(config, backup_id: str) -> int:
    """Verify in a child process; its peak resident set size in bytes (from wait4)."""
    child = subprocess.Popen([sys.executable, "-c", VERIFY_IN_A_CHILD, str(config), backup_id])
    _pid, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, "verification failed"
    return usage.ru_maxrss * 1024  # kilobytes on Linux


def test_verifying_a_large_file_keeps_memory_flat(tmp_path, write_config):
    """A 400 MiB file (sparse: zeros, so the test stays quick) costs the verifying process no
    more memory than a 1 KiB one, give or take a few buffers."""
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()
    (small / "a.conf").write_bytes(b"x" * 1024)
    with open(large / "disk.img", "wb") as handle:
        handle.truncate(400 * MIB)
    config = write_config(
        {
            "files": [
                {"name": "small", "paths": ["small"]},
                {"name": "large", "paths": ["large"]},
            ]
        },
        backup={"compression_level": 1},
    )
    runtime = open_runtime(config)
    baseline = peak_rss_of_verification(config, backup(runtime, "small").id)
    peak = peak_rss_of_verification(config, backup(runtime, "large").id)
    assert peak - baseline < 64 * MIB, f"peak {peak / MIB:.0f} MiB vs {baseline / MIB:.0f} MiB"


def test_a_configured_symlink_to_a_folder_is_followed_and_links_inside_stay_links(
    tmp_path, write_config
):
    real = tmp_path / "opt" / "myapp" / "conf"
    real.mkdir(parents=True)
    (real / "app.conf").write_text("port = 8080\n")
    (real / "current.conf").symlink_to("app.conf")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "myapp").symlink_to(real)  # /etc/myapp -> /opt/myapp/conf
    config = write_config({"files": [{"name": "conf", "paths": ["etc/myapp"]}]})
    runtime = open_runtime(config)
    record = backup(runtime, "conf")
    assert verify_backup(runtime.catalog, runtime.storage, record.id).ok

    root = str(tmp_path / "etc" / "myapp").lstrip("/")
    found = members(runtime, record)
    assert found[root].isdir()
    assert found[f"{root}/app.conf"].isreg() and found[f"{root}/app.conf"].size == 12
    assert found[f"{root}/current.conf"].issym()
    assert found[f"{root}/current.conf"].linkname == "app.conf"
    assert read_manifest(runtime.storage, "conf", record.id).source["files"] == 1


def test_an_archive_without_files_is_a_failed_backup_unless_allowed(tmp_path, write_config):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.swp").write_text("swap")
    targets = {
        "files": [
            {"name": "empty", "paths": ["empty"]},
            {"name": "excluded", "paths": ["junk"], "exclude": ["*.swp"]},
            {"name": "allowed", "paths": ["empty"], "allow_empty": True},
        ]
    }
    runtime = open_runtime(write_config(targets))
    for name in ("empty", "excluded"):
        backup_id = new_backup_id()
        with pytest.raises(Exception, match="no files"):
            run_backup(
                runtime.config,
                runtime.config.target(name),
                runtime.catalog,
                runtime.storage,
                backup_id,
            )
        record = runtime.catalog.get_backup(backup_id)
        assert (record.status, record.failed_step) == (BackupStatus.FAILED, BackupStep.DUMP)
        assert "allow_empty" in record.error
        assert list(runtime.storage.list(f"{name}/")) == []
    allowed = backup(runtime, "allowed")
    assert verify_backup(runtime.catalog, runtime.storage, allowed.id).ok


class DeletingStorage(LocalStorage):
    """Deletes `victim` once the archive has started to arrive: after the tar listed the
    folder, before it reaches the file."""

    def __init__(self, root, victim):
        super().__init__(root)
        self.victim = victim
        self.done = threading.Event()

    def put(self, key, chunks):
        def deleting():
            for chunk in chunks:
                if not self.done.is_set():
                    self.victim.unlink()
                    self.done.set()
                yield chunk

        return super().put(key, deleting())


def test_a_file_that_vanishes_during_the_backup_is_a_warning(tmp_path, write_config):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "a-big.bin").write_bytes(os.urandom(64 * MIB))  # keeps tar busy past the listing
    (etc / "b.conf").write_text("kept\n")
    (etc / "z-late.conf").write_text("gone before tar reads it\n")
    config = write_config(
        {"files": [{"name": "conf", "paths": ["etc"]}]}, backup={"compression_level": 1}
    )
    runtime = open_runtime(config)
    storage = DeletingStorage(runtime.config.storage.path, etc / "z-late.conf")

    record = backup(runtime, "conf", storage)

    assert storage.done.is_set()
    assert record.status == BackupStatus.STORED
    assert verify_backup(runtime.catalog, runtime.storage, record.id).ok
    manifest = read_manifest(runtime.storage, "conf", record.id)
    assert manifest.source["files"] == 2
    assert manifest.warnings == [f"{etc / 'z-late.conf'}: vanished before it was read (skipped)"]
    names = members(runtime, record)
    assert str(etc / "b.conf").lstrip("/") in names
    assert str(etc / "z-late.conf").lstrip("/") not in names


def test_a_file_that_shrinks_while_it_is_read_is_padded_and_noted(tmp_path):
    """As GNU tar does: the header already promised the old size, so the member keeps it
    (zeros after the new end) and the archive stays readable; a warning says so."""
    etc = tmp_path / "etc"
    etc.mkdir()
    log_file = etc / "app.log"
    log_file.write_bytes(b"x" * (32 * MIB))
    warnings: list[str] = []
    stats: dict[str, int] = {}
    data = bytearray()
    for chunk in stream_tar([etc], [], stats, warnings):
        if not data:  # tar holds at most a few MiB ahead of this: the rest is read after
            os.truncate(log_file, MIB)
        data += chunk

    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        member = tar.getmember(str(log_file).lstrip("/"))
        body = tar.extractfile(member).read()
    assert member.size == len(body) == 32 * MIB
    kept = body.rstrip(b"\0")  # what tar had read before the cut, then zeros
    assert MIB <= len(kept) < 32 * MIB and kept == b"x" * len(kept)
    assert warnings == [f"{log_file}: shrank while it was read (padded with zeros)"]
    assert stats["files"] == 1
