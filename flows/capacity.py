"""The capacity flows: samples every day, a report every month and quarter (runbooks 000, 001,
004's monthly capacity review; 002's quarterly one against its growth plan).

capacity_collect:
1. Open the config and catalog; list the sources (PostgreSQL, Redis, host, Kubernetes and
   Docker targets, backup bytes per target, the `capacity.series` from Prometheus with their
   backfill, the health history's levels); hourly: only those capacity.hourly names.
2. Measure each source as its own task run and store its samples in the catalog.
3. Publish what was stored (artifact `capacity-collect`) and return a CollectSummary; the run
   ends Failed when a source could not be measured (the others are still stored).

capacity_report:
1. Open the config, catalog and storage.
2. Forecast every resource from its history and Runbook's own events (maintenance ledger,
   retention deletes), and draw its chart.
3. Score the earlier reports' forecasts (their copies in storage) against the levels now.
4. Write the PNGs and the HTML report under the folder.
5. Store the report's copy under `_capacity/` in storage; remove those past keep_reports.
6. Publish the ranked table and the scoring (artifact `capacity-report`); push the
   days-until gauges to the Pushgateway when one is configured and the report covers every
   resource.
7. Return the CapacityReport; the run ends Failed when no copy could be stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from runbook.errors import RunFailed
from runbook.runtime import open_runtime
from tasks.capacity.collect import CollectSummary, hourly_sources, sources_of
from tasks.capacity.metrics import push_capacity_metrics
from tasks.capacity.report import CapacityReport, report_markdown
from tasks.capacity.tasks import (
    collect_source,
    forecast_resources,
    score_earlier_reports,
    store_report_copy,
    task_name,
    write_report_files,
)

COLLECT_ARTIFACT = "capacity-collect"
REPORT_ARTIFACT = "capacity-report"


@flow(name="capacity-collect", persist_result=True)
def capacity_collect(hourly: bool = False) -> CollectSummary:
    """Measure every capacity source once and store the samples in the catalog (Prometheus
    series also read their configured backfill with query_range; the health history's levels
    count too).

    Args:
        hourly: Only the sources capacity.hourly names, and the health history (the
            capacity-collect-hourly deployment).
    """
    runtime = open_runtime()
    at = datetime.now(UTC)
    sources = sources_of(runtime.config, runtime.catalog)
    if hourly:
        sources = hourly_sources(runtime.config, sources)
    results = [
        collect_source.with_options(task_run_name=task_name(source))(source, runtime, at)
        for source in sources
    ]
    summary = CollectSummary(
        ok=all(r.error is None for r in results), collected_at=at, sources=results
    )
    lines = [
        f"# Capacity samples, {at:%Y-%m-%d %H:%M} UTC",
        "",
        "| source | measured | new | error |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r.source} | {r.samples} | {r.stored} | {r.error or ''} |" for r in results]
    create_markdown_artifact(
        markdown="\n".join(lines), key=COLLECT_ARTIFACT, description="Capacity samples stored"
    )
    if not summary.ok:
        failed = ", ".join(r.source for r in results if r.error)
        message = f"capacity-collect: could not measure {failed}"
        return Failed(message=message, data=RunFailed(message, summary))
    return summary


@flow(name="capacity-report", persist_result=True)
def capacity_report(
    period: Literal["month", "quarter"] = "month",
    resources: list[str] = [],  # noqa: B006 - Prefect passes a copy; [] renders as a list in the UI
    html_file: str = "",
) -> CapacityReport:
    """Forecast days until 80 / 90 / 100 % of every resource's limit (P10 / P50 / P90),
    ranked by P10 days until 90 %, with charts and an HTML report.

    Args:
        period: The review this report is for (runbooks 000/001/004: month; 002: quarter).
        resources: Only these resources (as `runbook capacity report --json` names them).
            Empty: every resource with samples.
        html_file: Also write the HTML report to this path (it is always written under
            capacity.folder).
    """
    runtime = open_runtime()
    only = list(resources)
    report, charts = forecast_resources(runtime, period, only)
    scoring = score_earlier_reports(runtime, report, only)
    report = report.model_copy(update={"scoring": scoring})
    report = write_report_files(runtime, report, charts, html_file)
    report = store_report_copy(runtime, report, charts)
    create_markdown_artifact(
        markdown=report_markdown(report),
        key=REPORT_ARTIFACT,
        description="Capacity: days until 80/90/100 % per resource, nearest to full first",
    )
    if runtime.config.notifications.pushgateway is not None:
        push_capacity_metrics(runtime, report, bool(resources))
    if report.storage_error:
        message = f"capacity-report: no copy stored: {report.storage_error}"
        return Failed(message=message, data=RunFailed(message, report))
    return report
