"""The backup manifest: a versioned JSON document stored beside the artifacts, written last.

Its presence in storage is what makes a backup exist. Layout of one backup in storage:

    <target>/<backup id>/<artifact name>.<ext>.zst   the artifacts
    <target>/<backup id>/manifest.json               the commit marker, written after them
"""

from __future__ import annotations

import json
import re
import secrets
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
    kind: Literal["postgres", "redis", "files"]
    started_at: datetime
    finished_at: datetime
    artifacts: list[ManifestArtifact]
    source: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)

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
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False).encode()


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


def read_manifest(storage: Storage, target: str, backup_id: str) -> Manifest:
    """Raises ObjectNotFound when the backup was never committed (or was deleted)."""
    key = manifest_key(target, backup_id)
    manifest = parse_manifest(storage.get_bytes(key), key)
    if manifest.backup_id != backup_id or manifest.target != target:
        raise ManifestError(f"{key}: describes {manifest.target}/{manifest.backup_id}")
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
    "ObjectNotFound",
    "StoredArtifact",
    "artifact_key",
    "backup_prefix",
    "list_manifests",
    "manifest_key",
    "new_backup_id",
    "parse_manifest",
    "read_manifest",
]
