"""The DR drill flow: prove that backups restore, and measure RTO and RPO.

1. Choose the targets (the ones given, or every PostgreSQL and Redis target) and refuse an
   operator's mistake (unknown target or backup id, a drill server that is the source)
   before anything is recorded.
2. Drill each (tasks/drills/), one task run per step: sweep leftovers of dead drills, pick
   (verify and download the backup, falling back past a corrupt `latest`), restore into a
   scratch database on the drill server, validate (Great Expectations, SQL checks,
   pg_amcheck), objectives (RTO and RPO against the targets); cleanup always runs. A failed
   step is a failed task run, and the drill's record names it (`failed_step`).
3. Publish a markdown artifact, push each target's drill metrics to the Pushgateway when one
   is configured (a failed push is a warning), and return a DrillRunSummary; the run ends
   Failed when any drill failed.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import BaseModel

from runbook.catalog import DrillLog, DrillRecord, utcnow
from runbook.config import PostgresTarget, RedisTarget, TargetConfig
from runbook.errors import RunbookError, RunFailed
from runbook.runtime import Runtime, open_runtime
from tasks.drills.drill import DrillRun, check_drill_request, run_drill
from tasks.drills.metrics import push_drill_metrics
from tasks.drills.report import drill_report_markdown
from tasks.drills.tasks import as_task_run, log_to_prefect


class DrillRunSummary(BaseModel):
    ok: bool
    drills: list[DrillRecord]


@flow(name="dr-drill", persist_result=True)
def dr_drill(
    targets: list[str] = [],  # noqa: B006 - Prefect passes a copy; [] renders as a list in the UI
    backup: str = "latest",
    keep_on_failure: bool = False,
    jobs: int = 2,
) -> DrillRunSummary:
    """Restore a backup into a scratch database, validate it, measure RTO and RPO.

    Args:
        targets: PostgreSQL and Redis targets to drill (names from runbook.yaml). Empty: every
            one of them.
        backup: "latest" (the newest verified backup, falling back past a corrupt one) or a
            backup id from `runbook backups list` (then give exactly one target, its own).
        keep_on_failure: Keep the scratch database of a failed drill for forensics.
        jobs: Parallel pg_restore jobs.
    """
    runtime = open_runtime()
    chosen = resolve_drill_targets(runtime, list(targets), backup)
    started = utcnow()
    drills = []
    for target in chosen:
        run = DrillRun(
            runtime.config,
            runtime.catalog,
            runtime.storage,
            target,
            backup,
            keep_on_failure=keep_on_failure,
            jobs=jobs,
            flow_run_id=str(flow_run.id) if flow_run.id else None,
            on_step=log_to_prefect,
        )
        try:
            drills.append(run_drill(run, as_task_run))
        except Exception:
            if len(chosen) == 1:
                raise  # one target: the CLI reports it (exit 2 for operator mistakes)
            recorded = DrillLog(runtime.catalog).list(target=target.name, limit=1)
            if not recorded or recorded[0].started_at < started:
                raise
            drills.append(recorded[0])  # the refused drill's own record
    summary = DrillRunSummary(ok=all(d.passed for d in drills), drills=drills)
    create_markdown_artifact(
        markdown=drill_report_markdown(drills), key="drill-report", description="DR restore drills"
    )
    if runtime.config.notifications.pushgateway is not None:
        push_drill_metrics(str(runtime.config.source), [d.target for d in drills])  # a warning
    if not summary.ok:
        bad = [d.target for d in drills if not d.passed]
        message = f"drill failed for {', '.join(bad)}"
        return Failed(message=message, data=RunFailed(message, summary))
    return summary


def resolve_drill_targets(runtime: Runtime, names: list[str], backup: str) -> list[TargetConfig]:
    """The targets to drill, every operator mistake refused before any drill is recorded."""
    config = runtime.config
    if names:
        chosen = [config.target(name) for name in names]
    else:
        chosen = [t for t in config.backup_targets() if isinstance(t, PostgresTarget | RedisTarget)]
    if backup != "latest":
        if len(chosen) != 1:
            owner = runtime.catalog.get_backup(backup).target  # an unknown id fails here
            raise RunbookError(
                f"backup {backup} belongs to one target ({owner!r}): give that target alone"
            )
    if not chosen:
        raise RunbookError("no PostgreSQL or Redis targets to drill")
    for target in chosen:
        check_drill_request(runtime.catalog, target, backup)
    return chosen
