"""Alertmanager checks: the alerts firing now, and what changed since the previous run
(runbook 001's "Review overnight alerts").

  alertmanager.firing          the alerts firing now that match the target's matchers (not
                               silenced or inhibited unless configured); the check takes the
                               worst status their severity label maps to (critical ->
                               critical, warning -> warn, info -> ok; `unmapped` for others);
                               Alertmanager not answering gets the unreachable status
  alertmanager.since_last_run  alerts that started since the previous run and those no longer
                               firing (resolved or silenced since). A critical or warning
                               alert that stopped firing between runs makes it warn: someone
                               should review what happened overnight. Alerts still firing are
                               graded by alertmanager.firing, not twice. The first run has no
                               previous run to compare with: ok, and says so.

What the previous run saw is kept in the health state between runs. Alertmanager's API lists
active alerts only, so an alert that started and resolved between two runs is not seen: run
the alertmanager kind more often (`only: [alertmanager]` on an hourly deployment) to narrow
that gap.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from runbook.config import AlertmanagerTarget
from runbook.health import RANK, CheckResult, Status, timer, worst
from runbook.systems.alertmanager import (
    Alert,
    AlertmanagerUnreachable,
    NotAlertmanager,
    fetch_alerts,
    filters_of,
)

_SHOWN = 8  # alerts named in a message; the rest are counted
_IDENTIFYING = ("instance", "job", "namespace", "service", "pod", "deployment", "target")


def describe_alert(alert: Alert, status: str) -> str:
    """'DiskFull{instance="db-1"} critical': its name, identifying labels and severity."""
    labels = [f'{k}="{alert.labels[k]}"' for k in _IDENTIFYING if alert.labels.get(k) is not None][
        :3
    ]
    shown = f"{alert.name}{{{', '.join(labels)}}}" if labels else alert.name
    return f"{shown} {status}"


def _listing(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def firing_result(
    alerts: list[Alert], target: AlertmanagerTarget, now: datetime, duration: float = 0.0
) -> CheckResult:
    scope = f" matching {' and '.join(filters_of(target))}" if filters_of(target) else ""
    graded = sorted(
        ((Status(target.status_of(a.labels)), a) for a in alerts),
        key=lambda pair: (-RANK[pair[0]], pair[1].starts_at),
    )
    if not graded:
        message = f"no alerts firing{scope}"
    else:
        named = [
            f"{describe_alert(a, s.value)} for {_span((now - a.starts_at).total_seconds())}"
            for s, a in graded
        ]
        plural = "" if len(graded) == 1 else "s"
        message = f"{len(graded)} alert{plural} firing{scope}: {_listing(named)}"
    return CheckResult(
        check="alertmanager.firing",
        target=target.name,
        status=worst(s for s, _a in graded),
        value=len(graded),
        threshold=f"worst alert's {target.severity_label} label",
        message=message,
        duration=round(duration, 4),
    )


def since_result(
    alerts: list[Alert], target: AlertmanagerTarget, previous: dict[str, Any], now: datetime
) -> CheckResult:
    base = {"check": "alertmanager.since_last_run", "target": target.name}
    if not previous.get("at"):
        return CheckResult(
            **base,
            status=Status.OK,
            message="no previous run: from the next run on, the alerts that started or "
            "stopped firing since the previous run are listed here",
        )
    before_at = datetime.fromisoformat(previous["at"])
    before: dict[str, dict[str, str]] = previous.get("alerts", {})
    started = [a for a in alerts if a.fingerprint not in before or a.starts_at > before_at]
    current = {a.fingerprint for a in alerts}
    stopped = [seen for fingerprint, seen in before.items() if fingerprint not in current]
    # An alert that stopped firing is over, but a warning or critical one needs a review.
    review = worst(Status(seen["status"]) for seen in stopped)
    status = Status.WARN if RANK[review] >= RANK[Status.WARN] else Status.OK
    parts = []
    if started:
        named = [describe_alert(a, target.status_of(a.labels)) for a in started]
        parts.append(f"{len(started)} started ({_listing(named)})")
    if stopped:
        named = [seen["shown"] for seen in stopped]
        parts.append(f"{len(stopped)} no longer firing, resolved or silenced ({_listing(named)})")
    span = _span((now - before_at).total_seconds())
    message = f"since the previous run {span} ago: " + ("; ".join(parts) or "no change")
    if status == Status.WARN:
        message += ": review them"
    return CheckResult(
        **base,
        status=status,
        value=len(started) + len(stopped),
        threshold="warn when a warning or critical alert stopped firing between runs",
        message=message,
    )


def alerts_state(alerts: list[Alert], target: AlertmanagerTarget, now: datetime) -> dict:
    """What the next run compares with: the alerts firing now, by fingerprint."""
    return {
        "at": now.isoformat(),
        "alerts": {
            a.fingerprint: {
                "status": target.status_of(a.labels),
                "shown": describe_alert(a, target.status_of(a.labels)),
            }
            for a in alerts
        },
    }


def check_alertmanager(
    target: AlertmanagerTarget, unreachable: Status, previous: dict[str, Any], now: datetime
) -> tuple[list[CheckResult], dict[str, Any]]:
    """Both checks of one Alertmanager, and the state for the next run (the previous state
    again when Alertmanager could not be read, so the next run compares with what was seen)."""
    with timer() as elapsed:
        try:
            alerts = fetch_alerts(target)
        except (AlertmanagerUnreachable, NotAlertmanager) as exc:
            status = unreachable if isinstance(exc, AlertmanagerUnreachable) else Status.CRITICAL
            failed = CheckResult(
                check="alertmanager.firing",
                target=target.name,
                status=status,
                message=str(exc),
                duration=round(elapsed(), 4),
            )
            return [failed], previous
        took = elapsed()
    results = [
        firing_result(alerts, target, now, took),
        since_result(alerts, target, previous, now),
    ]
    return results, alerts_state(alerts, target, now)
