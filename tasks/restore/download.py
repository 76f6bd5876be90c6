"""`runbook backups download ID --to DIR`: a backup verified from storage while it is
downloaded, decompressed to the format a person's own tools read (`.pgdump` for pg_restore,
`.rdb` for redis-server, `.tar` for tar), kept only when verification found it whole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runbook.catalog import Catalog
from runbook.errors import NotFoundError, RunbookError
from runbook.manifest import EXTENSIONS
from runbook.storage import Storage
from tasks.backups.verify import VerificationReport, verify_backup
from tasks.drills.pick import FileSink


@dataclass
class Downloaded:
    report: VerificationReport
    files: list[Path]  # what is in the folder now (nothing when the backup is damaged)


def download_backup(catalog: Catalog, storage: Storage, backup_id: str, folder: Path) -> Downloaded:
    """Verify and download every artifact of a committed backup into `folder` as
    `<target>-<id>-<artifact>.<pgdump|rdb|tar>`; a damaged backup leaves nothing behind."""
    record = catalog.get_backup(backup_id)
    if not record.committed:
        raise NotFoundError(
            f"backup {backup_id} is {record.status.value}: only stored or verified backups "
            "can be downloaded"
        )
    folder.mkdir(parents=True, exist_ok=True)
    final = {
        a.name: folder / f"{record.target}-{record.id}-{a.name}.{EXTENSIONS[a.content]}"
        for a in record.artifacts
    }
    existing = [str(path) for path in final.values() if path.exists()]
    if existing:
        raise RunbookError(f"{existing[0]} already exists: remove it or choose another --to")
    parts = {name: path.with_name(path.name + ".part") for name, path in final.items()}
    sinks = {name: FileSink(path) for name, path in parts.items()}
    whole = False
    try:
        report = verify_backup(catalog, storage, backup_id, sinks=sinks)
        whole = report.ok
    finally:
        for sink in sinks.values():
            sink.close()
        if not whole:  # damaged, or the read failed: nothing half-written stays
            for path in parts.values():
                path.unlink(missing_ok=True)
    if not whole:
        return Downloaded(report, [])
    for name, path in parts.items():
        path.rename(final[name])
    return Downloaded(report, list(final.values()))
