"""Restoring a files backup: extract the tar into a folder (modes, times and symlinks kept as
links, members that would land outside the folder refused) and check every file against the
sha256 the backup recorded for it (`source.file_checksums` in the manifest). Restores and
drills of files targets both use these."""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook.catalog import RestoreCheck

READ_CHUNK = 1 << 20
MAX_NAMED = 20  # damaged files named one by one; the rest are counted


@dataclass
class Extracted:
    members: int = 0
    refused: list[str] = field(default_factory=list)  # "name: why"


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def escape_problem(member: tarfile.TarInfo, root: str) -> str | None:
    """Why `member` may not be extracted below `root` (already resolved), or None. Symlinks
    already extracted are followed (a link `a -> /etc` then a member `a/passwd` escapes)."""
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        return "an absolute path"
    parts = Path(name).parts
    if ".." in parts:
        return "a path with '..'"
    parent = os.path.realpath(os.path.join(root, os.path.dirname(name)))
    if not _inside(root, os.path.join(parent, os.path.basename(name))):
        return f"lands outside the folder (through {os.path.dirname(name)!r})"
    if member.islnk():
        linked = os.path.realpath(os.path.join(root, member.linkname))
        if not _inside(root, linked):
            return f"a hard link to {member.linkname!r}, outside the folder"
    if member.isdev() or member.isfifo():
        return "a device or fifo"
    return None


def extract_tree(archive: Path, dest: Path) -> Extracted:
    """Extract every member of the tar `archive` below `dest`, keeping modes, modification
    times (folders' too, set last) and owners when run as root; links stay links. A member
    that would land outside `dest` is not extracted and is named in `refused`."""
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    done = Extracted()
    folders: list[tarfile.TarInfo] = []
    with tarfile.open(archive, "r:") as tar:
        for member in tar:
            problem = escape_problem(member, root)
            if problem:
                done.refused.append(f"{member.name}: {problem}")
                continue
            path = os.path.join(root, member.name)
            if member.isdir():
                os.makedirs(path, exist_ok=True)
                folders.append(member)
                continue
            _remove_non_folder(path)  # never write through a link already at that path
            tar.extract(member, root, numeric_owner=True, filter="fully_trusted")
            done.members += 1
        for member in sorted(folders, key=lambda m: m.name, reverse=True):
            path = os.path.join(root, member.name)
            if os.geteuid() == 0:
                tar.chown(member, path, numeric_owner=True)
            tar.chmod(member, path)
            tar.utime(member, path)
    return done


def _remove_non_folder(path: str) -> None:
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_problem(path: Path, expected: dict[str, Any]) -> str | None:
    """How the restored file at `path` differs from what the backup recorded, or None."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "missing from the restored tree"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file in the restored tree"
    if info.st_size != expected["size"]:
        return f"{info.st_size} bytes, the backup recorded {expected['size']}"
    got = _sha256(path)
    if got != expected["sha256"]:
        return f"sha256 {got[:16]}… does not match the recorded {expected['sha256'][:16]}…"
    if "mode" in expected and stat.S_IMODE(info.st_mode) != expected["mode"]:
        return f"mode {stat.S_IMODE(info.st_mode):o}, the backup recorded {expected['mode']:o}"
    return None


def check_tree(dest: Path, source: dict[str, Any], extracted: Extracted) -> list[RestoreCheck]:
    """Every file of the restored tree against the sha256, size and mode recorded at backup
    time; a damaged file is named (`file <path>`). A backup taken before Runbook recorded
    per-file checksums cannot be checked file by file: one failing check says so."""
    checks = []
    if extracted.refused:
        checks.append(
            RestoreCheck(
                name="tar members",
                ok=False,
                detail=f"refused {len(extracted.refused)} member(s) that would land outside "
                f"{dest}: {'; '.join(extracted.refused[:5])}",
            )
        )
    recorded = source.get("file_checksums")
    if recorded is None:
        checks.append(
            RestoreCheck(
                name="file checksums",
                ok=False,
                detail=f"{extracted.members} members restored, none checked: this backup was "
                "taken before Runbook recorded a sha256 per file; take a new backup",
            )
        )
        return checks
    damaged = []
    for expected in recorded:
        problem = file_problem(dest / expected["path"], expected)
        if problem:
            damaged.append((expected["path"], problem))
    for path, problem in damaged[:MAX_NAMED]:
        checks.append(RestoreCheck(name=f"file {path}", ok=False, detail=problem))
    good = len(recorded) - len(damaged)
    more = f" ({len(damaged) - MAX_NAMED} more not named)" if len(damaged) > MAX_NAMED else ""
    checks.append(
        RestoreCheck(
            name="file checksums",
            ok=not damaged,
            detail=f"{good} of {len(recorded)} files match the sha256 recorded at backup time"
            + more,
        )
    )
    return checks
