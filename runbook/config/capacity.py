"""Capacity reports: the `capacity` section (runbooks 000/001/004's monthly capacity review,
002's quarterly one with "Plan for 20% monthly growth", 003's table sizes), with defaults that
need no typing: history from what `capacity-collect` stores, forecasts once `min_samples` days
are known."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, model_validator

from runbook.config.core import Duration, Model, Name, Threshold, threshold_field


class CapacityPlan(Model):
    monthly_growth: float = Field(
        gt=-1, le=100, description="planned growth per month, 0.20 = 20 % (runbook 002)"
    )


class CapacitySeries(Model):
    """An extra series read from Prometheus: its value now (and for `backfill` days back with
    query_range), and its limit from `limit_query` or a fixed `limit`."""

    name: Name
    prometheus: Name = Field(description="a targets.prometheus name")
    query: str = Field(min_length=1)
    limit_query: str | None = None
    limit: float | None = Field(default=None, gt=0, description="a fixed limit instead")
    unit: str = Field(default="", max_length=16, description="bytes, connections, ...")
    backfill: Duration = Field(
        default=timedelta(0), description="read this far back once, so the first report has data"
    )
    step: Duration = Field(default=timedelta(days=1), description="query_range resolution")

    @model_validator(mode="after")
    def _one_limit(self) -> CapacitySeries:
        if self.limit_query is not None and self.limit is not None:
            raise ValueError("give limit_query or limit, not both")
        if self.step <= timedelta(0):
            raise ValueError("step: must be positive")
        return self


class CapacitySettings(Model):
    min_samples: int = Field(
        default=14, ge=3, description="days of history below which no date is forecast"
    )
    lead_time: Duration = Field(
        default=timedelta(days=30),
        description="how long adding capacity takes: act_by is this"
        " much before the P10 date of 90 %",
    )
    horizon: Duration = Field(
        default=timedelta(days=365), description="forecasts further out are reported as null"
    )
    plan: CapacityPlan | None = None
    series: list[CapacitySeries] = Field(default_factory=list)
    top_tables: int = Field(default=10, ge=0, le=500, description="largest tables and indexes")
    # The `capacity` health check (tasks/health/capacity.py) and each forecast's status: P10 days
    # until 90 % under warn / critical.
    days_until_90: Threshold = threshold_field(30, 7, "<")
    folder: Path | None = Field(
        default=None, description="charts and HTML reports [default: .runbook/capacity]"
    )
    hourly: list[Name] = Field(
        default_factory=list,
        description="targets (postgres, redis, host, kubernetes, docker) and series names also"
        " collected every hour (deployment capacity-collect-hourly)",
    )
    keep_reports: int = Field(
        default=24, ge=1, le=1000, description="report copies kept in storage under _capacity/"
    )

    @model_validator(mode="after")
    def _unique_series(self) -> CapacitySettings:
        seen: set[str] = set()
        for index, series in enumerate(self.series):
            if series.name in seen:
                raise ValueError(f"series[{index}].name: {series.name!r} is used twice")
            seen.add(series.name)
        if self.horizon < timedelta(days=7):
            raise ValueError("horizon: at least 7d")
        return self
