"""The `report` section: the daily report (runbook 001: `generate_daily_report.py >
reports/daily_$(date +%Y%m%d).md` at 6 PM), where its files go and which routes it is sent
through."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from runbook.config.core import Model, Name


class DailyReportSettings(Model):
    folder: Path = Field(
        default=Path("reports"), description="daily_YYYYMMDD.md files; relative to the config"
    )
    routes: list[Name] = Field(
        default_factory=list, description="notification routes the report is sent through"
    )


class ReportSettings(Model):
    daily: DailyReportSettings = Field(default_factory=DailyReportSettings)
