"""Telling people: notification routes by severity and Prometheus Pushgateway metrics.

Routes (`notifications.routes`, and the single `notifications.webhook` as the implicit route
"webhook") each take the checks of some statuses and recoveries, through one channel: a
Slack-compatible webhook, a generic JSON webhook (PagerDuty Events v2 events) or email over
SMTP. A route with `repeat` tells again while a check stays failing; one with
`escalate_after`/`escalate_to` hands a check still failing after N runs to a further route
once per episode. `plan_deliveries` decides (pure); `send_delivery` sends one; what was sent is
kept in the health state between runs (`record_deliveries`).

Messages are built from check results only (never from the config's secrets); webhook URLs,
routing keys and SMTP passwords are secrets and are never logged. Targets under a maintenance
window are kept quiet: their checks are reported and kept, but a failure does not notify
(`quiet_for_maintenance`), nor repeat, nor escalate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Literal

import httpx
from pydantic import BaseModel

from runbook import metrics
from runbook.channels import post_json, send_email
from runbook.config import PushgatewaySettings, Route, WebhookSettings
from runbook.health import RANK, CheckResult, Status, Tracked

log = logging.getLogger("runbook.notify")
ICON = {
    "critical": ":red_circle:",
    "warn": ":warning:",
    "unknown": ":grey_question:",
    "ok": ":white_check_mark:",
}


MUTED = "muted"  # the event of a check that would have notified, kept quiet by a window


def quiet_for_maintenance(tracked: list[Tracked], quiet: Mapping[str, str]) -> list[Tracked]:
    """Checks of the targets under maintenance (`quiet`: target -> why) that would notify a
    failure or an escalation are `muted` instead. A failure muted this way is not marked
    notified, so it notifies at the first run after the window if it is still failing; a
    recovery is still reported (it closes an alert sent before the window)."""
    kept = []
    for t in tracked:
        if t.result.target in quiet and t.event in ("failing", "escalated"):
            # escalated: the episode was notified before; failing: it has not been yet
            t = t.model_copy(update={"event": MUTED, "notified": t.event == "escalated"})
        kept.append(t)
    return kept


def webhook_message(tracked: list[Tracked], severity: str | None, min_status: str) -> dict | None:
    """The Slack-compatible payload for a run, or None when there is nothing to say."""
    floor = RANK[Status(min_status)]
    alerts = [
        t for t in tracked if t.event in ("failing", "escalated") and RANK[t.result.status] >= floor
    ]
    recoveries = [t for t in tracked if t.event == "recovered"]
    if not alerts and not recoveries:
        return None
    lines = []
    if alerts:
        lines.append(f"*Runbook health: {severity or 'P?'}*, {len(alerts)} check(s) failing")
        for t in alerts:
            r = t.result
            again = " (worse)" if t.event == "escalated" else ""
            runs = f", {t.streak} runs in a row" if t.streak > 1 else ""
            lines.append(
                f"{ICON[r.status.value]} *{r.status.value}*{again} `{r.check}` "
                f"on *{r.target}*: {r.message}{runs}"
            )
    if recoveries:
        lines.append(
            "Recovered: "
            + ", ".join(f"`{t.result.check}` on *{t.result.target}*" for t in recoveries)
        )
    return {"text": "\n".join(lines)}


def send_webhook(settings: WebhookSettings, payload: dict) -> None:
    response = httpx.post(
        settings.url.get_secret_value(), json=payload, timeout=settings.timeout.total_seconds()
    )
    if response.status_code >= 300:
        # The URL is a secret: name the status only.
        raise RuntimeError(f"webhook answered HTTP {response.status_code}")


# --- routes ----------------------------------------------------------------------------------

ROUTES_STATE = "notify:routes"  # health state key: what each route was sent, per check


class Delivery(BaseModel):
    """What one route is told after a run: `alert` (checks that started failing or got worse,
    and recoveries), `repeat` (still failing, repeat interval passed) or `escalation` (still
    failing after `escalate_after` runs on route `escalated_from`)."""

    route: str
    reason: Literal["alert", "repeat", "escalation"]
    items: list[Tracked]
    escalated_from: str | None = None
    after_runs: int | None = None


def _key(result: CheckResult) -> str:
    return f"{result.check}|{result.target}"


def _takes(route: Route, t: Tracked) -> bool:
    return t.result.status.value in route.when


def plan_deliveries(
    tracked: list[Tracked],
    routes: list[Route],
    state: Mapping[str, Any],
    now: datetime,
    quiet: Mapping[str, str] | None = None,
) -> list[Delivery]:
    """Every route's deliveries for this run. `state` is what `record_deliveries` kept:
    {"sent": {route: {check|target: iso time}}, "escalated": {route: [check|target]}}."""
    quiet = quiet or {}
    sent = state.get("sent", {})
    escalated = state.get("escalated", {})
    deliveries: list[Delivery] = []
    for route in routes:
        alerts = [
            t
            for t in tracked
            if (t.event in ("failing", "escalated") and _takes(route, t))
            or (t.event == "recovered" and "recovered" in route.when)
        ]
        if alerts:
            deliveries.append(Delivery(route=route.name, reason="alert", items=alerts))
        # still failing, already notified, not under maintenance
        ongoing = [
            t
            for t in tracked
            if t.event is None
            and t.notified
            and t.result.status != Status.OK
            and t.result.target not in quiet
        ]
        if route.repeat is not None:
            due = []
            for t in ongoing:
                last = sent.get(route.name, {}).get(_key(t.result))
                if _takes(route, t) and (
                    last is None or now - datetime.fromisoformat(last) >= route.repeat
                ):
                    due.append(t)
            if due:
                deliveries.append(Delivery(route=route.name, reason="repeat", items=due))
        if route.escalate_to is not None and route.escalate_after is not None:
            done = set(escalated.get(route.name, []))
            climbing = [
                t
                for t in tracked
                if t.event != MUTED
                and t.notified
                and t.result.status != Status.OK
                and t.result.target not in quiet
                and _takes(route, t)
                and t.streak >= route.escalate_after
                and _key(t.result) not in done
            ]
            if climbing:
                deliveries.append(
                    Delivery(
                        route=route.escalate_to,
                        reason="escalation",
                        items=climbing,
                        escalated_from=route.name,
                        after_runs=route.escalate_after,
                    )
                )
    return deliveries


def record_deliveries(
    state: Mapping[str, Any], tracked: list[Tracked], delivered: list[Delivery], now: datetime
) -> dict[str, Any]:
    """The routes' state after a run: what was delivered (failures only; a recovery is not a
    send to repeat), and every check that is ok again forgotten (its episode is over)."""
    sent = {route: dict(keys) for route, keys in state.get("sent", {}).items()}
    escalated = {route: set(keys) for route, keys in state.get("escalated", {}).items()}
    for delivery in delivered:
        for t in delivery.items:
            if t.result.status == Status.OK:
                continue
            sent.setdefault(delivery.route, {})[_key(t.result)] = now.isoformat()
            if delivery.escalated_from is not None:
                escalated.setdefault(delivery.escalated_from, set()).add(_key(t.result))
    over = {_key(t.result) for t in tracked if t.result.status == Status.OK}
    return {
        "sent": {r: {k: v for k, v in keys.items() if k not in over} for r, keys in sent.items()},
        "escalated": {r: sorted(keys - over) for r, keys in escalated.items()},
    }


def _line(t: Tracked) -> str:
    r = t.result
    runs = f", {t.streak} runs in a row" if t.streak > 1 else ""
    return (
        f"{ICON[r.status.value]} *{r.status.value}* `{r.check}` on *{r.target}*: {r.message}{runs}"
    )


def slack_message(delivery: Delivery, severity: str | None) -> dict:
    """A Slack-compatible payload; an alert reads exactly as the single webhook's always did."""
    if delivery.reason == "alert":
        message = webhook_message(delivery.items, severity, "unknown")
        assert message is not None  # an alert delivery has items
        return message
    if delivery.reason == "repeat":
        head = f"*Runbook health: {severity or 'P?'}*, still failing"
    else:
        head = (
            f"*Runbook health: {severity or 'P?'}*, escalated from {delivery.escalated_from}: "
            f"failing {delivery.after_runs} runs or more"
        )
    return {"text": "\n".join([head] + [_line(t) for t in delivery.items])}


