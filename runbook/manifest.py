"""The backup manifest: a versioned JSON document stored beside the artifacts, written last.

Its presence in storage is what makes a backup exist. Layout of one backup in storage:

    <target>/<backup id>/<artifact name>.<ext>.zst   the artifacts
    <target>/<backup id>/manifest.json               the commit marker, written after them
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from runbook.storage import ObjectNotFound, Storage

FORMAT = "runbook-backup-manifest"
VERSION = 1
MANIFEST_NAME = "manifest.json"

Content = Literal["pg_dump-custom", "redis-rdb", "tar"]
EXTENSIONS: dict[str, str] = {"pg_dump-custom": "pgdump", "redis-rdb": "rdb", "tar": "tar"}


class ManifestError(Exception):
    """A manifest that cannot be read or does not describe this backup."""


class StoredArtifact(BaseModel):
    """What was stored for one artifact of a backup: the facts its manifest entry
    (ManifestArtifact) and its catalog record (runbook.catalog.ArtifactRecord) share."""

    name: str  # "database", "schema-production", "dump", "files"
    key: str
    content: Content
    codec: Literal["zstd"] = "zstd"
    bytes: int  # stored (compressed) size
    logical_bytes: int  # size before compression
    sha256: str  # of the stored bytes
    seconds: float


class ManifestArtifact(StoredArtifact):
    """An artifact as the manifest (the commit marker) names it."""

    schema_name: str | None = None  # for per-schema PostgreSQL archives


class Manifest(BaseModel):
    format: Literal["runbook-backup-manifest"] = FORMAT
    version: int = VERSION
    backup_id: str
    target: str
    kind: Literal["postgres", "redis", "files", "prometheus", "kubernetes"]
    started_at: datetime
    finished_at: datetime
    artifacts: list[ManifestArtifact]
    source: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)  # e.g. a file that vanished mid-backup
    # `runbook backup --label/--keep-until` (runbook.pins); written only when set, so the
    # manifests of unlabelled backups keep their shape
    label: str | None = None
    keep_until: datetime | None = None

    @property
    def key(self) -> str:
        return manifest_key(self.target, self.backup_id)

    @property
    def dump_major(self) -> int:
        """The major version of the pg_dump that wrote the archives: a pg_restore must be at
        least as new to read them. Manifests that do not name the tool give the source
        server's major (pg_dump was matched to it); 0 when neither is known."""
        match = re.search(r"pg_dump (\d+)", self.tools.get("pg_dump", ""))
        return int(match.group(1)) if match else int(self.source.get("server_major", 0))

    def to_json(self) -> bytes:
        """The manifest's bytes as a backup writes them into storage (and seals them)."""
        data = self.model_dump(mode="json")
        for optional in ("label", "keep_until"):
            if data[optional] is None:
                del data[optional]
        return json.dumps(data, indent=2, sort_keys=False).encode()

    def seal(self) -> ManifestSeal:
        """The seal of `to_json()`: what a backup records in the catalog when it commits."""
        return seal_manifest(self.to_json())


@dataclass(frozen=True)
class ManifestSeal:
    """What the catalog keeps of a manifest when its backup commits (or is imported), so
    verification can tell the manifest in storage from the one committed: the sha256 of its
    bytes, and a sha256 of each part (each top-level field, each entry of `source`), so a
    difference can be named ("source.row_counts") without keeping the whole document."""

    sha256: str
    parts: dict[str, str]

    def differences(self, other: ManifestSeal) -> list[str]:
        """The parts that differ from `other`'s (changed, added or removed), sorted."""
        found = []
        for part in sorted(self.parts.keys() | other.parts.keys()):
            mine, theirs = self.parts.get(part), other.parts.get(part)
            if mine != theirs:
                change = "" if mine and theirs else f" ({'added' if theirs else 'removed'})"
                found.append(part + change)
        return found


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def seal_manifest(data: bytes) -> ManifestSeal:
    """The seal of a manifest's stored bytes; parts only when they are a JSON object."""
    parts: dict[str, str] = {}
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raw = None
    if isinstance(raw, dict):
        for name, value in raw.items():
            if name == "source" and isinstance(value, dict):
                parts |= {f"source.{key}": _digest(item) for key, item in value.items()}
            else:
                parts[name] = _digest(value)
    return ManifestSeal(hashlib.sha256(data).hexdigest(), parts)


