"""What the maintenance procedures read of a files target's paths (security_audit's modes,
config_drift's checksums): the entries a backup of the target archives, walked the same way
(a configured path is followed when it is a symlink, links below it are not, `exclude`
patterns match the whole path or the name), each named as the backup's tar names it (the
absolute path without its leading '/'); and which files look like secrets.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runbook.config import FilesTarget

READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    path: Path
    info: os.stat_result  # lstat, except for a configured path (followed)

    @property
    def member(self) -> str:
        """The name the backup's tar (and its manifest's file_checksums) gives the entry."""
        return str(self.path).lstrip("/")


def looks_secret(path: str | Path, patterns: list[str]) -> bool:
    """Does the file's name (or its whole path) match one of `patterns`, in any case?
    `.env`, `*secret*`, `*.key` by default (config_drift.secret_files)."""
    text = str(path).lower()
    name = os.path.basename(text)
    return any(
        fnmatch.fnmatchcase(name, p.lower()) or fnmatch.fnmatchcase(text, p.lower())
        for p in patterns
    )


def _excluded(path: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(path, p) or fnmatch.fnmatch(os.path.basename(path), p) for p in patterns
    )


def walk_entries(target: FilesTarget) -> Iterator[Entry]:
    """Every entry of the target's paths a backup archives (files, folders, links), in order.
    A path or folder that vanished mid-walk is left out; a configured path that does not
    exist raises FileNotFoundError (the backup refuses it too)."""
    for root in target.paths:
        info = os.stat(root)  # followed: `/etc/myapp -> /opt/myapp/conf` is the folder
        if not _excluded(str(root), target.exclude):
            yield Entry(root, info)
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                path = Path(dirpath) / name
                if _excluded(str(path), target.exclude):
                    continue
                try:
                    yield Entry(path, os.lstat(path))
                except FileNotFoundError:
                    continue


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
