"""The backups wing's Prefect tasks: a backup of one target, the verification of one backup,
and retention's plan, its deletions and its garbage collection. Each is retried on transient
faults only (the backup and retention tasks with the config's `backup.retries`, set by their
flow through runbook/retry.py's retry_options)."""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from runbook.catalog import BackupRecord, BackupStatus, utcnow
from runbook.pins import Pin
from runbook.retry import retry_if_transient
from runbook.runtime import open_runtime
from tasks.backups.dump import run_backup
from tasks.backups.retention import (
    GarbagePlan,
    GarbageReport,
    RetentionDecision,
    RetentionPlan,
    apply_retention,
    collect_garbage,
    make_plan,
)
from tasks.backups.verify import VerificationReport, verify_backup


@task(
    name="backup-target",
    task_run_name="backup-{target_name}",
    cache_policy=NO_CACHE,
    persist_result=True,
)
def backup_target(
    config_path: str | None,
    target_name: str,
    backup_id: str,
    label: str | None = None,
    keep_until: datetime | None = None,
) -> BackupRecord:
    """One backup of one target (retried by the flow on transient faults only), carrying
    `label` and pinned until `keep_until` when given (runbook.pins)."""
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
        pin=Pin(label=label, keep_until=keep_until),
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
            logger.error(
                "backup %s: %s: %s (%s)", backup_id, check.problem, check.detail, check.remedy
            )
    return report


@task(name="plan-retention", cache_policy=NO_CACHE, persist_result=True)
def plan_retention_task(config_path: str | None, targets: list[str]) -> RetentionPlan:
    """Keep or delete each backup of `targets` (empty: all), and what to do with each backup
    folder in storage the catalog does not track; changes nothing."""
    runtime = open_runtime(config_path)
    config = runtime.config
    plan = make_plan(
        runtime.catalog,
        runtime.storage,
        config.retention,
        targets or None,
        utcnow(),
        config.timezone,
    )
    logger = get_run_logger()
    for refused in (a for a in plan.garbage.actions if a.action == "refuse"):
        logger.warning("backup folder %s/%s: %s", refused.target, refused.backup_id, refused.reason)
    logger.info(
        "retention plan: keep %d, delete %d backup(s); garbage: %s",
        len(plan.decisions) - len(plan.deletions),
        len(plan.deletions),
        ", ".join(f"{a.action} {a.backup_id} ({a.reason})" for a in plan.garbage.actions) or "none",
    )
    return plan


@task(name="apply-retention", cache_policy=NO_CACHE, persist_result=True)
def apply_retention_task(config_path: str | None, decisions: list[RetentionDecision]) -> list[str]:
    """Delete the backups the plan lets go (catalog deleting -> objects -> deleted); returns
    their ids. Safe to retry: a backup already deleted is skipped."""
    runtime = open_runtime(config_path)
    deleted = apply_retention(runtime.catalog, runtime.storage, decisions)
    get_run_logger().info("deleted %d backup(s): %s", len(deleted), ", ".join(deleted) or "none")
    return deleted


@task(name="collect-garbage", cache_policy=NO_CACHE, persist_result=True)
def collect_garbage_task(config_path: str | None, plan: GarbagePlan) -> GarbageReport:
    """Remove unfinished uploads and the uncommitted folders the plan lets go, import the
    committed ones the catalog forgot. Safe to retry."""
    runtime = open_runtime(config_path)
    report = collect_garbage(runtime.catalog, runtime.storage, plan)
    get_run_logger().info(
        "garbage: %d unfinished upload(s) removed, %d folder(s) deleted, %d imported",
        report.incomplete_uploads,
        len(report.orphans_deleted),
        len(report.orphans_imported),
    )
    return report
