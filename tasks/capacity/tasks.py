"""The capacity wing's Prefect tasks: one task run per measured source (`collect-postgres-app`,
`collect-host-this-machine`, ...), and the report's steps: the forecast, the scoring of earlier
reports, the files under the folder, the copy in storage."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from runbook.catalog import MetricSamples
from runbook.runtime import Runtime
from runbook.storage import StorageError
from tasks.capacity.collect import Source, SourceResult, measure_and_store
from tasks.capacity.report import (
    CapacityReport,
    build_report,
    report_folder,
    report_html,
    report_markdown,
    write_report,
)
from tasks.capacity.scoring import score_earlier
from tasks.capacity.stored import earlier_forecasts, store_and_prune


# Not persisted: the runtime holds DSNs; the summary is the flow's own result.
@task(cache_policy=NO_CACHE, persist_result=False)
def collect_source(source: Source, runtime: Runtime, at: datetime) -> SourceResult:
    """Measure one source and store its samples in the catalog."""
    return measure_and_store(source, runtime.catalog, at)


@task(cache_policy=NO_CACHE, persist_result=False)
def forecast_resources(
    runtime: Runtime, period: str, only: list[str]
) -> tuple[CapacityReport, dict[str, bytes]]:
    """Forecast every resource and draw its chart (file name -> PNG)."""
    return build_report(runtime.config, runtime.catalog, period=period, only=only)


@task(cache_policy=NO_CACHE, persist_result=False)
def score_earlier_reports(
    runtime: Runtime, report: CapacityReport, only: list[str]
) -> dict[str, Any] | None:
    """How the stored earlier reports' forecasts came true against each resource's newest
    sample; None when storage could not be listed (said in the log and the report)."""
    actuals = {
        info.latest.resource: info.latest
        for info in MetricSamples(runtime.catalog).resources()
        if not only or info.latest.resource in only
    }
    problems: list[str] = []
    try:
        earlier = earlier_forecasts(runtime.storage, report.generated_at, problems)
        return score_earlier(earlier, actuals, problems)
    except StorageError as exc:
        get_run_logger().warning("earlier capacity reports not scored: %s", exc)
        return None


@task(cache_policy=NO_CACHE, persist_result=False)
def write_report_files(
    runtime: Runtime, report: CapacityReport, charts: dict[str, bytes], html_file: str
) -> CapacityReport:
    """The PNGs and the HTML report under capacity.folder (and at html_file)."""
    folder = report_folder(runtime.config)
    return write_report(report, charts, folder, Path(html_file) if html_file else None)


@task(cache_policy=NO_CACHE, persist_result=False)
def store_report_copy(
    runtime: Runtime, report: CapacityReport, charts: dict[str, bytes]
) -> CapacityReport:
    """The report's copy under _capacity/ in storage; then the copies beyond
    capacity.keep_reports removed. A storage fault is kept in `storage_error`."""
    stored, error, plan = store_and_prune(
        runtime.storage,
        report,
        report_markdown(report),
        report_html(report, charts),
        charts,
        runtime.config.capacity.keep_reports,
    )
    logger = get_run_logger()
    for decision in plan:
        if not decision.keep:
            logger.info("removed capacity report copy %s: %s", decision.id, decision.reason)
    # The bands are in the copy now; the flow's persisted result does not carry them.
    resources = [r.model_copy(update={"band": None}) for r in report.resources]
    return report.model_copy(
        update={"stored": stored, "storage_error": error, "resources": resources}
    )


def task_name(source: Source) -> str:
    return "collect-" + source.name.replace(" ", "-")
