"""Capacity health: the daily health run alerts before the monthly capacity review does. For
every resource with a limit (a disk, inodes, memory, connections, Redis maxmemory, a
Prometheus series with a limit), the P10 days until 90 % of that limit, graded against
`capacity.days_until_90` (default warn < 30, critical < 7 days).

One result per target the resources belong to, `capacity.days_until_90` (so maintenance
muting and notification streaks work per target as for every other check): its value is the
smallest P10 among the target's resources, its message names the nearest to full first.

The forecast is computed here from the stored samples, the same path the report takes
(`tasks.capacity.history.forecast_resource`), not read from a stored report: the report runs
monthly, and a month-old forecast cannot alert in time; samples are collected daily. Only
resources with a limit can reach 90 % (table and index sizes have none), which keeps the
number forecast small (~0.2 s each); the resources nearest to full are forecast first, and
those left when CHECK_BUDGET of the check's deadline is spent are reported, not guessed.

Fewer days than `capacity.min_samples`: "not enough history", ok with that reason (a new
install must not page for two weeks), unless the resource is already past 90 % of its limit,
which needs no forecast: critical.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from runbook.catalog import Catalog, MaintenanceLog, MetricSamples, ResourceInfo
from runbook.config import Config
from runbook.health import RANK, CheckResult, Status, describe, grade, worst
from tasks.capacity.collect_backups import retention_deletes
from tasks.capacity.events import Change, catalog_changes
from tasks.capacity.history import forecast_resource, settings_of

CHECK = "capacity.days_until_90"
CHECK_BUDGET = 0.7  # share of health.check_timeout spent forecasting; the rest is reported
ALREADY = 0.9  # at or past 90 % of the limit: critical without a forecast


@dataclass(frozen=True)
class Outcome:
    """One resource's verdict: its P10 days until 90 % (None: not within the horizon, or no
    forecast) and the words for it."""

    resource: str
    target: str
    status: Status
    p10: float | None
    text: str


def check_capacity(config: Config, catalog: Catalog, now: datetime) -> list[CheckResult]:
    """`capacity.days_until_90` per target with limited resources; a failed forecast of one
    resource is an unknown verdict for it, never an exception."""
    store = MetricSamples(catalog)
    limited = [info for info in store.resources() if info.latest.limit]
    threshold = config.capacity.days_until_90
    shown = describe(threshold, " days")
    if not limited:
        return [
            CheckResult(
                check=CHECK,
                target="capacity",
                status=Status.OK,
                threshold=shown,
                message="no capacity samples with a limit yet (run `runbook capacity collect`)",
            )
        ]
    # nearest to full first: the ones that matter are forecast before the budget runs out
    limited.sort(key=lambda info: -info.latest.value / info.latest.limit)
    budget = CHECK_BUDGET * config.health.check_timeout.total_seconds()
    started = time.monotonic()
    changes = catalog_changes(MaintenanceLog(catalog), retention_deletes(catalog))
    outcomes: list[Outcome] = []
    for info in limited:
        if time.monotonic() - started > budget:
            outcomes.append(
                Outcome(
                    info.latest.resource,
                    info.latest.target,
                    Status.UNKNOWN,
                    None,
                    "not forecast within the check's deadline",
                )
            )
            continue
        outcomes.append(_judge(info, store, changes, config, now))
    elapsed = time.monotonic() - started
    by_target: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_target.setdefault(outcome.target, []).append(outcome)
    per_target = elapsed / max(1, len(by_target))
    return [
        _result(target, found, shown, per_target) for target, found in sorted(by_target.items())
    ]


def _judge(
    info: ResourceInfo, store: MetricSamples, changes: list[Change], config: Config, now: datetime
) -> Outcome:
    latest = info.latest
    name, target = latest.resource, latest.target
    used = latest.value / latest.limit
    try:
        result = forecast_resource(store, latest, changes, settings_of(config), now)
    except Exception as exc:  # noqa: BLE001 - one resource's failure is its verdict
        return Outcome(
            name, target, Status.UNKNOWN, None, f"forecast failed: {type(exc).__name__}: {exc}"
        )
    percent = f"{100 * used:.1f} % used"
    if result.status == "not-enough-history":
        if used >= ALREADY:
            return Outcome(name, target, Status.CRITICAL, 0.0, f"already {percent}")
        return Outcome(
            name,
            target,
            Status.OK,
            None,
            f"not enough history ({result.samples} of {config.capacity.min_samples} days), "
            f"{percent}",
        )
    quantiles = result.days_until.get("90") or {}
    p10 = quantiles.get("p10")
    if p10 is None:
        why = "not growing" if result.status == "not-growing" else "not within the horizon"
        return Outcome(name, target, Status.OK, None, f"90 % {why}, {percent}")
    if p10 == 0:
        return Outcome(name, target, Status.CRITICAL, 0.0, f"already {percent}")
    p50 = quantiles.get("p50")
    text = f"P10 {p10:g} days to 90 % (P50 {'-' if p50 is None else f'{p50:g}'}), {percent}" + (
        f", act by {result.act_by}" if result.act_by else ""
    )
    return Outcome(name, target, grade(p10, config.capacity.days_until_90), p10, text)


def _result(target: str, found: list[Outcome], shown: str | None, took: float) -> CheckResult:
    status = worst(o.status for o in found)
    found = sorted(
        found,
        key=lambda o: (
            -RANK[o.status],
            o.p10 if o.p10 is not None else float("inf"),
            o.resource,
        ),
    )
    dated = [o.p10 for o in found if o.p10 is not None]
    head = "; ".join(f"{o.resource}: {o.text}" for o in found[:3])
    more = len(found) - 3
    waiting = sum(1 for o in found if o.text.startswith("not enough history"))
    summary = f"{len(found)} resource{'s' if len(found) != 1 else ''} with a limit"
    if waiting:
        summary += f", {waiting} with not enough history"
    message = f"{head}" + (f" (and {more} more)" if more > 0 else "") + f" [{summary}]"
    return CheckResult(
        check=CHECK,
        target=target,
        status=status,
        value=min(dated) if dated else None,
        unit="d",
        threshold=shown,
        message=message,
        duration=round(took, 4),
    )
