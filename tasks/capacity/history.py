"""One resource's forecast from what the catalog holds: its samples, and the events of
Runbook's own that touched it. The report and the `capacity` health check take this same path
(this module draws nothing, so the health run does not load matplotlib)."""

from __future__ import annotations

from datetime import datetime

from runbook.catalog import MetricSamples, Sample
from runbook.config import Config
from tasks.capacity.events import Change, events_for
from tasks.capacity.forecast import Forecast, ForecastSettings, Job, Point, forecast


def settings_of(config: Config) -> ForecastSettings:
    capacity = config.capacity
    return ForecastSettings(
        min_samples=capacity.min_samples,
        horizon_days=max(7, int(capacity.horizon.total_seconds() // 86400)),
        lead_time_days=int(capacity.lead_time.total_seconds() // 86400),
        monthly_growth=capacity.plan.monthly_growth if capacity.plan else None,
        warn_days=capacity.days_until_90.warn,
        critical_days=capacity.days_until_90.critical,
    )


def job_of(store: MetricSamples, latest: Sample, changes: list[Change]) -> Job:
    """What forecasting the resource needs: its stored history, and the events of Runbook's
    own that touched it."""
    history = store.history(latest.resource)
    return Job(
        latest.resource,
        [Point(s.time, s.value, s.limit) for s in history],
        events_for(latest.resource, latest.kind, latest.target, changes),
    )


def forecast_resource(
    store: MetricSamples,
    latest: Sample,
    changes: list[Change],
    settings: ForecastSettings,
    now: datetime,
) -> Forecast:
    """One resource's forecast (the report and the `capacity` health check take this same
    path; the report forecasts many at once with `forecast_many`)."""
    job = job_of(store, latest, changes)
    return forecast(job.resource, job.points, job.events, settings, now=now)
