"""Telling people: a Slack-compatible webhook and a Prometheus Pushgateway."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import SecretStr

from runbook.config.core import Duration, Model


class WebhookSettings(Model):
    url: SecretStr
    min_status: Literal["warn", "critical"] = "warn"
    timeout: Duration = timedelta(seconds=10)


class PushgatewaySettings(Model):
    url: str
    job: str = "runbook"
    timeout: Duration = timedelta(seconds=10)


class Notifications(Model):
    webhook: WebhookSettings | None = None
    pushgateway: PushgatewaySettings | None = None
