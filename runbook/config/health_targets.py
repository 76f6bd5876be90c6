"""Targets that are only checked, never backed up: HTTP endpoints, log files, Prometheus
queries, Kubernetes clusters, Docker hosts and the host Runbook runs on."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from runbook.config.core import Duration, Model, Name, Threshold, threshold_field


class HttpExpect(Model):
    status: int | list[int] = 200
    # dotted path -> expected value; '*' matches every item: {"status": "healthy",
    # "ready": true, "checks.*": true}
    json_: dict[str, Any] = Field(default_factory=dict, alias="json")
    body_contains: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class HttpTarget(Model):
    name: Name
    url: str
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    expect: HttpExpect = Field(default_factory=HttpExpect)
    timeout: Duration = timedelta(seconds=10)
    latency_seconds: Threshold = threshold_field(1, 2)  # runbook 000: API responses under 2 s
    tls_days: Threshold = threshold_field(30, 7, "<")  # certificate days left
    verify_tls: bool = True
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://host[:port]/path or https://...")
        return value


class LogPattern(Model):
    name: Name
    regex: str
    count: Threshold = threshold_field(0, None)  # matches since the last run

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


def _default_log_patterns() -> list[LogPattern]:
    # Runbook 000's three greps.
    return [
        LogPattern(
            name="errors", regex=r"\b(ERROR|CRITICAL|FATAL)\b", count=Threshold(warn=0, critical=10)
        ),
        LogPattern(
            name="performance",
            regex=r"\b(SLOW|TIMEOUT|MEMORY)\b",
            count=Threshold(warn=5, critical=50),
        ),
        LogPattern(
            name="security",
            regex=r"\b(AUTH|UNAUTHORIZED|FORBIDDEN)\b",
            count=Threshold(warn=10, critical=100),
        ),
    ]


class LogsTarget(Model):
    name: Name
    paths: list[str] = Field(min_length=1, description="files or glob patterns")
    patterns: list[LogPattern] = Field(default_factory=_default_log_patterns)


class PromQuery(Model):
    name: Name
    query: str = Field(min_length=1)
    warn: float | None = None
    critical: float | None = None
    op: Literal[">", ">=", "<", "<="] = ">"
    unit: str = ""
    no_data: Literal["ok", "unknown", "warn", "critical"] = "unknown"

    @property
    def threshold(self) -> Threshold:
        return Threshold(warn=self.warn, critical=self.critical, op=self.op)


class PrometheusTarget(Model):
    name: Name
    url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    queries: list[PromQuery] = Field(min_length=1)


class KubernetesTarget(Model):
    name: Name
    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False
    api_url: str | None = None  # with token: talk to this API server directly
    token: SecretStr | None = None
    verify_tls: bool = True
    namespaces: list[str] = Field(default_factory=list, description="empty = all namespaces")
    restart_window: Duration = timedelta(hours=24)
    restarts: Threshold = threshold_field(0, 5)  # container restarts within restart_window
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _token_needs_api_url(self) -> KubernetesTarget:
        if self.token is not None and self.api_url is None:
            raise ValueError("token is set but api_url is not: a token is only used with api_url")
        return self


class DockerTarget(Model):
    name: Name
    url: str = "unix:///var/run/docker.sock"
    project: str | None = Field(default=None, description="compose project label to filter on")
    restarts: Threshold = threshold_field(0, 5)
    timeout: Duration = timedelta(seconds=10)


class HostTarget(Model):
    name: Name = "localhost"
    mounts: list[str] = Field(default_factory=list, description="empty = every real filesystem")
    # % used: runbook 000 warns over 85 %, 004 pages under 10 % free
    disk: Threshold = threshold_field(85, 90)
    inodes: Threshold = threshold_field(85, 95)
    memory: Threshold = threshold_field(90, 95)  # runbook 000: memory > 90 %
    load_per_core: Threshold = threshold_field(1.5, 3.0)