PAGERDUTY_SEVERITY = {"critical": "critical", "warn": "warning", "unknown": "error", "ok": "info"}


def pagerduty_events(delivery: Delivery, routing_key: str | None) -> list[dict]:
    """PagerDuty Events v2: one event per check, deduplicated by check and target, resolved
    when the check recovers."""
    events = []
    for t in delivery.items:
        r = t.result
        event: dict[str, Any] = {
            "routing_key": routing_key or "",
            "event_action": "resolve" if r.status == Status.OK else "trigger",
            "dedup_key": f"runbook:{r.check}:{r.target}",
        }
        if r.status != Status.OK:
            summary = f"{r.status.value}: {r.check} on {r.target}: {r.message}"
            event["payload"] = {
                "summary": summary[:1024],
                "source": r.target,
                "severity": PAGERDUTY_SEVERITY[r.status.value],
                "component": r.target,
                "group": r.check.split(".")[0],
                "class": r.check,
                "custom_details": {
                    "status": r.status.value,
                    "value": r.display_value,
                    "threshold": r.threshold,
                    "streak": t.streak,
                    "reason": delivery.reason,
                    "escalated_from": delivery.escalated_from,
                },
            }
        events.append(event)
    return events


def email_message(
    delivery: Delivery, severity: str | None, sender: str, to: list[str]
) -> EmailMessage:
    failing = [t for t in delivery.items if t.result.status != Status.OK]
    recovered = [t for t in delivery.items if t.result.status == Status.OK]
    if failing:
        worst_status = max((t.result.status for t in failing), key=RANK.__getitem__)
        subject = f"{worst_status.value}: {len(failing)} check(s) failing"
        if delivery.reason != "alert":
            subject += f" ({delivery.reason})"
    else:
        subject = f"recovered: {len(recovered)} check(s)"
    lines = [f"Runbook health {severity or ''}".rstrip() + f" - {delivery.reason}", ""]
    for t in failing:
        r = t.result
        lines.append(f"{r.status.value.upper():9} {r.check} on {r.target}: {r.message}")
        if r.threshold:
            lines.append(f"          value {r.display_value}, threshold {r.threshold}")
    if recovered:
        lines += ["", "Recovered:"] + [
            f"  {t.result.check} on {t.result.target}" for t in recovered
        ]
    message = EmailMessage()
    message["From"], message["To"] = sender, ", ".join(to)
    message["Subject"] = subject
    message.set_content("\n".join(lines) + "\n")
    return message


