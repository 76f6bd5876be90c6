"""The health flow: every check the runbooks do by hand, graded, kept and alerted.

1. Load the config and choose the check kinds (all, or `only`).
2. Run every check concurrently, each under a hard deadline (a hung system turns its check
   unknown or critical; the run goes on).
3. Record the results in the catalog with each check's failing streak.
4. Publish a markdown and a table artifact (keyed: the Artifacts page shows the latest).
5. Notify through the routes (and the single webhook, the implicit route "webhook") the
   checks that started failing (after N runs in a row), got worse or recovered, those still
   failing past a route's repeat interval, and escalations; Pushgateway metrics when
   configured. Targets under a running maintenance window (the ledger says so) do not notify
   a failure: the run's events and log say which and why.
6. When the run turns critical and `diagnostics.on_critical` is set: a diagnostics bundle
   (the diagnose flow), once per critical episode.
7. Log one line with the status, severity and failing checks; return a HealthReport. The run
   ends Failed when any check is critical.
"""

from __future__ import annotations

import logging
import secrets
import socket
from datetime import datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from flows.diagnose import diagnose
from runbook.catalog import Catalog, HealthHistory, MaintenanceLog, utcnow
from runbook.errors import RunFailed
from runbook.health import RANK, CheckResult, Status, severity, worst
from runbook.runtime import open_runtime
from tasks.health.notify import MUTED, metrics_text
from tasks.health.registry import CheckKind, check_plan, select_kinds
from tasks.health.report import health_report_markdown, health_table_rows
from tasks.health.tasks import (
    diagnosis_due,
    notify_route,
    plan_notifications,
    push_health_metrics,
    record_notifications,
    record_results,
    run_check,
)


class HealthReport(BaseModel):
    run_id: str
    status: Status
    severity: str | None
    checks: list[CheckResult]
    # what was notified: "failing: http.status on api", ...; and what a maintenance window kept
    # quiet: "muted: postgres.connections on app (critical): under maintenance (...)"
    events: list[str]
    diagnostics: str | None = None  # the bundle this run started (diagnostics.on_critical)

    @property
    def critical(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == Status.CRITICAL]


@flow(name="health", persist_result=True, task_runner=ThreadPoolTaskRunner(max_workers=16))
def daily_health(only: list[CheckKind] = []) -> HealthReport:  # noqa: B006 - Prefect copies it
    """Run the health checks, grade them ok/warn/critical, keep them and alert once per episode.

    Args:
        only: Check kinds to run (http, postgres, redis, prometheus, alertmanager, kubernetes,
            docker, host, logs, backups, capacity). Empty: every kind.
    """
    runtime = open_runtime()
    config_path = str(runtime.config.source)
    kinds = select_kinds(list(only))
    now = utcnow()
    run_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
    history = HealthHistory(runtime.catalog)
    history.start(run_id, now, kinds if only else [], str(flow_run.id) if flow_run.id else None)

    futures = [
        run_check.submit(config_path, kind, name, name or kind, now)
        for kind, name in check_plan(runtime.config, kinds)
    ]
    results = [result for future in futures for result in future.result()]
    failing = any(r.status != Status.OK for r in results)
    quiet = targets_under_maintenance(runtime.catalog, utcnow())
    tracked = record_results(config_path, run_id, now, results, quiet)

    status = worst(r.status for r in results)
    level = severity(results)
    events = [
        f"{t.event}: {t.result.check} on {t.result.target} ({t.result.status.value})"
        + (f": {quiet[t.result.target]}" if t.event == MUTED else "")
        for t in tracked
        if t.event
    ]
    for target in sorted(quiet.keys() & {r.target for r in results}):
        get_run_logger().info("not notifying for %s: %s", target, quiet[target])
    report = HealthReport(
        run_id=run_id, status=status, severity=level, checks=results, events=events
    )
    create_markdown_artifact(
        markdown=health_report_markdown(report),
        key="health-report",
        description="Latest health run",
    )
    create_table_artifact(
        table=health_table_rows(results), key="health-checks", description="Latest health checks"
    )

    notifications = runtime.config.notifications
    deliveries = plan_notifications(config_path, tracked, now, quiet)
    delivered = [
        d
        for d in deliveries
        if not notify_route(config_path, d, level, return_state=True).is_failed()
    ]
    record_notifications(config_path, tracked, delivered, now)
    if notifications.pushgateway is not None:
        push_health_metrics(
            config_path,
            metrics_text(results, utcnow().timestamp(), {t.result.key: t.streak for t in tracked}),
            socket.gethostname(),
            return_state=True,
        )
    if runtime.config.diagnostics.on_critical and diagnosis_due(
        config_path, run_id, status == Status.CRITICAL
    ):
        bundle = diagnose(incident=f"health-{run_id}", return_state=True)
        if bundle.is_completed():
            report.diagnostics = bundle.result().id
        get_run_logger().warning(
            "critical: diagnostics %s", report.diagnostics or f"failed ({bundle.message})"
        )
    history.finish(run_id, status, level)
    level_of_line = logging.WARNING if failing else logging.INFO
    get_run_logger().log(
        logging.ERROR if status == Status.CRITICAL else level_of_line, summary_line(report)
    )

    if status == Status.CRITICAL:
        bad = [f"{c.check} on {c.target}" for c in report.critical]
        message = f"{len(bad)} critical: {', '.join(bad[:5])}"
        return Failed(message=message, data=RunFailed(message, report))
    return report


def targets_under_maintenance(catalog: Catalog, now: datetime) -> dict[str, str]:
    """Target -> why it is kept quiet: a maintenance window (not a dry run) is running on it."""
    return {
        target: f"under maintenance (window {run.window}, run {run.id}, until "
        f"{run.quiet_until:%Y-%m-%d %H:%M} UTC)"
        for target, run in MaintenanceLog(catalog).under_maintenance(now).items()
    }


def summary_line(report: HealthReport) -> str:
    """One line for the run's log: status, severity, counts and the failing checks."""
    failing = [c for c in report.checks if c.status != Status.OK]
    failing.sort(key=lambda c: -RANK[c.status])
    counts = ", ".join(
        f"{sum(1 for c in report.checks if c.status == s)} {s.value}"
        for s in (Status.CRITICAL, Status.WARN, Status.UNKNOWN, Status.OK)
    )
    line = f"health {report.status.value}" + (f" ({report.severity})" if report.severity else "")
    line += f": {len(report.checks)} checks, {counts}"
    if failing:
        shown = [f"{c.status.value} {c.check} on {c.target}" for c in failing[:8]]
        more = f" and {len(failing) - 8} more" if len(failing) > 8 else ""
        line += "; failing: " + ", ".join(shown) + more
    return line
