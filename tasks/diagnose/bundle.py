"""Storing a diagnostics bundle like a backup: one tar of the sections, through zstd with a
sha256 of the stored bytes, a manifest written last as the commit marker, then read back from
storage and checked; and the bundles' own retention (keep the newest N, and those younger
than D days).

Layout in storage, apart from the backups (target names never start with '_', and backup
retention, garbage collection and import only look at <target>/<id>/<object>, three levels):

    <prefix>/bundles/<bundle id>/bundle.tar.zst    the sections, bundle.json and README.md
    <prefix>/bundles/<bundle id>/manifest.json     written after it: the commit marker
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ValidationError

from runbook.config import DiagnosticsSettings
from runbook.storage import ObjectNotFound, Storage
from runbook.streams import ZstdEncoder, read_back
from tasks.diagnose.sections import Section

FORMAT = "runbook-diagnostics-manifest"
MANIFEST_NAME = "manifest.json"
BUNDLE_NAME = "bundle.tar.zst"
SPOOL = 8 * 1024 * 1024  # a bundle this small stays in memory while it is packed and checked


class BundleManifest(BaseModel):
    format: Literal["runbook-diagnostics-manifest"] = FORMAT
    version: int = 1
    bundle_id: str
    incident: str | None = None
    created_at: datetime
    key: str
    bytes: int  # stored (compressed)
    logical_bytes: int  # the tar
    sha256: str  # of the stored bytes
    members: list[str]  # the tar's files
    sections: list[Section]
    findings: list[str] = []

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=2).encode()


class BundleCheck(BaseModel):
    """What reading a bundle back from storage proved: `problems` empty means verified."""

    verified: bool
    problems: list[str] = []
    bytes_read: int = 0
    seconds: float = 0.0


def bundle_folder(prefix: str, bundle_id: str) -> str:
    return f"{prefix}/bundles/{bundle_id}/"


def _tar(files: list[tuple[str, bytes]]) -> tempfile.SpooledTemporaryFile:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL)
    with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
        now = time.time()
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), now, 0o640
            tar.addfile(info, io.BytesIO(data))
    spool.seek(0)
    return spool


def _chunks(handle: tempfile.SpooledTemporaryFile, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := handle.read(size):
        yield chunk


def write_bundle(
    storage: Storage,
    settings: DiagnosticsSettings,
    header: BundleManifest,
    files: list[tuple[str, bytes]],
) -> BundleManifest:
    """Pack `files` into one tar, store it compressed, then its manifest (the commit marker).
    `header` names the bundle, its sections and findings; the stored facts are filled in."""
    key = bundle_folder(settings.prefix, header.bundle_id) + BUNDLE_NAME
    with _tar(files) as spool:
        encoder = ZstdEncoder(_chunks(spool), level=settings.compression_level, threads=1)
        info = storage.put(key, encoder)
    if info.size != encoder.stored_bytes:
        raise RuntimeError(
            f"{key}: storage reports {info.size} bytes but {encoder.stored_bytes} were written"
        )
    manifest = header.model_copy(
        update={
            "key": key,
            "bytes": encoder.stored_bytes,
            "logical_bytes": encoder.logical_bytes,
            "sha256": encoder.sha256,
            "members": [name for name, _ in files],
        }
    )
    storage.put_bytes(
        bundle_folder(settings.prefix, header.bundle_id) + MANIFEST_NAME, manifest.to_json()
    )
    return manifest


def verify_bundle(storage: Storage, prefix: str, written: BundleManifest) -> BundleCheck:
    """Read the manifest and the bundle back FROM STORAGE: the manifest must be the one
    written, the bundle's size and sha256 those it names, and the tar must decode with every
    member it lists."""
    started = time.monotonic()
    problems: list[str] = []
    folder = bundle_folder(prefix, written.bundle_id)
    try:
        stored = storage.get_bytes(folder + MANIFEST_NAME)
        if hashlib.sha256(stored).digest() != hashlib.sha256(written.to_json()).digest():
            problems.append(f"{folder}{MANIFEST_NAME}: not the manifest this bundle wrote")
    except ObjectNotFound:
        problems.append(f"{folder}{MANIFEST_NAME}: missing")
    report = None
    with tempfile.SpooledTemporaryFile(max_size=SPOOL) as plain:
        try:
            report = read_back(storage.get(written.key), plain.write)
        except ObjectNotFound:
            problems.append(f"{written.key}: missing")
        if report is not None:
            if report.stored_bytes != written.bytes:
                problems.append(
                    f"{written.key}: {report.stored_bytes} bytes stored, {written.bytes} written"
                )
            elif report.sha256 != written.sha256:
                problems.append(f"{written.key}: sha256 differs from the one written")
            if report.decode_error:
                problems.append(f"{written.key}: does not decompress ({report.decode_error})")
            else:
                plain.seek(0)
                try:
                    with tarfile.open(fileobj=plain, mode="r:") as tar:
                        names = set(tar.getnames())
                    missing = [m for m in written.members if m not in names]
                    if missing:
                        problems.append(f"{written.key}: tar lacks {', '.join(missing[:5])}")
                except tarfile.TarError as exc:
                    problems.append(f"{written.key}: not a readable tar ({exc})")
    return BundleCheck(
        verified=not problems,
        problems=problems,
        bytes_read=report.stored_bytes if report else 0,
        seconds=round(time.monotonic() - started, 3),
    )


# --- the bundles' own retention --------------------------------------------------------------


class StoredBundle(BaseModel):
    bundle_id: str
    created_at: datetime | None  # None: its manifest is missing or unreadable
    incident: str | None = None


def list_bundles(storage: Storage, prefix: str) -> list[StoredBundle]:
    """Every bundle folder under the prefix, newest first; a folder without a readable
    manifest is listed with created_at None (a bundle that died while it was written)."""
    folders: dict[str, bool] = {}
    for info in storage.list(f"{prefix}/bundles/"):
        parts = info.key.split("/")
        if len(parts) == 4:
            folders[parts[2]] = folders.get(parts[2], False) or parts[3] == MANIFEST_NAME
    found = []
    for bundle_id, committed in folders.items():
        created, incident = None, None
        if committed:
            try:
                raw = storage.get_bytes(bundle_folder(prefix, bundle_id) + MANIFEST_NAME)
                manifest = BundleManifest.model_validate_json(raw)
                created, incident = manifest.created_at, manifest.incident
            except (ObjectNotFound, ValidationError, ValueError):
                pass
        found.append(StoredBundle(bundle_id=bundle_id, created_at=created, incident=incident))
    found.sort(key=lambda b: b.bundle_id, reverse=True)  # ids sort by time
    return found


class BundleDecision(BaseModel):
    bundle_id: str
    action: Literal["keep", "delete"]
    reason: str


def plan_bundle_retention(
    bundles: list[StoredBundle], keep_last: int, keep_days: int, now: datetime
) -> list[BundleDecision]:
    """Keep the newest `keep_last` bundles and every bundle younger than `keep_days`; delete
    the rest. A folder without a readable manifest counts by its id's time (ids begin with
    it) and is deleted once older than keep_days (never the newest `keep_last`)."""
    cutoff = now - timedelta(days=keep_days)
    decisions = []
    for index, bundle in enumerate(sorted(bundles, key=lambda b: b.bundle_id, reverse=True)):
        created = bundle.created_at or _id_time(bundle.bundle_id)
        if index < keep_last:
            action, reason = "keep", f"one of the newest {keep_last}"
        elif created is not None and created >= cutoff:
            action, reason = "keep", f"younger than {keep_days} days"
        else:
            action, reason = (
                "delete",
                f"older than {keep_days} days and not in the newest {keep_last}",
            )
        decisions.append(BundleDecision(bundle_id=bundle.bundle_id, action=action, reason=reason))
    return decisions


def _id_time(bundle_id: str) -> datetime | None:
    try:
        return datetime.strptime(bundle_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def delete_bundle(storage: Storage, prefix: str, bundle_id: str) -> int:
    """Delete a bundle's objects, its manifest first: a bundle half deleted is no longer
    committed, and the next retention run removes what is left of it."""
    folder = bundle_folder(prefix, bundle_id)
    keys = [info.key for info in storage.list(folder)]
    keys.sort(key=lambda k: not k.endswith("/" + MANIFEST_NAME))
    for key in keys:
        storage.delete(key)
    return len(keys)
