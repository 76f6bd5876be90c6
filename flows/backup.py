"""The backup flow.

1. Load the config and pick the targets (all of them unless named).
2. Back up each target (with the label and pin asked for, if any): take its lock, stream
   dump -> zstd -> sha256 -> storage, write the manifest last (retried on transient faults
   only, with exponential backoff and jitter).
3. Verify each stored backup by reading every artifact back from storage.
4. Publish a markdown artifact (one row per artifact), push each target's backup metrics to
   the Pushgateway when one is configured (a failed push is a warning), and return a
   BackupRunSummary. The run ends Failed when any target's backup is not verified.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed
from pydantic import BaseModel

from runbook.catalog import BackupRecord, BackupStatus, utcnow
from runbook.errors import RunFailed
from runbook.manifest import new_backup_id
from runbook.pins import parse_pin
from runbook.retry import retry_options
from runbook.runtime import open_runtime
from tasks.backups.metrics import push_backup_metrics
from tasks.backups.report import backup_report_markdown
from tasks.backups.tasks import backup_target, verify_backup_task


class BackupRunSummary(BaseModel):
    ok: bool
    backups: list[BackupRecord]

    @property
    def failed(self) -> list[BackupRecord]:
        return [b for b in self.backups if b.status != BackupStatus.VERIFIED]


@flow(name="backup", persist_result=True, log_prints=True)
def backup(
    targets: list[str] = [],  # noqa: B006 - Prefect passes a copy; [] renders as a list in the UI
    schedule: str = "",
    verify: bool = True,
    label: str = "",
    keep_until: str = "",
) -> BackupRunSummary:
    """Back up targets and verify each backup by reading it back from storage.

    Args:
        targets: Backup targets to back up (names from runbook.yaml). Empty: every target, or
            those of `schedule` when it is given.
        schedule: Back up the targets whose `schedule` in runbook.yaml is this name (a
            scheduled deployment per schedule; targets without one are "nightly").
        verify: Read every stored artifact back from storage and compare it with the manifest.
        label: A name for these backups, shown in `runbook backups list` and kept in the
            manifest (letters, digits, . _ : + -; e.g. emergency-20261201-2207). Empty: none.
        keep_until: Pin the backups: retention keeps them until this date (2026-12-31, kept
            through that day UTC), moment (2026-12-31T18:00Z) or duration from now (7d, 2w),
            whatever the policy says; then they are ordinary again. Empty: not pinned.
    """
    pin = parse_pin(label, keep_until, utcnow(), cli=False)  # refused before any backup
    runtime = open_runtime()
    config_path = str(runtime.config.source)
    settings = runtime.config.backup
    chosen = runtime.config.select_targets(targets or None, schedule=schedule or None)
    task = backup_target.with_options(
        **retry_options(settings.retries, settings.retry_delay.total_seconds())
    )

    backup_ids = []
    for target in chosen:
        backup_id = new_backup_id()
        backup_ids.append(backup_id)
        task(config_path, target.name, backup_id, pin.label, pin.keep_until, return_state=True)
        if verify and runtime.catalog.get_backup(backup_id).status == BackupStatus.STORED:
            verify_backup_task(config_path, backup_id, return_state=True)

    records = [runtime.catalog.get_backup(backup_id) for backup_id in backup_ids]
    wanted = BackupStatus.VERIFIED if verify else BackupStatus.STORED
    summary = BackupRunSummary(ok=all(r.status == wanted for r in records), backups=records)
    create_markdown_artifact(
        markdown=backup_report_markdown(records),
        key="backup-report",
        description="Backups of this run",
    )
    if runtime.config.notifications.pushgateway is not None:
        push_backup_metrics(config_path, [t.name for t in chosen])  # a warning if it fails
    if not summary.ok:
        bad = [f"{r.target}: {r.status.value}" for r in records if r.status != wanted]
        message = f"{len(bad)} backup(s) not {wanted.value}: {', '.join(bad)}"
        return Failed(message=message, data=RunFailed(message, summary))
    return summary
