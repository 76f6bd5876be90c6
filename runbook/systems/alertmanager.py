"""Alertmanager as Runbook reads it: GET <url>/api/v2/alerts, the alerts it holds now.

The API lists active alerts only: one that started and resolved between two reads is gone
(Alertmanager keeps it in memory, but the API filters out alerts whose endsAt has passed).
Matchers go to the server as `filter` parameters, so it does the matching with its own syntax;
`silenced`, `inhibited` and `receiver` likewise.

Errors are typed: AlertmanagerUnreachable (no answer or a 5xx; worth retrying) and
NotAlertmanager (whatever answered is not the API: a 4xx, a body that is not a list of alerts).
No header value, URL userinfo or secret-looking query value appears in their text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from runbook.config import AlertmanagerTarget
from runbook.errors import PermanentError, TransientError
from runbook.systems.http import (
    describe_failure,
    plain_headers,
    redact_url,
    request_url,
    scrub,
    secrets_of,
)


class AlertmanagerUnreachable(TransientError):
    """No answer (refused, timed out, DNS, TLS) or a 5xx."""


class NotAlertmanager(PermanentError):
    """The answer is not Alertmanager's API v2 alert list."""


@dataclass(frozen=True)
class Alert:
    fingerprint: str
    labels: dict[str, str]
    starts_at: datetime
    state: str = "active"  # active, suppressed (silenced or inhibited), unprocessed
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "?")


def filters_of(target: AlertmanagerTarget) -> list[str]:
    """The target's matchers as API `filter` values: equality matchers first."""
    quoted = [f"{name}={_quote(value)}" for name, value in target.matchers.items()]
    return quoted + list(target.filters)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def alerts_of(data: Any) -> list[Alert]:
    """The alerts of a GET /api/v2/alerts answer (`gettableAlerts`)."""
    if not isinstance(data, list):
        raise NotAlertmanager("GET /api/v2/alerts did not answer a list of alerts")
    alerts = []
    for item in data:
        try:
            labels = {str(k): str(v) for k, v in item["labels"].items()}
            starts = datetime.fromisoformat(str(item["startsAt"]).replace("Z", "+00:00"))
            state = (item.get("status") or {}).get("state", "active")
            alerts.append(
                Alert(
                    fingerprint=str(item["fingerprint"]),
                    labels=labels,
                    starts_at=starts,
                    state=str(state),
                    annotations={
                        str(k): str(v) for k, v in (item.get("annotations") or {}).items()
                    },
                )
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise NotAlertmanager(f"an alert in the answer is malformed ({exc!r:.80})") from None
    return alerts


def fetch_alerts(target: AlertmanagerTarget) -> list[Alert]:
    """The alerts matching the target's matchers, now. Raises AlertmanagerUnreachable or
    NotAlertmanager."""
    plain = plain_headers(target.headers)
    secrets = secrets_of(target.url, target.headers)
    endpoint = f"{request_url(target.url, plain).rstrip('/')}/api/v2/alerts"
    params: list[tuple[str, str]] = [
        ("active", "true"),
        ("silenced", str(target.silenced).lower()),
        ("inhibited", str(target.inhibited).lower()),
        *(("filter", f) for f in filters_of(target)),
    ]
    if target.receiver:
        params.append(("receiver", target.receiver))
    timeout = target.timeout.total_seconds()
    shown = f"GET {redact_url(target.url.rstrip('/'))}/api/v2/alerts"
    try:
        with httpx.Client(timeout=timeout, headers=plain, follow_redirects=True) as client:
            response = client.get(endpoint, params=params)
    except httpx.HTTPError as exc:
        reason = describe_failure(exc, timeout, httpx.URL(endpoint).host)
        raise AlertmanagerUnreachable(scrub(f"{shown}: {reason}", secrets)) from None
    if response.status_code >= 500:
        raise AlertmanagerUnreachable(f"{shown} answered HTTP {response.status_code}")
    if response.status_code != 200:
        detail = scrub(response.text[:200].strip(), secrets)
        raise NotAlertmanager(f"{shown} answered HTTP {response.status_code}: {detail}")
    try:
        data = response.json()
    except ValueError:
        raise NotAlertmanager(f"{shown} did not answer JSON") from None
    return alerts_of(data)
