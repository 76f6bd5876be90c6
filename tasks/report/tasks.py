"""The report wing's Prefect tasks: build the day's report, keep it as a file, send it."""

from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from runbook.config import Config
from runbook.retry import retry_if_transient
from runbook.runtime import open_runtime
from tasks.report.daily import DailyReport, build_daily_report
from tasks.report.send import send_report


@task(name="build-daily-report", cache_policy=NO_CACHE)
def build_report(config_path: str | None, day: date) -> DailyReport:
    runtime = open_runtime(config_path)
    return build_daily_report(runtime.catalog, day, runtime.config.timezone)


def report_folder(config: Config) -> Path:
    folder = config.report.daily.folder.expanduser()
    if not folder.is_absolute() and config.source is not None:
        folder = config.source.parent / folder
    return folder


@task(name="write-daily-report", cache_policy=NO_CACHE)
def write_report(config_path: str | None, filename: str, markdown: str) -> str:
    """<folder>/daily_YYYYMMDD.md, replaced atomically (a rerun of the day rewrites it)."""
    folder = report_folder(open_runtime(config_path).config)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as handle:
        handle.write(markdown)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)
    return str(path)


@task(
    name="send-daily-report",
    task_run_name="send-report-{route_name}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_if_transient,
)
def send_report_task(config_path: str | None, route_name: str, subject: str, markdown: str) -> None:
    route = open_runtime(config_path).config.notifications.route(route_name)
    if route is None:
        raise RuntimeError(f"no notification route named {route_name!r}")
    send_report(route, subject, markdown)
