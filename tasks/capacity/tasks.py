"""The capacity wing's Prefect tasks: one task run per measured source (`collect-postgres-app`,
`collect-host-this-machine`, ...), and the report's forecast as one task run."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from runbook.runtime import Runtime
from tasks.capacity.collect import Source, SourceResult, measure_and_store
from tasks.capacity.report import CapacityReport, build_report, report_folder, write_report


# Not persisted: the runtime holds DSNs; the summary is the flow's own result.
@task(cache_policy=NO_CACHE, persist_result=False)
def collect_source(source: Source, runtime: Runtime, at: datetime) -> SourceResult:
    """Measure one source and store its samples in the catalog."""
    return measure_and_store(source, runtime.catalog, at)


@task(cache_policy=NO_CACHE, persist_result=False)
def forecast_and_write(
    runtime: Runtime, period: str, only: list[str], html_file: str
) -> CapacityReport:
    """Forecast every resource, draw its chart, write the PNGs and the HTML report."""
    report, charts = build_report(runtime.config, runtime.catalog, period=period, only=only)
    folder = report_folder(runtime.config)
    return write_report(report, charts, folder, Path(html_file) if html_file else None)


def task_name(source: Source) -> str:
    return "collect-" + source.name.replace(" ", "-")
