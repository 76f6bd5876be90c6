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


_NO_BODY_METHODS = ("GET", "HEAD", "OPTIONS")


class HttpTarget(Model):
    name: Name
    url: str
    method: Literal["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    # The request body: `json` (sent as application/json) or `body` (text, text/plain unless a
    # Content-Type header says otherwise), as runbook 000's smoke test POSTs to /evaluate.
    json_body: Any = Field(default=None, alias="json", repr=False)
    body: str | None = Field(default=None, repr=False)
    body_secret: bool = Field(
        default=False, description="the body holds secrets: scrubbed from every message"
    )
    expect: HttpExpect = Field(default_factory=HttpExpect)
    timeout: Duration = timedelta(seconds=10)
    latency_seconds: Threshold = threshold_field(1, 2)  # runbook 000: API responses under 2 s
    tls_days: Threshold = threshold_field(30, 7, "<")  # certificate days left
    verify_tls: bool = True
    ca_file: Path | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://host[:port]/path or https://...")
        return value

    @model_validator(mode="after")
    def _one_body_with_a_method_that_sends_it(self) -> HttpTarget:
        if self.json_body is not None and self.body is not None:
            raise ValueError("json and body are both set: a request has one body, choose one")
        if self.has_body and self.method in _NO_BODY_METHODS:
            field = "json" if self.json_body is not None else "body"
            raise ValueError(
                f"{field} is set but method is {self.method}: a request body needs method "
                "POST, PUT, PATCH or DELETE"
            )
        return self

    @property
    def has_body(self) -> bool:
        return self.json_body is not None or self.body is not None


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


class DockerLogSource(Model):
    """Containers whose logs are read (`docker compose logs`): on the engine of a docker
    target, those of a compose project and/or matching label selectors."""

    target: Name = Field(description="a targets.docker name: the engine to ask")
    project: str | None = Field(default=None, description="default: the docker target's")
    labels: list[str] = Field(
        default_factory=list, description="label selectors: 'key' or 'key=value', all must match"
    )


class KubernetesLogSource(Model):
    """Pods whose logs are read (`kubectl logs -l app=... --since=8h`)."""

    target: Name = Field(description="a targets.kubernetes name: the cluster to ask")
    namespace: str = Field(min_length=1)
    selector: str | None = Field(default=None, description="label selector: app=counterfactual-lab")
    container: str | None = Field(default=None, description="default: every container of a pod")


class LogsTarget(Model):
    name: Name
    paths: list[str] = Field(default_factory=list, description="files or glob patterns")
    docker: list[DockerLogSource] = Field(default_factory=list)
    kubernetes: list[KubernetesLogSource] = Field(default_factory=list)
    # Container and pod logs: the window the first run reads (runbook 001: --since=8h), and the
    # most any later run reads back.
    since: Duration = timedelta(hours=8)
    max_lines: int = Field(
        default=100_000, ge=1, description="lines read per container and run, newest kept"
    )
    patterns: list[LogPattern] = Field(default_factory=_default_log_patterns)

    @model_validator(mode="after")
    def _some_source(self) -> LogsTarget:
        if not (self.paths or self.docker or self.kubernetes):
            raise ValueError("give paths (files or globs), docker or kubernetes log sources")
        return self


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


_MATCHER = re.compile(r'^\s*[A-Za-z_][A-Za-z0-9_]*\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|[^"]*)\s*$')
StatusName = Literal["ok", "unknown", "warn", "critical"]


def _default_severities() -> dict[str, StatusName]:
    # The severity label values of the runbooks' alerting tables (001: Critical, Warning, Info)
    # and of the usual Prometheus rule sets.
    return {
        "critical": "critical",
        "page": "critical",
        "error": "critical",
        "high": "critical",
        "warning": "warn",
        "warn": "warn",
        "medium": "warn",
        "info": "ok",
        "low": "ok",
        "none": "ok",
    }


class AlertmanagerTarget(Model):
    """Alerts firing in an Alertmanager (API v2), runbook 001's "review overnight alerts"."""

    name: Name
    url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    # Label equality matchers, and matchers in Alertmanager's syntax ('alertname=~"Disk.*"'):
    # only the alerts matching every one of them count.
    matchers: dict[str, str] = Field(default_factory=dict)
    filters: list[str] = Field(default_factory=list)
    receiver: str | None = Field(default=None, description="regex: alerts routed to receivers")
    silenced: bool = Field(default=False, description="count silenced alerts too")
    inhibited: bool = Field(default=False, description="count inhibited alerts too")
    severity_label: str = "severity"
    severities: dict[str, StatusName] = Field(
        default_factory=_default_severities,
        description="severity label value (any case) -> the status an alert gives the check",
    )
    unmapped: StatusName = Field(
        default="warn", description="status of an alert with no or an unknown severity label"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://host:9093 or https://...")
        return value

    @field_validator("filters")
    @classmethod
    def _matchers(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _MATCHER.match(item):
                raise ValueError(
                    f"{item!r} is not an Alertmanager matcher (label=\"value\", label!=..., "
                    "label=~\"regex\", label!~...)"
                )
        return value

    @field_validator("severities")
    @classmethod
    def _lower_case(cls, value: dict[str, StatusName]) -> dict[str, StatusName]:
        return {key.lower(): status for key, status in value.items()}

    def status_of(self, labels: dict[str, str]) -> StatusName:
        """The status one alert with these labels gives the check."""
        return self.severities.get(labels.get(self.severity_label, "").lower(), self.unmapped)


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
    selector: str | None = Field(
        default=None,
        description="label selector for the pods and deployments checked (app=counterfactual-lab)",
    )
    # % of its limit the busiest container uses (metrics.k8s.io); runbook 004 warns when a
    # container's memory passes 0.9 of its limit, and at 95 % the OOM killer is close.
    usage: Threshold = threshold_field(90, 95)
    # Off by default: a cluster without metrics-server would make the check unknown forever.
    metrics: bool = Field(
        default=False, description="read metrics.k8s.io (metrics-server): kubernetes.usage"
    )
    network_policies: bool = Field(
        default=False, description="runbook 003: each namespace must have a NetworkPolicy"
    )

    @model_validator(mode="after")
    def _token_needs_api_url(self) -> KubernetesTarget:
        if self.token is not None and self.api_url is None:
            raise ValueError("token is set but api_url is not: a token is only used with api_url")
        return self

    @model_validator(mode="after")
    def _policies_need_namespaces(self) -> KubernetesTarget:
        if self.network_policies and not self.namespaces:
            raise ValueError(
                "network_policies is true but namespaces is empty: name the namespaces that "
                "must have NetworkPolicies"
            )
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
    # % CPU busy over cpu_sample. Runbook 000 alerts on cpu_usage > 85 % (critical); 004 calls
    # under 70 % normal, so the band between is the warning: still working, no headroom left.
    cpu: Threshold = threshold_field(70, 85)
    cpu_sample: Duration = Field(
        default=timedelta(seconds=2),
        description="how long CPU time is sampled (/proc/stat delta); 0 = no CPU check",
    )

    @field_validator("cpu_sample")
    @classmethod
    def _short_sample(cls, value: timedelta) -> timedelta:
        # The sample runs inside the check's deadline (health.check_timeout, 30 s by default).
        if value < timedelta(0) or value > timedelta(seconds=20):
            raise ValueError("expected a duration from 0 (no CPU check) to 20s, e.g. 2s")
        return value
