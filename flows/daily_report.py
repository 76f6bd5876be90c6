"""The daily report flow (runbook 001: the 6 PM report).

1. Load the config; the day is today in the config's timezone, or the one asked for.
2. Read the day from the catalog: health (status changes, worst checks, time spent critical),
   backups and verifications (sizes, growth), drills, maintenance actions.
3. Publish it as a markdown artifact and write it to <report.daily.folder>/daily_YYYYMMDD.md.
4. Send it through the routes in `report.daily.routes`. The run ends Failed when a route
   could not be sent to (the file and the artifact are there all the same).
"""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed
from pydantic import BaseModel

from runbook.errors import RunbookError, RunFailed
from runbook.runtime import open_runtime
from tasks.report.daily import DailyReport, daily_markdown, today
from tasks.report.tasks import build_report, send_report_task, write_report


class DailyReportOutcome(BaseModel):
    report: DailyReport
    file: str
    sent: list[str]
    not_sent: list[str]


@flow(name="daily-report")
def daily_report(day: str = "") -> DailyReportOutcome:
    """The day's report: health, backups and verifications, drills, maintenance.

    Args:
        day: The day (YYYY-MM-DD) in the config's timezone. Empty: today.
    """
    runtime = open_runtime()
    config = runtime.config
    config_path = str(config.source)
    try:
        chosen = date.fromisoformat(day) if day else today(config.timezone)
    except ValueError:
        raise RunbookError(f"day: expected YYYY-MM-DD, got {day!r}") from None

    report = build_report(config_path, chosen)
    markdown = daily_markdown(report)
    create_markdown_artifact(markdown=markdown, key="daily-report", description="Daily report")
    path = write_report(config_path, report.filename, markdown)

    subject = f"Runbook daily report {chosen:%Y-%m-%d}"
    states = {
        name: send_report_task(config_path, name, subject, markdown, return_state=True)
        for name in config.report.daily.routes
    }
    outcome = DailyReportOutcome(
        report=report,
        file=path,
        sent=[n for n, s in states.items() if s.is_completed()],
        not_sent=[n for n, s in states.items() if not s.is_completed()],
    )
    get_run_logger().info(
        "daily report %s: %s, sent to %s", chosen, path, ", ".join(outcome.sent) or "no route"
    )
    if outcome.not_sent:
        message = f"daily report not sent to {', '.join(outcome.not_sent)}"
        return Failed(message=message, data=RunFailed(message, outcome))
    return outcome
