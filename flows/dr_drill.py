"""The DR drill flow: prove that backups restore, and measure RTO and RPO.

1. Choose the targets: the one given, or every PostgreSQL and Redis target.
2. Drill each (tasks/restore.py): sweep leftovers of dead drills, verify and download the
   backup (falling back past a corrupt `latest`), restore into a scratch database on the
   drill server, validate (Great Expectations, SQL checks, pg_amcheck), compare RTO and RPO
   with the targets, clean up.
3. Publish a markdown artifact and return a DrillRunSummary; the run ends Failed when any
   drill failed.
"""

from __future__ import annotations

from prefect import flow
from prefect.states import Failed
from pydantic import BaseModel

from runbook.catalog import DrillLog, DrillRecord, utcnow
from runbook.config import PostgresTarget, RedisTarget
from runbook.errors import RunbookError
from runbook.runtime import open_runtime
from tasks.report import drill_report_markdown, publish_markdown
from tasks.restore import drill_target


class DrillRunSummary(BaseModel):
    ok: bool
    drills: list[DrillRecord]


@flow(name="dr-drill", persist_result=True)
def dr_drill(
    target: str | None = None,
    backup: str = "latest",
    keep_on_failure: bool = False,
    jobs: int = 2,
    config_path: str | None = None,
) -> DrillRunSummary:
    """Restore drill of one target (default: every PostgreSQL and Redis target)."""
    runtime = open_runtime(config_path)
    config = runtime.config
    if target:
        targets = [config.target(target)]
    else:
        targets = [
            t for t in config.backup_targets() if isinstance(t, PostgresTarget | RedisTarget)
        ]
        if backup != "latest":
            raise RunbookError("a backup id belongs to one target: give the target too")
    if not targets:
        raise RunbookError("no PostgreSQL or Redis targets to drill")
    started = utcnow()
    drills = []
    for t in targets:
        state = drill_target(config_path, t.name, backup, keep_on_failure, jobs, return_state=True)
        result = state.result(raise_on_failure=False)
        if not isinstance(result, BaseException):
            drills.append(result)
            continue
        if len(targets) == 1:
            raise result  # one target: the CLI reports it (exit 2 for operator mistakes)
        recorded = DrillLog(runtime.catalog).list(target=t.name, limit=1)
        if recorded and recorded[0].started_at >= started:
            drills.append(recorded[0])  # the failed drill's own record
        else:
            raise result
    summary = DrillRunSummary(ok=all(d.passed for d in drills), drills=drills)
    publish_markdown("drill-report", drill_report_markdown(drills), "DR restore drills")
    if not summary.ok:
        bad = [d.target for d in drills if not d.passed]
        return Failed(message=f"drill failed for {', '.join(bad)}", data=summary)
    return summary
