"""log_archive: runbook 001's weekly log archive, 002's 30-day log retention and 000's weekly
rotation, for the log folders of the host the window runs on (`maintenance.log_archive`).

- measure: in each folder, the files already rotated by their writer (names matching
  `rotated`: `*.log.1`, `*.log-20261122`, `*.gz`) and last modified more than `older_than`
  ago; which of them a process still holds open for writing (/proc/*/fd and fdinfo's flags,
  for the processes this user may see); and the archives in the backup storage (their
  manifests) with the age of the log each holds.
- plan (pure): one destructive action per rotated file to archive, one per archive whose log
  is older than `keep_days` (it expires). A rotated file a process still writes is recorded
  `skipped` with the pid: never touched. The active log (no rotated pattern) and a file
  modified within `older_than` are no candidates at all.
- apply, archive: check the file is unchanged since the plan (size, mtime) and not open for
  writing; stream it through zstd into the storage (sha256 of the original and of the stored
  bytes on the way); read the object back FROM STORAGE, check its sha256 and size and that it
  decodes to the original's sha256; store the manifest and read it back; check the file is
  still unchanged; only then delete it. Any fault before that leaves the file in place.
- apply, expire: delete the archive's manifest (what says it exists), then its object.

Keys: `<prefix>/<host>/<folder>/<name>.<mtime>.zst` beside `....manifest.json`; the mtime in
the name keeps next week's `app.log.1` from overwriting this week's. The prefix starts with
`_`, which no target name does, so backups (`<target>/<id>/...`) never meet archives.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import zstandard

from runbook.catalog.db import utcnow
from runbook.catalog.maintenance import Figure, MaintenanceAction, Outcome
from runbook.config import MaintenanceSettings
from runbook.formatting import human_bytes, human_duration
from runbook.storage import Storage
from runbook.streams import read_back
from tasks.maintenance.procedure import MeasureContext
from tasks.maintenance.targets import HOST, HostSession, HostTarget

ARCHIVE, EXPIRE = "archive", "expire"
READ_SIZE = 1 << 20
BYTES_PER_SECOND = 40 << 20  # zstd + storage write + read-back, measured locally
MANIFEST_SUFFIX = ".manifest.json"
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR


class LogChanged(RuntimeError):
    """The file is not the one the plan saw, or a process writes it: it is left alone."""


@dataclass(frozen=True)
class RotatedLog:
    path: Path
    size: int
    mtime: float  # seconds since the epoch
    writers: tuple[int, ...]  # pids holding it open for writing


@dataclass(frozen=True)
class StoredArchive:
    key: str  # the manifest's key
    object_key: str
    source: str
    stored_bytes: int
    log_mtime: datetime


@dataclass(frozen=True)
class LogFacts:
    host: str
    now: datetime
    logs: list[RotatedLog] = field(default_factory=list)
    archives: list[StoredArchive] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # manifests that did not parse


def open_for_writing() -> dict[tuple[int, int], list[int]]:
    """(device, inode) -> pids holding that file open for writing, from /proc/*/fd and each
    descriptor's fdinfo flags. Processes this user cannot inspect are not seen (hence also the
    mtime rule)."""
    writers: dict[tuple[int, int], list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return writers
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                info = fd.stat()  # follows the link to the open file
                flags = _fd_flags(entry / "fdinfo" / fd.name)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and flags & WRITE_FLAGS:
                writers.setdefault((info.st_dev, info.st_ino), []).append(int(entry.name))
    return writers


def _fd_flags(fdinfo: Path) -> int:
    for line in fdinfo.read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    return 0


def is_rotated(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def find_rotated(
    folder: Path, patterns: list[str], older_than: timedelta, now: datetime
) -> list[tuple[Path, os.stat_result]]:
    """Regular files of the folder (not below it) whose name says their writer rotated them
    and that nobody modified within `older_than`."""
    found = []
    limit = (now - older_than).timestamp()
    for path in sorted(folder.iterdir()):
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or not is_rotated(path.name, patterns):
            continue
        if info.st_mtime > limit:
            continue
        found.append((path, info))
    return found


def archive_key(prefix: str, host: str, path: Path, mtime: float) -> str:
    stamp = datetime.fromtimestamp(mtime, UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = path.parent.as_posix().strip("/") or "root"
    return f"{prefix}/{host}/{folder}/{path.name}.{stamp}.zst"


def stored_archives(
    storage: Storage, prefix: str, host: str
) -> tuple[list[StoredArchive], list[str]]:
    archives, unreadable = [], []
    for info in storage.list(f"{prefix}/{host}/"):
        if not info.key.endswith(MANIFEST_SUFFIX):
            continue
        try:
            manifest = json.loads(storage.get_bytes(info.key))
            archives.append(
                StoredArchive(
                    key=info.key,
                    object_key=manifest["key"],
                    source=manifest["source"],
                    stored_bytes=int(manifest["stored_bytes"]),
                    log_mtime=datetime.fromisoformat(manifest["log_mtime"]),
                )
            )
        except (ValueError, KeyError, TypeError):
            unreadable.append(info.key)
    return archives, unreadable


class LogArchive:
    name: ClassVar[str] = "log_archive"
    destructive: ClassVar[bool] = True
    kinds: ClassVar[tuple[str, ...]] = (HOST,)

    def measure(self, context: MeasureContext) -> LogFacts:
        session: HostSession = context.session
        settings = context.settings.log_archive
        now = utcnow()
        host = socket.gethostname()
        writers = open_for_writing() if settings.paths else {}
        logs = []
        for folder in settings.paths:
            if not folder.is_dir():
                raise FileNotFoundError(f"maintenance.log_archive.paths: no folder {folder}")
            for path, info in find_rotated(folder, settings.rotated, settings.older_than, now):
                pids = tuple(sorted(writers.get((info.st_dev, info.st_ino), [])))
                logs.append(RotatedLog(path, info.st_size, info.st_mtime, pids))
        archives, unreadable = stored_archives(session.storage, settings.prefix, host)
        return LogFacts(host, now, logs, archives, unreadable)

    def plan(
        self, facts: LogFacts, settings: MaintenanceSettings, target: HostTarget
    ) -> list[MaintenanceAction]:
        archive = settings.log_archive
        actions = []
        for log in facts.logs:
            age = facts.now - datetime.fromtimestamp(log.mtime, UTC)
            key = archive_key(archive.prefix, facts.host, log.path, log.mtime)
            writing = (
                f"open for writing by pid {', '.join(map(str, log.writers))}: never touched"
                if log.writers
                else None
            )
            actions.append(
                MaintenanceAction(
                    procedure=self.name,
                    target=target.name,
                    object=str(log.path),
                    statement=f"zstd -{archive.level} > {key}; read back, verify; rm {log.path}",
                    reason=(
                        f"rotated log of {human_bytes(log.size)}, last written "
                        f"{human_duration(age)} ago > {human_duration(archive.older_than)}"
                    ),
                    destructive=True,
                    estimate_seconds=round(0.05 + log.size / BYTES_PER_SECOND, 2),
                    before={
                        "action": ARCHIVE,
                        "path": str(log.path),
                        "bytes": log.size,
                        "mtime": log.mtime,
                        "key": key,
                    },
                    outcome=Outcome.SKIPPED if writing else Outcome.PLANNED,
                    error=writing,
                )
            )
        keep = timedelta(days=archive.keep_days)
        for stored in facts.archives:
            age = facts.now - stored.log_mtime
            if age <= keep:
                continue
            actions.append(
                MaintenanceAction(
                    procedure=self.name,
                    target=target.name,
                    object=stored.object_key,
                    statement=f"delete {stored.key} then {stored.object_key}",
                    reason=(
                        f"archived log {stored.source} is {human_duration(age)} old > "
                        f"keep_days {archive.keep_days}"
                    ),
                    destructive=True,
                    estimate_seconds=0.1,
                    before={
                        "action": EXPIRE,
                        "key": stored.object_key,
                        "manifest": stored.key,
                        "stored_bytes": stored.stored_bytes,
                    },
                )
            )
        return actions

    def apply(self, session: HostSession, action: MaintenanceAction) -> dict[str, Figure]:
        if action.before.get("action") == EXPIRE:
            session.storage.delete(str(action.before["manifest"]))  # no longer listed first
            session.storage.delete(str(action.before["key"]))
            return {"deleted": True}
        return archive_log(session.storage, action, session.settings.log_archive.level)


def _unchanged(path: Path, before: dict[str, Figure]) -> os.stat_result:
    """The file as the plan saw it, and nobody writing it; else LogChanged."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise LogChanged(f"{path} is gone") from None
    if info.st_size != before["bytes"] or info.st_mtime != before["mtime"]:
        raise LogChanged(f"{path} changed since the plan (size or mtime): left in place")
    pids = open_for_writing().get((info.st_dev, info.st_ino))
    if pids:
        raise LogChanged(f"{path} is open for writing by pid {pids[0]}: left in place")
    return info


def _compressed(path: Path, level: int, sums: dict[str, object]) -> Iterator[bytes]:
    original, stored = hashlib.sha256(), hashlib.sha256()
    chunker = zstandard.ZstdCompressor(level=level).chunker(chunk_size=READ_SIZE)
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(READ_SIZE):
            original.update(block)
            size += len(block)
            for out in chunker.compress(block):
                stored.update(out)
                yield out
    for out in chunker.finish():
        stored.update(out)
        yield out
    sums.update(original=original.hexdigest(), stored=stored.hexdigest(), bytes=size)


def archive_log(storage: Storage, action: MaintenanceAction, level: int) -> dict[str, Figure]:
    """Compress, store, verify from storage, store the manifest, then delete the file. On a
    fault the file stays, and what was stored without its manifest is removed (best effort:
    without a manifest it is not an archive, and the next window writes the same key)."""
    path, key = Path(str(action.before["path"])), str(action.before["key"])
    _unchanged(path, action.before)
    try:
        return _archive(storage, path, key, action, level)
    except BaseException:
        with contextlib.suppress(Exception):
            if not storage.exists(key + MANIFEST_SUFFIX):
                storage.delete(key)
        raise


def _archive(
    storage: Storage, path: Path, key: str, action: MaintenanceAction, level: int
) -> dict[str, Figure]:
    sums: dict[str, object] = {}
    stored_info = storage.put(key, _compressed(path, level, sums))
    decoded = hashlib.sha256()
    report = read_back(storage.get(key), decoded.update)
    problems = []
    if not report.ok:
        problems.append(f"does not decode: {report.decode_error}")
    if report.sha256 != sums["stored"] or report.stored_bytes != stored_info.size:
        problems.append("its stored bytes are not those written (sha256)")
    if decoded.hexdigest() != sums["original"] or report.decoded_bytes != sums["bytes"]:
        problems.append("it does not decode to the log (sha256 of the original)")
    if problems:
        raise LogChanged(
            f"archive {key} read back from storage: {'; '.join(problems)}: {path} left in place"
        )
    manifest = {
        "key": key,
        "source": str(path),
        "host": socket.gethostname(),
        "bytes": sums["bytes"],
        "sha256_original": sums["original"],
        "stored_bytes": stored_info.size,
        "sha256": sums["stored"],
        "log_mtime": datetime.fromtimestamp(float(action.before["mtime"]), UTC).isoformat(),
        "archived_at": utcnow().isoformat(),
        "codec": "zstd",
    }
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    storage.put_bytes(key + MANIFEST_SUFFIX, data)
    if storage.get_bytes(key + MANIFEST_SUFFIX) != data:
        raise LogChanged(f"manifest {key}{MANIFEST_SUFFIX} reads back different: left in place")
    _unchanged(path, action.before)  # nobody wrote it meanwhile
    path.unlink()
    return {
        "key": key,
        "stored_bytes": stored_info.size,
        "ratio": round(int(sums["bytes"]) / stored_info.size, 1) if stored_info.size else 0,
        "sha256": str(sums["stored"]),
        "verified": True,
        "deleted": True,
    }
