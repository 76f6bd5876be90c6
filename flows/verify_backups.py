"""The verification flow: prove stored backups still match their manifests.

1. Pick the backups: the given ids, or the newest committed backup of each target (or of one).
2. Read every artifact back from storage; compare size and sha256 with the manifest; decode it;
   inspect its content (pg_restore --list, RDB framing, tar structure).
3. Record verified or corrupt (with the exact damage) in the catalog; publish a report; push
   the targets' backup metrics to the Pushgateway when one is configured (a failed push
   is a warning).
4. The run ends Failed when any backup does not match.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed
from pydantic import BaseModel

from runbook.catalog import COMMITTED
from runbook.errors import NotFoundError, RunFailed
from runbook.runtime import open_runtime
from tasks.backups.metrics import push_backup_metrics
from tasks.backups.report import verification_report_markdown
from tasks.backups.tasks import verify_backup_task
from tasks.backups.verify import VerificationReport


class VerifyRunSummary(BaseModel):
    ok: bool
    reports: list[VerificationReport]


@flow(name="verify-backups", persist_result=True)
def verify_backups(
    backup_ids: list[str] = [],  # noqa: B006 - Prefect passes a copy; [] renders as a list
    targets: list[str] = [],  # noqa: B006
) -> VerifyRunSummary:
    """Read backups back from storage and compare them with their manifests.

    Args:
        backup_ids: Backup ids to verify (from `runbook backups list`). Empty: the newest
            committed backup of each target.
        targets: Only these targets' newest backups (names from runbook.yaml). Empty: all.
    """
    runtime = open_runtime()
    config_path = str(runtime.config.source)
    if backup_ids:
        ids = [runtime.catalog.get_backup(backup_id).id for backup_id in backup_ids]
    else:
        ids = []
        for t in runtime.config.select_targets(list(targets) or None):
            latest = runtime.catalog.latest_backup(t.name, statuses=COMMITTED)
            if latest is not None:
                ids.append(latest.id)
        if not ids:
            raise NotFoundError(
                f"no committed backup of {', '.join(targets) or 'any target'} to verify; "
                "run `runbook backup`"
            )
    reports = [verify_backup_task(config_path, backup_id) for backup_id in ids]
    summary = VerifyRunSummary(ok=all(r.ok for r in reports), reports=reports)
    create_markdown_artifact(
        markdown=verification_report_markdown(reports),
        key="verification-report",
        description="Backup verification",
    )
    if runtime.config.notifications.pushgateway is not None:
        verified = [runtime.catalog.get_backup(r.backup_id).target for r in reports]
        push_backup_metrics(config_path, verified)  # a warning if it fails
    if not summary.ok:
        bad = [r.backup_id for r in reports if not r.ok]
        message = f"backup(s) do not match their manifests: {', '.join(bad)}"
        return Failed(message=message, data=RunFailed(message, summary))
    return summary
