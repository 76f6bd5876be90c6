"""The backups wing's Prefect tasks: a backup of one target and the verification of one
backup, each retried on transient faults only."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from runbook.catalog import BackupRecord, BackupStatus
from runbook.retry import retry_if_transient
from tasks.backups.dump import run_backup
from tasks.backups.verify import VerificationReport, verify_backup


@task(
    name="backup-target",
    task_run_name="backup-{target_name}",
    cache_policy=NO_CACHE,
    persist_result=True,
)
def backup_target(config_path: str | None, target_name: str, backup_id: str) -> BackupRecord:
    """One backup of one target (retried by the flow on transient faults only)."""
    from prefect.runtime import flow_run

    from runbook.runtime import open_runtime

    runtime = open_runtime(config_path)
    target = runtime.config.target(target_name)
    logger = get_run_logger()
    outcome = run_backup(
        runtime.config,
        target,
        runtime.catalog,
        runtime.storage,
        backup_id,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
    )
    record = outcome.record
    if record.status == BackupStatus.LOCKED:
        logger.warning("backup %s of %s: %s", backup_id, target_name, record.error)
    else:
        logger.info(
            "backup %s of %s stored: %d artifact(s), %s bytes",
            backup_id,
            target_name,
            len(record.artifacts),
            record.bytes_stored,
        )
    return record


@task(
    name="verify-backup",
    task_run_name="verify-{backup_id}",
    cache_policy=NO_CACHE,
    persist_result=True,
    retries=3,
    retry_delay_seconds=[5, 20, 60],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,
)
def verify_backup_task(config_path: str | None, backup_id: str) -> VerificationReport:
    from runbook.runtime import open_runtime

    runtime = open_runtime(config_path)
    report = verify_backup(runtime.catalog, runtime.storage, backup_id)
    logger = get_run_logger()
    if report.ok:
        logger.info(
            "backup %s verified: %d artifact(s) read back from storage and matched",
            backup_id,
            len(report.artifacts),
        )
    else:
        for check in report.problems:
            logger.error("backup %s: %s: %s", backup_id, check.problem, check.detail)
    return report
