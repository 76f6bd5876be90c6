"""The retention flow (grandfather-father-son).

1. Read every backup of the chosen targets from the catalog.
2. Plan keep/delete with a reason each (a pure function; never the newest verified backup).
3. Unless dry_run: delete storage objects first, then mark the catalog rows deleted.
4. Collect garbage: unfinished uploads and uncommitted backup folders older than the grace
   period; committed folders the catalog forgot are imported instead (storage wins).
5. Publish the plan as a table artifact and return a RetentionSummary.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from runbook.catalog import utcnow
from runbook.runtime import open_runtime
from tasks.backups.report import retention_report_markdown
from tasks.backups.retention import (
    apply_retention,
    candidates_from_catalog,
    collect_garbage,
    plan_retention,
)


class RetentionItem(BaseModel):
    id: str
    target: str
    status: str
    at: datetime
    action: str
    reasons: list[str]


class RetentionSummary(BaseModel):
    dry_run: bool
    decisions: list[RetentionItem]
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
    names = [t.name for t in config.select_targets(list(targets))] if targets else None
    now = utcnow()
    decisions = plan_retention(
        candidates_from_catalog(runtime.catalog, names), config.retention, now, config.timezone
    )
    deleted = [] if dry_run else apply_retention(runtime.catalog, runtime.storage, decisions)
    garbage = collect_garbage(
        runtime.catalog, runtime.storage, now, config.retention.grace, apply=not dry_run
    )
    summary = RetentionSummary(
        dry_run=dry_run,
        decisions=[
            RetentionItem(
                id=d.id,
                target=d.target,
                status=d.status,
                at=d.at,
                action=d.action,
                reasons=list(d.reasons),
            )
            for d in decisions
        ],
        deleted=deleted,
        garbage=vars(garbage),
    )
    create_markdown_artifact(
        markdown=retention_report_markdown(summary),
        key="retention-report",
        description="Retention plan",
    )
    return summary
