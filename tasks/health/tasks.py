"""The health wing's Prefect tasks: one check kind under its deadline, recording the results
with their failing streaks, and telling people.
"""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from runbook.catalog import HealthHistory
from runbook.health import CheckResult, Status, Tracked, track
from runbook.retry import retry_if_transient
from runbook.runtime import open_runtime
from tasks.health.notify import (
    ROUTES_STATE,
    Delivery,
    plan_deliveries,
    push_metrics,
    quiet_for_maintenance,
    record_deliveries,
    send_delivery,
    send_webhook,
)
from tasks.health.registry import deadline_for, run_kind, run_with_deadline


@task(name="health-check", task_run_name="check-{kind}-{label}", cache_policy=NO_CACHE)
def run_check(
    config_path: str | None, kind: str, name: str | None, label: str, now: datetime
) -> list[CheckResult]:
    """One kind of check for one target (all HTTP endpoints at once), under a deadline."""
    runtime = open_runtime(config_path)
    config = runtime.config
    return run_with_deadline(
        lambda: run_kind(runtime, kind, name, now),
        deadline_for(config, kind),
        kind,
        label,
        Status(config.health.unreachable),
    )


@task(name="record-health", cache_policy=NO_CACHE)
def record_results(
    config_path: str | None,
    run_id: str,
    at: datetime,
    results: list[CheckResult],
    quiet: dict[str, str] | None = None,
) -> list[Tracked]:
    """Store the run's results with their failing streaks; say what to notify (nothing for
    the targets in `quiet`, under maintenance: target -> why)."""
    runtime = open_runtime(config_path)
    history = HealthHistory(runtime.catalog)
    previous = history.last_results([r.key for r in results])
    tracked = track(results, previous, runtime.config.health.notify_after)
    tracked = quiet_for_maintenance(tracked, quiet or {})
    history.record(run_id, at, tracked)
    return tracked


@task(name="notify-webhook", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def notify_webhook(config_path: str | None, payload: dict) -> None:
    settings = open_runtime(config_path).config.notifications.webhook
    if settings is not None:
        send_webhook(settings, payload)


@task(name="plan-notifications", cache_policy=NO_CACHE)
def plan_notifications(
    config_path: str | None, tracked: list[Tracked], now: datetime, quiet: dict[str, str]
) -> list[Delivery]:
    """What each notification route is told after this run (alerts, repeats, escalations)."""
    runtime = open_runtime(config_path)
    routes = runtime.config.notifications.routes_in_effect()
    state = HealthHistory(runtime.catalog).get_state(ROUTES_STATE)
    return plan_deliveries(tracked, routes, state, now, quiet)


@task(
    name="notify-route",
    task_run_name="notify-{delivery.route}-{delivery.reason}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_if_transient,  # a wrong password or URL never retries
)
def notify_route(config_path: str | None, delivery: Delivery, severity: str | None) -> None:
    route = open_runtime(config_path).config.notifications.route(delivery.route)
    if route is not None:
        send_delivery(route, delivery, severity)


@task(name="record-notifications", cache_policy=NO_CACHE)
def record_notifications(
    config_path: str | None, tracked: list[Tracked], delivered: list[Delivery], now: datetime
) -> None:
    """Keep what was delivered, so repeats wait their interval and escalations happen once."""
    history = HealthHistory(open_runtime(config_path).catalog)
    state = history.get_state(ROUTES_STATE)
    history.put_state(ROUTES_STATE, record_deliveries(state, tracked, delivered, now))


DIAGNOSIS_STATE = "diagnose:episode"  # health state key: the critical episode diagnosed


@task(name="diagnosis-due", cache_policy=NO_CACHE)
def diagnosis_due(config_path: str | None, run_id: str, critical: bool) -> bool:
    """True once per critical episode (the first critical run after a run that was not): the
    episode is marked before the bundle is collected, so a failing bundle is not retried every
    run; a run that is not critical ends the episode."""
    history = HealthHistory(open_runtime(config_path).catalog)
    episode = history.get_state(DIAGNOSIS_STATE)
    if not critical:
        if episode:
            history.put_state(DIAGNOSIS_STATE, {})
        return False
    if episode.get("since"):
        return False
    history.put_state(DIAGNOSIS_STATE, {"since": run_id})
    return True


@task(name="push-metrics", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def push_health_metrics(config_path: str | None, text: str, instance: str) -> None:
    settings = open_runtime(config_path).config.notifications.pushgateway
    if settings is not None:
        push_metrics(settings, text, instance)