def send_delivery(route: Route, delivery: Delivery, severity: str | None) -> None:
    """Send one delivery through its route's channel; errors name the route, never a secret."""
    if route.slack is not None:
        post_json(
            route.name,
            route.slack.url.get_secret_value(),
            slack_message(delivery, severity),
            route.slack.timeout.total_seconds(),
        )
    elif route.webhook is not None:
        key = route.webhook.routing_key.get_secret_value() if route.webhook.routing_key else None
        for event in pagerduty_events(delivery, key):
            post_json(
                route.name,
                route.webhook.url.get_secret_value(),
                event,
                route.webhook.timeout.total_seconds(),
            )
    elif route.email is not None:
        send_email(route, email_message(delivery, severity, route.email.from_, route.email.to))


def metrics_text(
    results: list[CheckResult],
    finished_at: float,
    failing_runs: Mapping[tuple[str, str], int] | None = None,
) -> str:
    """Prometheus exposition format (runbook/metrics.py): runbook_check_status 0 ok,
    1 unknown, 2 warn, 3 critical; runbook_check_failing_runs, each check's failing streak
    (`failing_runs`, by (check, target)); when the run finished."""
    streaks = failing_runs or {}
    return metrics.render(
        {
            metrics.CHECK_STATUS: [
                ({"check": r.check, "target": r.target}, RANK[r.status]) for r in results
            ],
            metrics.CHECK_FAILING_RUNS: [
                ({"check": r.check, "target": r.target}, streaks[r.key])
                for r in results
                if r.key in streaks
            ],
            metrics.HEALTH_LAST_RUN: [({}, round(finished_at))],
        }
    )


def push_metrics(settings: PushgatewaySettings, text: str, instance: str) -> None:
    metrics.push(settings, {"job": settings.job, "instance": instance}, text)
