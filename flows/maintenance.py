"""The maintenance window flow: upkeep of PostgreSQL, Redis and the host (its rotated logs,
the team's scripts) that is planned, bounded and proven.

1. Choose the window, targets and procedures, and refuse an operator's mistake (an unknown
   window, target or procedure) before anything is recorded.
2. Run the window (tasks/maintenance/window.py), one task run per step: sweep what crashed
   windows of these targets left, plan every procedure on every target and publish the plan
   (artifact `maintenance-plan`); a dry run records every action `dry-run` and stops there.
   Otherwise: the pre-maintenance backup through the backup flow, the targets' locks, enter
   maintenance mode, apply under the window's budget, exit maintenance mode (always), verify.
3. Publish the window's report (artifact `maintenance-report`) and return a
   MaintenanceSummary; the run ends Failed when an action failed, a target stayed locked,
   maintenance mode could not be entered or left, or the window was interrupted.
"""

from __future__ import annotations

from functools import partial

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import BaseModel

from flows.backup import backup
from runbook.catalog import BackupStatus, MaintenanceRun
from runbook.config.maintenance import Procedure as ProcedureName
from runbook.errors import RunFailed
from runbook.formatting import backup_error
from runbook.runtime import open_runtime
from tasks.maintenance.registry import PROCEDURES
from tasks.maintenance.report import window_markdown
from tasks.maintenance.run import WindowRequest
from tasks.maintenance.tasks import as_task_run, log_to_prefect
from tasks.maintenance.window import choose_window, run_window

REPORT_ARTIFACT = "maintenance-report"


class MaintenanceSummary(BaseModel):
    ok: bool
    run: MaintenanceRun


@flow(name="maintenance", persist_result=True)
def maintenance(
    window: str = "weekly",
    targets: list[str] = [],  # noqa: B006 - Prefect passes a copy; [] renders as a list in the UI
    procedures: list[ProcedureName] = [],  # noqa: B006
    dry_run: bool = True,
) -> MaintenanceSummary:
    """Plan every maintenance procedure of a window and, unless a dry run, apply the plan
    within the window's time, in maintenance mode, then verify what it did.

    Args:
        window: The maintenance window (runbook.yaml's maintenance.windows: weekly, monthly):
            its duration is the budget no action may overrun, and its procedures run.
        targets: Targets to maintain (names from runbook.yaml: PostgreSQL, Redis, files,
            HTTP, Prometheus, Docker, Kubernetes). Empty: every target of the kinds the
            procedures apply to. The host's procedures (log_archive, command) run whatever
            the targets.
        procedures: Only these procedures (vacuum, reindex, idle_connections, analyze_stale,
            query_baseline, redis_cleanup, log_archive, command, config_drift,
            security_audit, docker_cleanup, rollout_restart). Empty: the window's. Invalid
            indexes are always cleaned first.
        dry_run: Only plan and publish the plan (every action recorded as dry-run); change
            nothing, take no backup, do not enter maintenance mode.
    """
    runtime = open_runtime()
    choice = choose_window(runtime.config, window, list(targets), list(procedures), PROCEDURES)
    request = WindowRequest(
        runtime=runtime,
        window=choice.window,
        settings=choice.settings,
        targets=choice.targets,
        procedures=choice.procedures,
        registry=PROCEDURES,
        dry_run=dry_run,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        back_up=partial(back_up_first, label=f"pre-maintenance-{choice.window}"[:63]),
        publish=publish_markdown,
        on_step=log_to_prefect,
    )
    run = run_window(request, as_task_run)
    summary = MaintenanceSummary(ok=run.ok, run=run)
    publish_markdown(REPORT_ARTIFACT, window_markdown(run))
    if not run.ok:
        message = f"maintenance {run.window} {run.status.value}: {run.error or 'see the report'}"
        return Failed(message=message, data=RunFailed(message, summary))
    return summary


def back_up_first(names: list[str], label: str = "") -> dict[str, str | None]:
    """The pre-maintenance backup, through the backup flow (a subflow run), labelled (e.g.
    pre-maintenance-weekly): target -> None when its backup was verified, else why not."""
    state = backup(targets=names, verify=True, label=label, return_state=True)
    result = RunFailed.summary_of(state.result(raise_on_failure=False))
    if isinstance(result, BaseException):
        why = f"the backup flow failed: {type(result).__name__}: {result}"
        return {name: why for name in names}
    return {
        record.target: None
        if record.status == BackupStatus.VERIFIED
        else (backup_error(record) or record.status.value)
        for record in result.backups
    }


def publish_markdown(key: str, markdown: str) -> None:
    descriptions = {
        "maintenance-plan": "Maintenance plan: each action, its reason, its estimate",
        REPORT_ARTIFACT: "Maintenance window: what was done, before and after",
    }
    create_markdown_artifact(markdown=markdown, key=key, description=descriptions.get(key))
