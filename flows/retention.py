"""The retention flow (grandfather-father-son): plan, then apply.

1. Plan (task plan-retention): read the chosen targets' backups from the catalog and the backup
   folders from storage; keep or delete each backup with its reasons (a pure function; never
   the newest verified backup), and import, delete or keep each folder the catalog does not
   track (committed: import, storage wins; uncommitted: delete once older than the grace period).
2. Apply the plan, unless this is a dry run (decided here, once; the procedures have no dry-run
   mode): delete the backups it lets go, catalog `deleting` -> objects, manifest first ->
   `deleted` (task apply-retention); collect the garbage: unfinished uploads and the folders
   planned above (task collect-garbage). Both are retried on transient faults.
3. Publish the plan and what was done as the retention-report artifact; return a
   RetentionSummary.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from runbook.retry import retry_options
from runbook.runtime import open_runtime
from tasks.backups.report import retention_report_markdown
from tasks.backups.retention import RetentionDecision
from tasks.backups.tasks import apply_retention_task, collect_garbage_task, plan_retention_task


class RetentionSummary(BaseModel):
    dry_run: bool
    decisions: list[RetentionDecision]
    deleted: list[str]
    garbage: dict[str, int | list[str]]


@flow(name="retention", persist_result=True)
def retention(
    dry_run: bool = True,
    targets: list[str] = [],  # noqa: B006 - Prefect passes a copy; [] renders as a list
) -> RetentionSummary:
    """Plan grandfather-father-son retention and, unless a dry run, delete what it lets go.

    Args:
        dry_run: Only publish the plan (keep/delete with a reason each); delete nothing.
        targets: Only these targets (names from runbook.yaml). Empty: every target.
    """
    runtime = open_runtime()
    config = runtime.config
    config_path = str(config.source)
    names = [t.name for t in config.select_targets(list(targets))] if targets else []
    retried = retry_options(config.backup.retries, config.backup.retry_delay.total_seconds())

    plan = plan_retention_task.with_options(**retried)(config_path, names)
    if dry_run:
        deleted, garbage = [], plan.garbage.report()
    else:
        deleted = apply_retention_task.with_options(**retried)(config_path, plan.decisions)
        garbage = collect_garbage_task.with_options(**retried)(config_path, plan.garbage)

    summary = RetentionSummary(
        dry_run=dry_run, decisions=plan.decisions, deleted=deleted, garbage=asdict(garbage)
    )
    create_markdown_artifact(
        markdown=retention_report_markdown(summary),
        key="retention-report",
        description="Retention plan",
    )
    return summary
