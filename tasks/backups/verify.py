"""Verifying backups by reading them back FROM STORAGE.

`check_artifact` is a read-only checker (like restic's checker): for every artifact of a manifest
it streams the stored object, compares size and sha256 with the manifest, decompresses it to
prove it decodes and inspects the content (pg_restore --list and the table list for PostgreSQL
archives, the RDB framing for Redis, the tar structure for files). It returns typed findings,
each damaged one with its remedy; `verify_backup` records them in the catalog (verified, or
corrupt with failed step `verify`).

Storage is not trusted, the manifest included: `check_manifest` compares the manifest in
storage with what the backup recorded in the catalog when it committed (the manifest's seal,
the artifacts' keys, sizes and checksums) and with the backup's own folder; any difference, or
a manifest that cannot be read, is one `manifest` finding that says what differs. The artifacts
read back are those the catalog recorded, whatever the manifest in storage lists.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from runbook.catalog import COMMITTED, BackupRecord, Catalog, utcnow
from runbook.errors import NotFoundError
from runbook.manifest import (
    Manifest,
    ManifestArtifact,
    ManifestError,
    ManifestSeal,
    StoredArtifact,
    manifest_key,
    ownership_problems,
    parse_manifest,
    seal_manifest,
)
from runbook.storage import ObjectNotFound, Storage
from runbook.streams import read_back
from runbook.systems.pg_tools import candidate_binaries, pick_binary
from runbook.systems.redis import check_rdb_stream

log = logging.getLogger("runbook.verify")

Problem = Literal["missing", "size", "checksum", "undecodable", "content", "manifest"]
REMEDY = {
    "missing": "the object is gone from storage; take a new backup",
    "size": "the stored object was truncated or replaced; take a new backup",
    "checksum": "the stored bytes changed since the backup; take a new backup",
    "undecodable": "the stored object does not decompress; take a new backup",
    "content": "the archive is not what the manifest describes; take a new backup",
    "manifest": (
        "the manifest in storage is missing, unreadable or not the one this backup committed: "
        "do not restore from it; take a new backup"
    ),
}

BODY_CHUNK = 1 << 20  # how much of a tar member's body is read at a time


class ArtifactCheck(BaseModel):
    key: str
    ok: bool
    problem: Problem | None = None
    detail: str | None = None
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def remedy(self) -> str | None:
        """What to do about the damage found (None when the artifact matched)."""
        return REMEDY[self.problem] if self.problem else None


class VerificationReport(BaseModel):
    backup_id: str
    target: str
    ok: bool
    started_at: datetime
    finished_at: datetime
    artifacts: list[ArtifactCheck]

    @property
    def problems(self) -> list[ArtifactCheck]:
        return [a for a in self.artifacts if not a.ok]


# --- content inspectors: fed the decompressed stream chunk by chunk ------------------------


class ProcessConsumer:
    """Feeds chunks to a process's stdin; stops feeding once the process has read enough."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 600):
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        self.timeout = timeout
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=self.out, stderr=self.err, env=env
        )
        self.open = True

    def __call__(self, chunk: bytes) -> bool:
        if not self.open:
            return False
        try:
            self.proc.stdin.write(chunk)
        except (BrokenPipeError, ValueError):
            self.open = False
        return self.open

    def finish(self) -> tuple[int, str, str]:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            rc = self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.out.seek(0)
        self.err.seek(0)
        out = self.out.read().decode(errors="replace")
        err = self.err.read().decode(errors="replace")
        self.out.close()
        self.err.close()
        return rc, out, err


class ThreadConsumer:
    """Feeds chunks through a pipe to `reader(fileobj)` running in a thread."""

    def __init__(self, reader: Callable[[Any], str | None]):
        read_fd, write_fd = os.pipe()
        self.writer = os.fdopen(write_fd, "wb")
        self.result: str | None = None
        self.error: BaseException | None = None
        self.open = True

        def run() -> None:
            with os.fdopen(read_fd, "rb") as handle:
                try:
                    self.result = reader(handle)
                except BaseException as exc:  # noqa: BLE001 - reported by finish()
                    self.error = exc
                handle.read()  # drain so the writer never blocks

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def __call__(self, chunk: bytes) -> bool:
        if not self.open:
            return False
        try:
            self.writer.write(chunk)
        except (BrokenPipeError, ValueError):
            self.open = False
        return self.open

    def finish(self) -> str | None:
        try:
            self.writer.close()
        except BrokenPipeError:
            pass
        self.thread.join()
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error}"
        return self.result


