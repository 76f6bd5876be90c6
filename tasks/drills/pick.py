"""Picking the backup a drill restores, verifying it and downloading it in one pass from
storage; a corrupt `latest` is marked corrupt and the drill falls back to the previous one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from runbook.catalog import (
    BackupRecord,
    BackupStatus,
    Catalog,
)
from runbook.config import (
    FilesTarget,
    KubernetesObjectsTarget,
    PostgresTarget,
    PrometheusTsdbTarget,
    TargetConfig,
)
from runbook.errors import PermanentError
from runbook.manifest import Manifest, read_manifest
from runbook.storage import Storage
from tasks.backups.verify import VerificationReport, verify_backup

log = logging.getLogger("runbook.drill")


class FileSink:
    """Writes the decompressed archive to a file as verification streams it."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = open(path, "wb")  # noqa: SIM115 - closed by close()

    def __call__(self, chunk: bytes) -> None:
        self.handle.write(chunk)

    def close(self) -> None:
        self.handle.close()


class Picked:
    def __init__(
        self,
        record: BackupRecord,
        manifest: Manifest,
        report: VerificationReport,
        files: dict[str, Path],
        fell_back_from: str | None,
        seconds: float,
    ):
        self.record = record
        self.manifest = manifest
        self.report = report
        self.files = files
        self.fell_back_from = fell_back_from
        self.seconds = seconds


def _download(
    catalog: Catalog, storage: Storage, record: BackupRecord, workdir: Path, names: list[str]
) -> tuple[VerificationReport, dict[str, Path]]:
    files = {name: workdir / f"{name}.restore" for name in names}
    sinks = {name: FileSink(path) for name, path in files.items()}
    try:
        report = verify_backup(catalog, storage, record.id, sinks=sinks)
    finally:
        for sink in sinks.values():
            sink.close()
    return report, files


def _verified_manifest(storage: Storage, record: BackupRecord) -> Manifest:
    """The manifest verification just vouched for: read again, so it must still be the one
    the backup committed (a manifest swapped in storage since is refused)."""
    return read_manifest(storage, record.target, record.id, sealed=record.manifest_seal)


def restored_artifacts(target: TargetConfig) -> Callable[[BackupRecord], list[str]]:
    """Which artifacts of a backup a drill restores: the whole database, the RDB, the tar."""
    if isinstance(target, PostgresTarget):
        return lambda record: ["database"]
    if isinstance(target, FilesTarget | PrometheusTsdbTarget | KubernetesObjectsTarget):
        return lambda record: ["files"]
    return lambda record: ["dump"]


def pick_and_download(
    catalog: Catalog,
    storage: Storage,
    target: TargetConfig,
    spec: str,
    workdir: Path,
    artifacts: Callable[[BackupRecord], list[str]] | None = None,
) -> Picked:
    """Verify (reading from storage) and download the backup to restore: the artifacts
    `artifacts(record)` names (default: restored_artifacts of the target)."""
    started = time.monotonic()
    wanted = artifacts or restored_artifacts(target)
    if spec != "latest":  # check_drill_request vetted the id
        record = catalog.get_backup(spec)
        report, files = _download(catalog, storage, record, workdir, wanted(record))
        record = catalog.get_backup(spec)  # verification may have sealed it
        manifest = _verified_manifest(storage, record) if report.ok else None
        return Picked(record, manifest, report, files, None, time.monotonic() - started)

    fell_back_from = None
    candidates = catalog.list_backups(
        target=target.name, statuses=frozenset({BackupStatus.VERIFIED})
    )
    if not candidates:
        raise PermanentError(
            f"no verified backup of target {target.name!r} to drill (run `runbook backup` first)"
        )
    for record in candidates:
        report, files = _download(catalog, storage, record, workdir, wanted(record))
        if report.ok:
            record = catalog.get_backup(record.id)  # verification may have sealed it
            return Picked(
                record,
                _verified_manifest(storage, record),
                report,
                files,
                fell_back_from,
                time.monotonic() - started,
            )
        problems = "; ".join(f"{c.problem}: {c.detail}" for c in report.problems)
        log.error(
            "backup %s is corrupt (%s); falling back to the previous verified backup",
            record.id,
            problems,
        )
        fell_back_from = fell_back_from or record.id
        for path in files.values():
            path.unlink(missing_ok=True)
    raise PermanentError(
        f"every verified backup of {target.name!r} is corrupt (newest: {fell_back_from})"
    )
