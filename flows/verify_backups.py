"""The verification flow: prove stored backups still match their manifests.

1. Pick the backups: the given ids, or the newest committed backup of each target (or of one).
2. Read every artifact back from storage; compare size and sha256 with the manifest; decode it;
   inspect its content (pg_restore --list, RDB framing, tar structure).
3. Record verified or corrupt (with the exact damage) in the catalog; publish a report.
4. The run ends Failed when any backup does not match.
"""

from __future__ import annotations

from prefect import flow
from prefect.states import Failed
from pydantic import BaseModel

from runbook.catalog import COMMITTED
from runbook.errors import NotFoundError
from runbook.runtime import open_runtime
from tasks.integrity import VerificationReport, verify_backup_task
from tasks.report import publish_markdown, verification_report_markdown


class VerifyRunSummary(BaseModel):
    ok: bool
    reports: list[VerificationReport]


@flow(name="verify-backups", persist_result=True)
def verify_backups(
    backup_ids: list[str] | None = None,
    target: str | None = None,
    config_path: str | None = None,
) -> VerifyRunSummary:
    """Verify the given backups, or else the newest committed backup of each target."""
    runtime = open_runtime(config_path)
    if backup_ids:
        ids = [runtime.catalog.get_backup(backup_id).id for backup_id in backup_ids]
    else:
        targets = [runtime.config.target(target)] if target else runtime.config.backup_targets()
        ids = []
        for t in targets:
            latest = runtime.catalog.latest_backup(t.name, statuses=COMMITTED)
            if latest is not None:
                ids.append(latest.id)
        if not ids:
            raise NotFoundError(
                f"no committed backup of {target or 'any target'} to verify; run `runbook backup`"
            )
    reports = [verify_backup_task(config_path, backup_id) for backup_id in ids]
    summary = VerifyRunSummary(ok=all(r.ok for r in reports), reports=reports)
    publish_markdown(
        "verification-report", verification_report_markdown(reports), "Backup verification"
    )
    if not summary.ok:
        bad = [r.backup_id for r in reports if not r.ok]
        return Failed(
            message=f"backup(s) do not match their manifests: {', '.join(bad)}", data=summary
        )
    return summary
