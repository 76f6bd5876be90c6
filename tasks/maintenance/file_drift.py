"""config_drift's files part: what changed in a files target since its last verified backup.

- measure: the newest verified backup of the target (the catalog), its manifest read from
  storage and checked against the seal the backup committed, and the sha256, size and mode
  the manifest recorded per file (`source.file_checksums`); the target's files now, walked as
  the backup walks them, each hashed. A file is changed when its sha256 differs, added or
  removed when only one side has it. For the diffs, the archived copies of the changed and
  removed text files are read from the stored tar, whose bytes must hash to the manifest's
  sha256 (storage is not trusted), each copy to the sha256 recorded for it.
- plan (pure): one action per file, report only (`skipped`): the change, sizes, short
  checksums and a unified diff of a text file (at most `diff_max_lines` lines, files up to
  `diff_max_bytes`), values of secret-looking keys (`password:`, `token=`, a URL's password)
  masked in it. A file that looks like a secret (`config_drift.secret_files`: `.env`,
  `*secret*`, `*.key`) shows its name and the kind of change only: no content, size or
  checksum of it is read into the ledger, the artifact or the logs.

No verified backup (or one taken before Runbook recorded per-file checksums): one `skipped`
action says so, and what to do.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from runbook.catalog.maintenance import Figure, MaintenanceAction, Outcome
from runbook.config import ConfigDriftSettings, FilesTarget
from runbook.errors import PermanentError
from runbook.manifest import Manifest, read_manifest
from runbook.storage import Storage
from runbook.streams import read_back
from tasks.maintenance.files import Entry, file_sha256, looks_secret, walk_entries
from tasks.maintenance.targets import FilesSession

CHANGED, ADDED, REMOVED = "changed", "added", "removed"
MASK = "***"
_SECRET_KEY = (
    r"[\w.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|private[_-]?key|access[_-]?key"
    r"|credential|auth)[\w.-]*"
)
# `password: x`, `DB_PASSWORD=x`, `"token": "x"`: the key kept, the value masked
_ASSIGNMENT = re.compile(rf"""^(\s*["']?{_SECRET_KEY}["']?\s*[:=]\s*)(\S.*)$""", re.I)
_URL_PASSWORD = re.compile(r"(\w+://[^/\s:@]*:)([^@\s/]+)(@)")


@dataclass(frozen=True)
class FileChange:
    path: str  # absolute
    change: str  # changed, added, removed
    secret: bool
    bytes_before: int | None = None
    bytes_after: int | None = None
    sha256_before: str | None = None
    sha256_after: str | None = None
    diff: str | None = None
    no_diff: str | None = None  # why there is no diff


@dataclass(frozen=True)
class FilesDrift:
    backup_id: str | None
    backed_up_at: str | None  # "2026-12-01 02:00 UTC"
    changes: list[FileChange] = field(default_factory=list)
    missing: str | None = None  # why there is nothing to compare with


def mask_secrets(line: str) -> str:
    """A line of a config file with the values of secret-looking keys and URL passwords
    masked."""
    line = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", line)
    match = _ASSIGNMENT.match(line)
    return f"{match.group(1)}{MASK}" if match else line


def _text(data: bytes) -> str | None:
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def unified_diff(old: str, new: str, path: str, backup_id: str, max_lines: int) -> str:
    """A unified diff, secrets masked, at most `max_lines` lines."""
    lines = list(
        difflib.unified_diff(
            old.splitlines(),
            new.splitlines(),
            fromfile=f"{path} (backup {backup_id})",
            tofile=f"{path} (now)",
            lineterm="",
        )
    )
    body = lines[:2] + [
        line if line.startswith("@@") else line[:1] + mask_secrets(line[1:]) for line in lines[2:]
    ]
    if len(body) > max_lines:
        body = body[:max_lines] + [f"... {len(body) - max_lines} more line(s)"]
    return "\n".join(body)


def _stored_copies(
    storage: Storage, manifest: Manifest, wanted: dict[str, str], max_bytes: int
) -> dict[str, bytes]:
    """The archived bytes of the `wanted` members ({member: recorded sha256}), read from the
    backup's stored tar; only copies that hash to the recorded sha256 are returned. Raises
    PermanentError when the stored tar does not match its manifest."""
    artifact = next((a for a in manifest.artifacts if a.content == "tar"), None)
    if artifact is None:
        raise PermanentError(f"backup {manifest.backup_id} holds no tar artifact")
    found: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="runbook-drift-") as folder:
        path = Path(folder) / "files.tar"
        with open(path, "wb") as sink:
            report = read_back(storage.get(artifact.key), sink.write)
        if not report.ok or report.sha256 != artifact.sha256:
            raise PermanentError(
                f"backup {manifest.backup_id}: the stored archive {artifact.key} does not "
                f"match its manifest ({report.decode_error or 'sha256 differs'}); run "
                f"`runbook backups verify {manifest.backup_id}`"
            )
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.name not in wanted or not member.isreg() or member.size > max_bytes:
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if hashlib.sha256(data).hexdigest() == wanted[member.name]:
                    found[member.name] = data
    return found


def measure_files(session: FilesSession, settings: ConfigDriftSettings) -> FilesDrift:
    target: FilesTarget = session.target
    catalog, storage = session.runtime.catalog, session.runtime.storage
    record = catalog.latest_backup(target.name)
    if record is None:
        return FilesDrift(
            None,
            None,
            missing=f"no verified backup of {target.name} to compare with: take one "
            f"(`runbook backup --target {target.name}`) and the next review shows the changes",
        )
    manifest = read_manifest(storage, target.name, record.id, sealed=record.manifest_seal)
    when = f"{manifest.finished_at:%Y-%m-%d %H:%M:%S} UTC"
    recorded_list = manifest.source.get("file_checksums")
    if recorded_list is None:
        return FilesDrift(
            record.id,
            when,
            missing=f"backup {record.id} was taken before Runbook recorded a sha256 per file: "
            "take a new backup to compare with",
        )
    recorded = {str(e["path"]): e for e in recorded_list}
    current = {e.member: e for e in walk_entries(target) if stat.S_ISREG(e.info.st_mode)}
    secrets = settings.secret_files
    now: dict[str, tuple[str, int]] = {}
    for member, entry in current.items():
        if member in recorded or not looks_secret(entry.path, secrets):
            now[member] = (file_sha256(entry.path), entry.info.st_size)
    changed = [m for m in current if m in recorded and now[m][0] != recorded[m]["sha256"]]
    added = [m for m in current if m not in recorded]
    removed = [m for m in recorded if m not in current]

    def shown(member: str) -> bool:
        return not looks_secret("/" + member, secrets)

    limit = settings.diff_max_bytes
    wanted = {
        m: str(recorded[m]["sha256"])
        for m in changed + removed
        if shown(m) and int(recorded[m]["size"]) <= limit
    }
    copies = _stored_copies(storage, manifest, wanted, limit) if wanted else {}
    changes = []
    for member in sorted(changed + added + removed):
        change = CHANGED if member in changed else (ADDED if member in added else REMOVED)
        path = "/" + member
        if not shown(member):
            changes.append(FileChange(path, change, True, no_diff="a secret: name only"))
            continue
        before = recorded.get(member)
        after = now.get(member)
        changes.append(
            FileChange(
                path,
                change,
                False,
                int(before["size"]) if before else None,
                after[1] if after else None,
                str(before["sha256"]) if before else None,
                after[0] if after else None,
                *_diff(member, change, copies, current, limit, settings, record.id),
            )
        )
    return FilesDrift(record.id, when, changes)


def _diff(
    member: str,
    change: str,
    copies: dict[str, bytes],
    current: dict[str, Entry],
    limit: int,
    settings: ConfigDriftSettings,
    backup_id: str,
) -> tuple[str | None, str | None]:
    """(diff, why there is none) of one non-secret file."""
    old: bytes | None = b""
    if change != ADDED:
        old = copies.get(member)
        if old is None:
            return None, f"larger than {limit} bytes, or no intact archived copy"
    new = b""
    if change != REMOVED:
        path = current[member].path
        if current[member].info.st_size > limit:
            return None, f"larger than {limit} bytes"
        new = path.read_bytes()
    old_text, new_text = _text(old), _text(new)
    if old_text is None or new_text is None:
        return None, "binary"
    return unified_diff(old_text, new_text, "/" + member, backup_id, settings.diff_max_lines), None


def files_actions(drift: FilesDrift, procedure: str, target: str) -> list[MaintenanceAction]:
    """Pure: one report-only action per changed, added or removed file (or one saying why
    there is nothing to compare with)."""
    if drift.missing is not None:
        return [
            MaintenanceAction(
                procedure=procedure,
                target=target,
                object="",
                statement="",
                reason="files changed since the last verified backup",
                before={"backup": drift.backup_id},
                outcome=Outcome.SKIPPED,
                error=drift.missing,
            )
        ]
    actions = []
    since = f"backup {drift.backup_id} ({drift.backed_up_at})"
    for change in drift.changes:
        if change.secret:
            reason = f"{change.change} since {since}; looks like a secret: name only"
        else:
            sizes = (
                f"{change.bytes_before} -> {change.bytes_after} bytes"
                if change.change == CHANGED
                else f"{change.bytes_before or change.bytes_after} bytes"
            )
            reason = f"{change.change} since {since} ({sizes})" + (
                f"; no diff: {change.no_diff}" if change.no_diff else ""
            )
        before: dict[str, Figure] = {
            "change": change.change,
            "backup": drift.backup_id,
            "secret": change.secret,
        }
        if not change.secret:
            before |= {
                "bytes_before": change.bytes_before,
                "bytes_after": change.bytes_after,
                "sha256_before": change.sha256_before[:16] if change.sha256_before else None,
                "sha256_after": change.sha256_after[:16] if change.sha256_after else None,
                "diff": change.diff,
            }
        actions.append(
            MaintenanceAction(
                procedure=procedure,
                target=target,
                object=change.path,
                statement="",
                reason=reason,
                before=before,
                outcome=Outcome.SKIPPED,
                error="report only; if the change was not meant, take the file from the "
                f"backup: `runbook restore -t {target} --backup {drift.backup_id} --into DIR`",
            )
        )
    return actions
