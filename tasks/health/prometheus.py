"""Prometheus checks: instant queries graded against thresholds, the worst series named.

For each PromQuery, GET <url>/api/v1/query?query=... and read the HTTP API's answer:
  vector  one value per series              matrix  the last sample of each series
  scalar  one value, no labels              error   {"status": "error", ...} -> critical
The WORST series is graded (highest for > / >=, lowest for < / <=) and the message names its
labels and value, and how many series breach. No series -> the query's `no_data` status.
NaN series (0/0 when there is no traffic) are left out; only NaN -> unknown.

A connection failure marks the remaining queries unreachable without trying them, so a
Prometheus that is down costs one timeout, not one per query.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from runbook.config import PrometheusTarget, PromQuery
from runbook.health import CheckResult, Status, describe, grade, measured, timer
from tasks.health.http import (
    describe_failure,
    redact_url,
    request_url,
    scrub_results,
    secrets_of,
    unreachable_status,
)

# Runbooks 000 (host resources) and 001 (platform metrics), as PromQL.
RUNBOOK_EXAMPLES: list[PromQuery] = [
    PromQuery(  # 001: platform_error_ratio > 5 %; 000: failure rate 20-50 % is a P2
        name="error-ratio",
        query=(
            'sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))'
        ),
        warn=0.05,
        critical=0.2,
    ),
    PromQuery(  # 001: ocr_p95_latency_seconds > 2 s (target < 1 s)
        name="p95-latency",
        query=(
            "histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket[5m])) by (le))"
        ),
        warn=1,
        critical=2,
        unit="s",
    ),
    PromQuery(  # 001: provider_health_score < 50 is "provider degraded", a warning (P3)
        name="provider-health",
        query="min by (provider) (provider_health_score)",
        warn=50,
        op="<",
    ),
    PromQuery(  # 001: error_budget_remaining < 20 %; below 0 the SLO is broken
        name="error-budget",
        query="error_budget_remaining",
        warn=0.2,
        critical=0,
        op="<",
    ),
    PromQuery(  # 000: CPU usage; scale up above 80 %, alert above 85 %
        name="node-cpu",
        query='100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))',
        warn=85,
        critical=95,
        unit="%",
    ),
    PromQuery(  # 000: memory > 90 %
        name="node-memory",
        query="100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
        warn=90,
        critical=95,
        unit="%",
    ),
    PromQuery(  # 000: disk > 85 %
        name="node-disk",
        query=(
            '100 * (1 - node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs"}'
            ' / node_filesystem_size_bytes{fstype!~"tmpfs|overlay|squashfs"})'
        ),
        warn=85,
        critical=95,
        unit="%",
    ),
]

Series = tuple[dict[str, str], float]


class NotAnAnswer(ValueError):
    """The body is not a Prometheus HTTP API answer."""


def _number(text: Any) -> float:
    try:
        return float(text)  # Prometheus writes "NaN", "+Inf", "-Inf" as strings
    except (TypeError, ValueError):
        raise NotAnAnswer(f"sample value {text!r} is not a number") from None


def series_of(data: dict[str, Any]) -> list[Series]:
    """(labels, value) per series of `data` in an API answer; matrix -> last sample."""
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string"):
        if not isinstance(result, list) or len(result) != 2:
            raise NotAnAnswer(f"malformed {kind} result")
        return [({}, _number(result[1]))]
    if not isinstance(result, list):
        raise NotAnAnswer(f"unexpected result of type {kind!r}")
    series: list[Series] = []
    for item in result:
        labels = item.get("metric") or {}
        if kind == "vector":
            sample = item.get("value")  # native histograms carry "histogram" instead: skipped
        elif kind == "matrix":
            values = item.get("values") or []
            sample = values[-1] if values else None
        else:
            raise NotAnAnswer(f"unknown resultType {kind!r}")
        if isinstance(sample, list) and len(sample) == 2:
            series.append((labels, _number(sample[1])))
    return series


def labels_text(labels: dict[str, str]) -> str:
    """{__name__="up", job="api"} -> up{job="api"}; no labels -> {}."""
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


def _value_text(value: float, unit: str) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.4g}{unit}"


def grade_series(
    target: str, query: PromQuery, series: list[Series], seconds: float
) -> CheckResult:
    """The worst series graded with query.threshold; the message names it."""
    check, threshold = f"prometheus.{query.name}", query.threshold
    if not series:
        return CheckResult(
            check=check,
            target=target,
            status=Status(query.no_data),
            threshold=describe(threshold, query.unit),
            message="no data: the query returned no series",
            duration=round(seconds, 4),
        )
    numbers = [(labels, value) for labels, value in series if not math.isnan(value)]
    nans = len(series) - len(numbers)
    if not numbers:
        return CheckResult(
            check=check,
            target=target,
            status=Status.UNKNOWN,
            value="NaN",
            threshold=describe(threshold, query.unit),
            message=f"NaN for all {len(series)} series (0/0, e.g. no traffic in the window)",
            duration=round(seconds, 4),
        )
    pick = max if query.op.startswith(">") else min
    labels, value = pick(numbers, key=lambda item: item[1])
    breaching = sum(1 for _, v in numbers if grade(v, threshold) != Status.OK)
    message = _value_text(value, query.unit)
    if labels:
        message += f" for {labels_text(labels)}"
    if breaching:
        message += f"; {breaching} of {len(series)} series breach"
    elif len(series) > 1:
        message += f" (worst of {len(series)} series)"
    if nans:
        message += f"; {nans} series NaN"
    result = measured(check, target, value, threshold, message, unit=query.unit, duration=seconds)
    if math.isinf(value):  # JSON has no infinity: keep it readable in records
        result = result.model_copy(update={"value": _value_text(value, "")})
    return result


def _answer(
    target: PrometheusTarget,
    query: PromQuery,
    response: httpx.Response,
    seconds: float,
    unreachable: Status,
) -> CheckResult:
    check = f"prometheus.{query.name}"
    try:
        payload = response.json()
        if not isinstance(payload, dict) or payload.get("status") not in ("success", "error"):
            raise NotAnAnswer("no status field")
        if payload["status"] == "error":
            kind = payload.get("errorType") or "error"
            return CheckResult(
                check=check,
                target=target.name,
                status=Status.CRITICAL,
                threshold=describe(query.threshold, query.unit),
                message=f"Prometheus error ({kind}): {payload.get('error') or 'no detail'}",
                duration=round(seconds, 4),
            )
        return grade_series(target.name, query, series_of(payload.get("data") or {}), seconds)
    except (ValueError, AttributeError) as exc:  # not JSON, or not the API's JSON
        snippet = response.text[:120].replace("\n", " ")
        detail = str(exc) if isinstance(exc, NotAnAnswer) else f"body {snippet!r}"
        return CheckResult(
            check=check,
            target=target.name,
            status=unreachable,
            threshold=describe(query.threshold, query.unit),
            message=f"HTTP {response.status_code} is not a Prometheus API answer: {detail}",
            duration=round(seconds, 4),
        )


def check_prometheus(
    target: PrometheusTarget, unreachable: Status = Status.CRITICAL
) -> list[CheckResult]:
    """One result per query of `target`, in order (see the module docstring)."""
    unreachable = unreachable_status(unreachable)
    headers = {name: value.get_secret_value() for name, value in target.headers.items()}
    endpoint = request_url(target.url, headers).rstrip("/") + "/api/v1/query"
    shown = redact_url(endpoint)
    timeout = target.timeout.total_seconds()
    secrets = secrets_of(target.url, target.headers)
    results: list[CheckResult] = []
    down: str | None = None  # set when Prometheus cannot be reached at all
    with httpx.Client(timeout=timeout, headers=headers, follow_redirects=True) as client:
        for query in target.queries:
            check = f"prometheus.{query.name}"
            if down is not None:
                results.append(
                    CheckResult(check=check, target=target.name, status=unreachable, message=down)
                )
                continue
            with timer() as elapsed:
                try:
                    response = client.get(endpoint, params={"query": query.query})
                except httpx.HTTPError as exc:
                    host = httpx.URL(endpoint).host
                    message = f"GET {shown}: {describe_failure(exc, timeout, host)}"
                    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                        down = message
                    results.append(
                        CheckResult(
                            check=check,
                            target=target.name,
                            status=unreachable,
                            message=message,
                            duration=round(elapsed(), 4),
                        )
                    )
                    continue
                results.append(_answer(target, query, response, elapsed(), unreachable))
    return scrub_results(results, secrets)
