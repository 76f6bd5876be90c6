"""Telling people: notification routes by severity (Slack-compatible webhook, a generic JSON
webhook in PagerDuty Events v2 shape, email over SMTP), the single webhook of earlier configs
(an implicit route), and a Prometheus Pushgateway."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from runbook.config.core import Duration, Model, Name

# What a route can take: a check's failing status, or its recovery.
RouteWhen = Literal["critical", "warn", "unknown", "recovered"]
IMPLICIT_ROUTE = "webhook"  # the name the single `notifications.webhook` goes by as a route


class WebhookSettings(Model):
    url: SecretStr
    min_status: Literal["warn", "critical"] = "warn"
    timeout: Duration = timedelta(seconds=10)


class SlackChannel(Model):
    """A Slack-compatible incoming webhook: `{"text": ...}`."""

    url: SecretStr
    timeout: Duration = timedelta(seconds=10)


class JsonWebhookChannel(Model):
    """A generic JSON webhook, one PagerDuty Events v2 event per check (trigger / resolve)."""

    url: SecretStr
    routing_key: SecretStr | None = None  # PagerDuty's integration key, sent in each event
    timeout: Duration = timedelta(seconds=10)


class EmailChannel(Model):
    """Email over SMTP: smtp://host:587 with STARTTLS (default), smtps://host:465 with TLS from
    the first byte; the password comes from a secret (`${SMTP_PASSWORD}`)."""

    to: list[str] = Field(min_length=1)
    smtp: str
    from_: str = Field(default="runbook@localhost", alias="from")
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = True  # smtp:// only; refused to send in clear text unless false
    ca_file: Path | None = None
    verify_tls: bool = True
    timeout: Duration = timedelta(seconds=20)
    subject_prefix: str = "[runbook]"

    @field_validator("smtp")
    @classmethod
    def _smtp_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("expected smtp://host[:port] (STARTTLS) or smtps://host[:port]")
        if parts.password:
            raise ValueError("put the password in `password` (a ${SECRET}), not in the URL")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.smtp).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.smtp)
        return parts.port or (465 if parts.scheme == "smtps" else 587)

    @property
    def implicit_tls(self) -> bool:
        return urlsplit(self.smtp).scheme == "smtps"


class Route(Model):
    """Where the checks of some statuses go: exactly one channel, repeated while a check stays
    failing (`repeat`), and escalated to another route after `escalate_after` failing runs."""

    name: Name
    when: list[RouteWhen] = Field(min_length=1)
    webhook: JsonWebhookChannel | None = None
    slack: SlackChannel | None = None
    email: EmailChannel | None = None
    repeat: Duration | None = Field(
        default=None, description="send again while the check stays failing, this often"
    )
    escalate_after: int | None = Field(default=None, ge=1, description="failing runs in a row")
    escalate_to: Name | None = None

    @model_validator(mode="after")
    def _one_channel(self) -> Route:
        given = [c for c in ("webhook", "slack", "email") if getattr(self, c) is not None]
        if len(given) != 1:
            raise ValueError(
                f"route {self.name!r}: give exactly one channel of webhook, slack, email "
                f"(got {', '.join(given) or 'none'})"
            )
        if (self.escalate_after is None) != (self.escalate_to is None):
            raise ValueError(f"route {self.name!r}: escalate_after and escalate_to go together")
        return self

    @property
    def channel(self) -> Literal["webhook", "slack", "email"]:
        if self.webhook is not None:
            return "webhook"
        return "slack" if self.slack is not None else "email"


class PushgatewaySettings(Model):
    url: str
    job: str = "runbook"
    timeout: Duration = timedelta(seconds=10)


class Notifications(Model):
    webhook: WebhookSettings | None = None
    routes: list[Route] = Field(default_factory=list)
    pushgateway: PushgatewaySettings | None = None

    @model_validator(mode="after")
    def _route_names(self) -> Notifications:
        names = [r.name for r in self.routes]
        if self.webhook is not None and IMPLICIT_ROUTE in names:
            raise ValueError(
                f"routes: {IMPLICIT_ROUTE!r} is the name of notifications.webhook as a route; "
                "rename the route"
            )
        for index, route in enumerate(self.routes):
            if names.count(route.name) > 1:
                raise ValueError(f"routes[{index}].name: {route.name!r} is used twice")
            if route.escalate_to is not None and route.escalate_to not in names:
                raise ValueError(
                    f"routes[{index}].escalate_to: no route named {route.escalate_to!r} "
                    f"(routes: {', '.join(names)})"
                )
            if route.escalate_to == route.name:
                raise ValueError(f"routes[{index}].escalate_to: a route cannot escalate to itself")
        return self

    def routes_in_effect(self) -> list[Route]:
        """The configured routes, and the single `webhook` as the implicit route "webhook"
        (Slack-compatible; its min_status and above, and recoveries)."""
        routes = list(self.routes)
        if self.webhook is not None:
            when: list[RouteWhen] = ["critical", "recovered"]
            if self.webhook.min_status == "warn":
                when.insert(1, "warn")
            routes.append(
                Route(
                    name=IMPLICIT_ROUTE,
                    when=when,
                    slack=SlackChannel(url=self.webhook.url, timeout=self.webhook.timeout),
                )
            )
        return routes

    def route(self, name: str) -> Route | None:
        return next((r for r in self.routes_in_effect() if r.name == name), None)