def _iter_file(handle: Any, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := handle.read(size):
        yield chunk


def _tar_reader(handle: Any) -> str | None:
    try:
        with tarfile.open(fileobj=handle, mode="r|") as tar:
            for member in tar:
                if member.isreg():
                    body = tar.extractfile(member)
                    while body.read(BODY_CHUNK):  # the framing is checked; memory stays flat
                        pass
    except tarfile.TarError as exc:
        return f"not a readable tar archive: {exc}"
    return None


def _rdb_reader(handle: Any) -> str | None:
    return check_rdb_stream(_iter_file(handle))


def _toc_tables(listing: str) -> set[str]:
    """'schema table' of every TABLE DATA entry in `pg_restore --list` output."""
    found = set()
    for line in listing.splitlines():
        match = re.match(r"^\d+; \d+ \d+ TABLE DATA (.+) \S+$", line)
        if match:
            found.add(match.group(1))
    return found


class _PgArchiveInspector:
    def __init__(self, artifact: ManifestArtifact, manifest: Manifest):
        self.binary = pick_binary("pg_restore", manifest.dump_major)
        self.artifact = artifact
        self.manifest = manifest
        self.consumer = ProcessConsumer([self.binary.path, "--list"])

    def __call__(self, chunk: bytes) -> bool:
        return self.consumer(chunk)

    def finish(self) -> str | None:
        rc, out, err = self.consumer.finish()
        if rc != 0:
            tail = " ".join(err.strip().splitlines()[-3:])
            return f"pg_restore --list failed ({self.binary.describe()}): {tail}"
        listed = _toc_tables(out)
        expected = [
            t
            for t in self.manifest.source.get("schema", {}).get("tables", [])
            if not t.get("partitioned")
            and (self.artifact.schema_name is None or t["schema"] == self.artifact.schema_name)
        ]
        absent = [
            f"{t['schema']}.{t['name']}"
            for t in expected
            if f"{t['schema']} {t['name']}" not in listed
        ]
        if absent:
            more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
            return f"the archive has no data for table {absent[0]}{more} listed in the manifest"
        return None


def _inspector(artifact: ManifestArtifact, manifest: Manifest) -> Any:
    if artifact.content == "pg_dump-custom":
        return _PgArchiveInspector(artifact, manifest)
    if artifact.content == "redis-rdb":
        return ThreadConsumer(_rdb_reader)
    return ThreadConsumer(_tar_reader)


# --- the checker ---------------------------------------------------------------------------


class _Tee:
    """Hands every decompressed chunk to the content inspector (until it has seen enough)
    and to a sink (all of it): a drill downloads the archive while it is verified."""

    def __init__(self, inspector: Any, sink: Callable[[bytes], object]):
        self.inspector = inspector
        self.sink = sink
        self.inspecting = True

    def __call__(self, chunk: bytes) -> bool:
        self.sink(chunk)
        if self.inspecting:
            self.inspecting = self.inspector(chunk) is not False
        return True

    def finish(self) -> str | None:
        return self.inspector.finish()


def check_artifact(
    storage: Storage,
    artifact: ManifestArtifact,
    manifest: Manifest,
    sink: Callable[[bytes], object] | None = None,
) -> ArtifactCheck:
    """Read one artifact back and compare it with the manifest; `sink` receives the whole
    decompressed stream (only trust what it got when the check is ok)."""
    started = time.monotonic()

    def result(problem: Problem | None, detail: str | None, read: int = 0) -> ArtifactCheck:
        return ArtifactCheck(
            key=artifact.key,
            ok=problem is None,
            problem=problem,
            detail=detail,
            bytes_read=read,
            seconds=round(time.monotonic() - started, 3),
        )

    try:
        info = storage.stat(artifact.key)
    except ObjectNotFound:
        return result("missing", f"{artifact.key} is not in storage ({storage.describe()})")
    except ValueError as exc:  # an invalid key (a catalog row from before keys were checked)
        return result("missing", f"{artifact.key} cannot be in storage: {exc}")
    if info.size != artifact.bytes:
        return result(
            "size", f"{artifact.key}: {info.size} bytes stored, manifest says {artifact.bytes}"
        )
    inspector = _inspector(artifact, manifest)
    if sink is not None:
        inspector = _Tee(inspector, sink)
    try:
        report = read_back(storage.get(artifact.key), consumer=inspector)
    except ObjectNotFound:
        inspector.finish()
        return result("missing", f"{artifact.key} disappeared during verification")
    except BaseException:
        inspector.finish()
        raise
    content_problem = inspector.finish()
    if report.stored_bytes != artifact.bytes:
        return result(
            "size",
            f"{artifact.key}: read {report.stored_bytes} bytes, manifest says {artifact.bytes}",
            report.stored_bytes,
        )
    if report.sha256 != artifact.sha256:
        return result(
            "checksum",
            f"{artifact.key}: sha256 {report.sha256[:16]}… does not match "
            f"the manifest's {artifact.sha256[:16]}…",
            report.stored_bytes,
        )
    if report.decode_error:
        return result("undecodable", f"{artifact.key}: {report.decode_error}", report.stored_bytes)
    if report.decoded_bytes != artifact.logical_bytes:
        return result(
            "undecodable",
            f"{artifact.key}: decodes to {report.decoded_bytes} bytes, "
            f"manifest says {artifact.logical_bytes}",
            report.stored_bytes,
        )
    if content_problem:
        return result("content", f"{artifact.key}: {content_problem}", report.stored_bytes)
    return result(None, None, report.stored_bytes)


# --- verify and record ---------------------------------------------------------------------


ARTIFACT_FACTS = ("name", "key", "content", "codec", "bytes", "logical_bytes", "sha256")


def _facts(artifact: StoredArtifact) -> tuple[Any, ...]:
    return tuple(getattr(artifact, name) for name in ARTIFACT_FACTS)


def _describe(artifacts: list[StoredArtifact]) -> str:
    return ", ".join(f"{a.key} ({a.bytes} bytes, sha256 {a.sha256[:12]}…)" for a in artifacts)


@dataclass
class ManifestCheck:
    """What `check_manifest` found: the manifest as parsed (None when it could not be), the
    seal of its stored bytes, and every way it is not the manifest this backup committed."""

    manifest: Manifest | None = None
    seal: ManifestSeal | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def trusted(self) -> bool:
        return self.manifest is not None and not self.problems


def check_manifest(storage: Storage, record: BackupRecord) -> ManifestCheck:
    """Read the manifest of a committed backup and compare it with what the backup recorded
    when it committed: the seal of its bytes (sha256, and one per part to name what
    differs), its artifacts' keys, sizes and checksums, and its own folder. Read-only; only
    transient storage faults raise."""
    key = record.manifest_key or manifest_key(record.target, record.id)
    try:
        data = storage.get_bytes(key)
    except ObjectNotFound:
        return ManifestCheck(problems=[f"manifest {key} is not in storage"])
    seal = seal_manifest(data)
    found = ManifestCheck(seal=seal)
    try:
        found.manifest = parse_manifest(data, key)
    except ManifestError as exc:
        found.problems.append(str(exc))
    if found.manifest is not None:
        found.problems += [
            f"{key}: {p}" for p in ownership_problems(found.manifest, record.target, record.id)
        ]
    committed = record.manifest_seal
    if committed is not None and committed.sha256 != seal.sha256:
        parts = committed.differences(seal)
        what = f"parts that differ: {', '.join(parts)}" if parts else "only its bytes differ"
        found.problems.append(
            f"{key} is not the manifest this backup committed (sha256 {seal.sha256[:12]}… in "
            f"storage, {committed.sha256[:12]}… committed): {what}"
        )
    if found.manifest is not None and record.artifacts:
        listed = {_facts(a) for a in found.manifest.artifacts}
        recorded = {_facts(a) for a in record.artifacts}
        if listed != recorded:
            only_recorded = [a for a in record.artifacts if _facts(a) not in listed]
            only_listed = [a for a in found.manifest.artifacts if _facts(a) not in recorded]
            found.problems.append(
                "its artifacts are not those the catalog recorded at commit: recorded "
                f"{_describe(only_recorded) or 'nothing else'}; "
                f"the manifest lists {_describe(only_listed) or 'nothing else'}"
            )
    return found


def _inspection_context(record: BackupRecord, found: ManifestCheck) -> Manifest:
    """The manifest the content inspectors go by. One that is not the committed manifest
    says nothing about the source (its table list may be a lie): the archives are then only
    proven to decode, by the newest pg_restore installed (it reads every older archive)."""
    if found.trusted:
        return found.manifest
    newest = 0
    if record.kind == "postgres":
        newest = max((b.major for b in candidate_binaries("pg_restore")), default=0)
    return Manifest.model_construct(
        backup_id=record.id,
        target=record.target,
        kind=record.kind,
        started_at=record.started_at,
        finished_at=record.finished_at or record.started_at,
        artifacts=[],
        source={"server_major": newest},
        timings={},
        tools={},
    )


def _committed_artifacts(record: BackupRecord, found: ManifestCheck) -> list[ManifestArtifact]:
    """The artifacts to read back: those the catalog recorded at commit (the manifest's own,
    which name their schema, when they are the same)."""
    if found.trusted:
        return list(found.manifest.artifacts)
    return [
        ManifestArtifact(**a.model_dump(include=set(StoredArtifact.model_fields)))
        for a in record.artifacts
    ]


def verify_backup(
    catalog: Catalog,
    storage: Storage,
    backup_id: str,
    sinks: dict[str, Callable[[bytes], object]] | None = None,
) -> VerificationReport:
    """Verify one committed backup and record the result: verified, or corrupt with the exact
    damage per artifact, and a `manifest` finding first when the manifest in storage is not
    the one the backup committed (or cannot be read). Transient storage errors propagate
    (nothing is recorded). `sinks` maps artifact names to consumers of their decompressed
    bytes (drill downloads)."""
    record = catalog.get_backup(backup_id)
    if record.status not in COMMITTED:
        raise NotFoundError(
            f"backup {backup_id} is {record.status.value}, not a committed backup; only stored "
            "backups can be verified"
        )
    started = utcnow()
    found = check_manifest(storage, record)
    checks = []
    if found.problems:
        checks.append(
            ArtifactCheck(
                key=record.manifest_key or manifest_key(record.target, backup_id),
                ok=False,
                problem="manifest",
                detail="; ".join(found.problems),
            )
        )
    context = _inspection_context(record, found)
    checks += [
        check_artifact(storage, artifact, context, (sinks or {}).get(artifact.name))
        for artifact in _committed_artifacts(record, found)
    ]
    finished = utcnow()
    ok = all(c.ok for c in checks)
    good = [c.key for c in checks if c.ok]
    if ok:
        catalog.mark_verified(
            backup_id, started_at=started, finished_at=finished, keys=good, seal=found.seal
        )
    else:
        problems = [c.model_dump(include={"key", "problem", "detail"}) for c in checks if not c.ok]
        catalog.mark_corrupt(
            backup_id,
            started_at=started,
            finished_at=finished,
            problems=problems,
            good_keys=good,
        )
        log.error(
            "backup %s is corrupt: %s",
            backup_id,
            "; ".join(f"{c.problem}: {c.detail}" for c in checks if not c.ok),
        )
    return VerificationReport(
        backup_id=backup_id,
        target=record.target,
        ok=ok,
        started_at=started,
        finished_at=finished,
        artifacts=checks,
    )
