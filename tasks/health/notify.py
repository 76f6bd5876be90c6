"""Telling people: a Slack-compatible webhook and Prometheus Pushgateway metrics.

Both are built from check results only (never from the config's secrets); the webhook URL is a
secret itself and is never logged. Targets under a maintenance window are kept quiet: their
checks are reported and kept, but a failure does not notify (`quiet_for_maintenance`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import httpx

from runbook.config import PushgatewaySettings, WebhookSettings
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


_LABEL = re.compile(r'[\\"\n]')


def _label(value: str) -> str:
    return _LABEL.sub(lambda m: {"\\": "\\\\", '"': '\\"', "\n": "\\n"}[m.group(0)], value)


def metrics_text(results: list[CheckResult], finished_at: float) -> str:
    """Prometheus exposition format: runbook_check_status 0 ok, 1 unknown, 2 warn, 3 critical."""
    lines = [
        "# HELP runbook_check_status Health check status (0 ok, 1 unknown, 2 warn, 3 critical).",
        "# TYPE runbook_check_status gauge",
    ]
    for r in results:
        lines.append(
            f'runbook_check_status{{check="{_label(r.check)}",target="{_label(r.target)}"}}'
            f" {RANK[r.status]}"
        )
    lines += [
        "# HELP runbook_health_last_run_timestamp_seconds When the health flow last finished.",
        "# TYPE runbook_health_last_run_timestamp_seconds gauge",
        f"runbook_health_last_run_timestamp_seconds {finished_at:.0f}",
    ]
    return "\n".join(lines) + "\n"


def push_metrics(settings: PushgatewaySettings, text: str, instance: str) -> None:
    url = f"{settings.url.rstrip('/')}/metrics/job/{settings.job}/instance/{instance}"
    response = httpx.put(
        url,
        content=text.encode(),
        headers={"Content-Type": "text/plain; version=0.0.4"},
        timeout=settings.timeout.total_seconds(),
    )
    if response.status_code >= 300:
        raise RuntimeError(f"pushgateway {settings.url} answered HTTP {response.status_code}")
