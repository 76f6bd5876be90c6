"""Files restores and files drills (issue 16): the tree comes back equal (content, modes,
times, links), every file is checked against the sha256 recorded at backup time, a damaged
member is named, members that escape the folder are refused, the original paths are never
written without --in-place."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from runbook.catalog import RestoreStatus
from runbook.manifest import read_manifest
from runbook.runtime import open_runtime
from tasks.drills.files import check_tree, extract_tree
from tasks.restore.download import download_backup
from tasks.restore.plan import RestoreRefused
from tests.integration.test_drill_core import check, drill, take_backup
from tests.integration.test_restore_core import restore


def make_tree(root: Path) -> Path:
    etc = root / "etc" / "myapp"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "app.conf").write_text("port = 8080\n")
    (etc / "secret.key").write_bytes(os.urandom(2048))
    (etc / "secret.key").chmod(0o600)
    (etc / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (etc / "run.sh").chmod(0o755)
    (etc / "conf.d" / "extra.conf").write_text("x = 1\n")
    (etc / "current.conf").symlink_to("app.conf")
    (etc / "shared").symlink_to("/usr/share")  # a link out of the tree: restored as a link
    os.utime(etc / "app.conf", (1_700_000_000, 1_700_000_000))
    os.utime(etc / "conf.d", (1_600_000_000, 1_600_000_000))
    return etc


def tree(root: Path) -> dict[str, tuple]:
    """What a restore must reproduce, per path below `root`."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = os.lstat(path)
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        found[str(path.relative_to(root))] = (
            kind,
            stat.S_IMODE(info.st_mode),
            os.readlink(path) if kind == "link" else None,
            path.read_bytes() if kind == "file" else None,
            int(info.st_mtime) if kind != "link" else None,
        )
    return found


@pytest.fixture
def files_runtime(tmp_path, write_config):
    etc = make_tree(tmp_path / "src")
    config = write_config({"files": [{"name": "conf", "paths": [str(etc)], "rto": "15m"}]})
    return open_runtime(config), etc


def test_a_files_restore_equals_the_original_tree(files_runtime, tmp_path):
    runtime, etc = files_runtime
    backup_id = take_backup(runtime, "conf")
    recorded = read_manifest(runtime.storage, "conf", backup_id).source["file_checksums"]
    assert {Path(f["path"]).name for f in recorded} == {
        "app.conf",
        "secret.key",
        "run.sh",
        "extra.conf",
    }
    assert all(len(f["sha256"]) == 64 for f in recorded)
    into = tmp_path / "restored"

    record = restore(runtime, target="conf", into=str(into))

    assert record.status == RestoreStatus.RESTORED, (record.error, record.checks)
    assert tree(into / str(etc).lstrip("/")) == tree(etc)
    assert check(record, "file checksums").detail.startswith("4 of 4 files match")
    assert record.rto_seconds > 0 and record.kind == "files" and record.into == str(into)


def test_files_restore_refusals(files_runtime, tmp_path):
    runtime, etc = files_runtime
    take_backup(runtime, "conf")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(RestoreRefused, match="not empty"):
        restore(runtime, target="conf", into=str(busy))
    with pytest.raises(RestoreRefused, match="original paths"):
        restore(runtime, target="conf", into="/")
    with pytest.raises(RestoreRefused, match="confirmation needed"):
        restore(runtime, target="conf", into="", overwrite="in-place")
    assert (busy / "keep.txt").read_text() == "mine"

    # --in-place, confirmed: the originals come back over a bad edit.
    before = tree(etc)
    (etc / "app.conf").write_text("port = broken\n")
    (etc / "run.sh").chmod(0o644)
    record = restore(runtime, target="conf", into="", overwrite="in-place", confirmed=True)
    assert record.restored, (record.error, record.checks)
    assert tree(etc) == before


def test_a_damaged_member_is_named(files_runtime, tmp_path):
    """The archive passed verification (as archived), but a file came out different: the
    per-file check names it. The damage is made in the downloaded tar, same size."""
    runtime, etc = files_runtime
    backup_id = take_backup(runtime, "conf")
    manifest = read_manifest(runtime.storage, "conf", backup_id)
    archive = download_backup(runtime.catalog, runtime.storage, backup_id, tmp_path / "dl").files[0]
    data = bytearray(archive.read_bytes())
    at = data.index(b"port = 8080")
    data[at : at + 11] = b"port = 6666"
    archive.write_bytes(bytes(data))

    into = tmp_path / "out"
    checks = check_tree(into, manifest.source, extract_tree(archive, into))

    failing = [c for c in checks if not c.ok]
    member = str(etc / "app.conf").lstrip("/")
    assert [c.name for c in failing] == [f"file {member}", "file checksums"]
    assert "does not match the recorded" in failing[0].detail
    assert "3 of 4 files match" in failing[1].detail


def test_members_that_escape_the_folder_are_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for name, kind, link in [
            ("ok.txt", tarfile.REGTYPE, ""),
            ("../escaped.txt", tarfile.REGTYPE, ""),
            ("/abs.txt", tarfile.REGTYPE, ""),
            ("out", tarfile.SYMTYPE, str(tmp_path)),  # a link out is kept as a link...
            ("out/through-link.txt", tarfile.REGTYPE, ""),  # ...never written through
            ("hard", tarfile.LNKTYPE, "../../etc/passwd"),
        ]:
            member = tarfile.TarInfo(name)
            member.type, member.linkname = kind, link
            body = b"x" if kind == tarfile.REGTYPE else b""
            member.size = len(body)
            tar.addfile(member, io.BytesIO(body))
    into = tmp_path / "into"

    done = extract_tree(archive, into)

    assert (into / "ok.txt").read_bytes() == b"x" and (into / "out").is_symlink()
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "through-link.txt").exists()
    assert [r.split(":")[0] for r in done.refused] == [
        "../escaped.txt",
        "/abs.txt",
        "out/through-link.txt",
        "hard",
    ]
    checks = check_tree(into, {"file_checksums": []}, done)
    assert checks[0].name == "tar members" and not checks[0].ok


def test_a_drill_of_a_files_target(files_runtime):
    runtime, etc = files_runtime
    backup_id = take_backup(runtime, "conf")

    record = drill(runtime, "conf")

    assert record.passed, [c for c in record.checks if not c.ok]
    assert record.backup_id == backup_id
    assert check(record, "file checksums").ok
    assert record.rto_target_seconds == 900 and 0 < record.rto_seconds < 900
    assert record.rpo_seconds >= 0 and record.scratch is None
    assert not any(p.startswith("runbook-drill-conf-") for p in os.listdir("/tmp"))


def test_a_drill_of_a_backup_without_per_file_checksums_says_so(files_runtime):
    """A backup taken before Runbook recorded per-file checksums: the drill restores it but
    cannot check it file by file, and says so rather than pass."""
    runtime, _ = files_runtime
    backup_id = take_backup(runtime, "conf")
    record = runtime.catalog.get_backup(backup_id)
    key = record.manifest_key
    path = runtime.config.storage.path / key
    text = path.read_text()
    import json

    raw = json.loads(text)
    del raw["source"]["file_checksums"]
    path.write_text(json.dumps(raw, indent=2))
    # as an old backup's row: committed before the catalog kept manifest seals
    from runbook.catalog.backups import BackupRow

    with runtime.catalog.session() as session:
        row = session.get(BackupRow, backup_id)
        row.manifest_sha256, row.manifest_parts = None, None

    result = drill(runtime, "conf")

    assert not result.passed
    found = check(result, "file checksums")
    assert not found.ok and "taken before Runbook recorded a sha256 per file" in found.detail