def new_backup_id(now: datetime | None = None) -> str:
    """Sortable by time, unique across targets: 20261122T150712Z-3f9a1c."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def backup_prefix(target: str, backup_id: str) -> str:
    return f"{target}/{backup_id}/"


def manifest_key(target: str, backup_id: str) -> str:
    return f"{backup_prefix(target, backup_id)}{MANIFEST_NAME}"


def artifact_key(target: str, backup_id: str, name: str, content: str) -> str:
    return f"{backup_prefix(target, backup_id)}{name}.{EXTENSIONS[content]}.zst"


def parse_manifest(data: bytes, key: str) -> Manifest:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{key}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ManifestError(f"{key}: not a Runbook backup manifest")
    if raw.get("version", 0) > VERSION:
        raise ManifestError(
            f"{key}: manifest version {raw.get('version')} is newer than this Runbook "
            f"understands ({VERSION}); upgrade Runbook"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"{key}: invalid manifest ({exc.error_count()} problems)") from None


def ownership_problems(manifest: Manifest, target: str, backup_id: str) -> list[str]:
    """Why `manifest` is not a manifest of backup `target`/`backup_id`: it names another
    backup, or an artifact of it lives outside the backup's own folder (a backup vouches for
    its own objects only, as in pgBackRest's and restic's repositories). Empty when it is."""
    found = []
    if manifest.backup_id != backup_id or manifest.target != target:
        found.append(f"describes backup {manifest.target}/{manifest.backup_id}")
    prefix = backup_prefix(target, backup_id)
    for artifact in manifest.artifacts:
        if not _inside(artifact.key, prefix):
            found.append(f"artifact {artifact.name!r} has key {artifact.key!r}, outside {prefix}")
    return found


def _inside(key: str, prefix: str) -> bool:
    """`key` names an object directly in the folder `prefix` (no '..', no subfolders)."""
    name = key.removeprefix(prefix)
    return (
        key.startswith(prefix)
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\\0")
    )


def read_manifest(
    storage: Storage, target: str, backup_id: str, sealed: ManifestSeal | None = None
) -> Manifest:
    """The manifest of one backup, refused (ManifestError) unless it describes that backup
    and only objects in its folder, and, given the seal the backup committed, unless it is
    that very manifest. Raises ObjectNotFound when the backup was never committed (or was
    deleted)."""
    key = manifest_key(target, backup_id)
    data = storage.get_bytes(key)
    if sealed is not None:
        changed = sealed.differences(seal_manifest(data))
        if changed or seal_manifest(data).sha256 != sealed.sha256:
            raise ManifestError(
                f"{key}: not the manifest this backup committed "
                f"({', '.join(changed) or 'its bytes'} changed)"
            )
    manifest = parse_manifest(data, key)
    problems = ownership_problems(manifest, target, backup_id)
    if problems:
        raise ManifestError(f"{key}: {'; '.join(problems)}")
    return manifest


def list_manifests(storage: Storage) -> list[tuple[str, str]]:
    """(target, backup id) of every committed backup in storage."""
    found = []
    for info in storage.list():
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST_NAME:
            found.append((parts[0], parts[1]))
    return found


__all__ = [
    "Manifest",
    "ManifestArtifact",
    "ManifestError",
    "ManifestSeal",
    "ObjectNotFound",
    "StoredArtifact",
    "artifact_key",
    "backup_prefix",
    "list_manifests",
    "manifest_key",
    "new_backup_id",
    "ownership_problems",
    "parse_manifest",
    "read_manifest",
    "seal_manifest",
]
