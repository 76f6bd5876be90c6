"""Prometheus checks: instant queries graded against thresholds, the worst series named.

Each PromQuery is asked through `runbook.systems.prometheus` (vector: one value per series,
matrix: the last sample of each, scalar: one value); an error answer is critical, an answer
that is not the API's gets the unreachable status. The WORST series is graded (highest for
> / >=, lowest for < / <=) and the message names its labels and value, and how many series
breach. No series -> the query's `no_data` status.
NaN series (0/0 when there is no traffic) are left out; only NaN -> unknown.

A connection failure marks the remaining queries unreachable without trying them, so a
Prometheus that is down costs one timeout, not one per query.
"""

from __future__ import annotations

import math

from runbook.config import PrometheusTarget, PromQuery
from runbook.health import CheckResult, Status, describe, grade, measured, timer
from runbook.systems.http import secrets_of
from runbook.systems.prometheus import (
    NotAnAnswer,
    Prometheus,
    PrometheusUnreachable,
    QueryError,
    Series,
    labels_text,
)
from tasks.health.http import scrub_results, unreachable_status

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


def check_prometheus(
    target: PrometheusTarget, unreachable: Status = Status.CRITICAL
) -> list[CheckResult]:
    """One result per query of `target`, in order (see the module docstring)."""
    unreachable = unreachable_status(unreachable)
    results: list[CheckResult] = []
    down: str | None = None  # set when Prometheus cannot be reached at all
    with Prometheus.for_target(target) as prometheus:
        for query in target.queries:
            check = f"prometheus.{query.name}"
            if down is not None:
                results.append(
                    CheckResult(check=check, target=target.name, status=unreachable, message=down)
                )
                continue
            with timer() as elapsed:
                try:
                    series = prometheus.query(query.query)
                except PrometheusUnreachable as exc:
                    if exc.connection_failed:
                        down = str(exc)
                    results.append(
                        CheckResult(
                            check=check,
                            target=target.name,
                            status=unreachable,
                            message=str(exc),
                            duration=round(elapsed(), 4),
                        )
                    )
                    continue
                except QueryError as exc:
                    results.append(_refused(target, query, Status.CRITICAL, str(exc), elapsed()))
                    continue
                except NotAnAnswer as exc:
                    results.append(_refused(target, query, unreachable, str(exc), elapsed()))
                    continue
                results.append(grade_series(target.name, query, series, elapsed()))
    return scrub_results(results, secrets_of(target.url, target.headers))


def _refused(
    target: PrometheusTarget, query: PromQuery, status: Status, message: str, seconds: float
) -> CheckResult:
    """A query that got an answer but no series: an error, or not the API's answer."""
    return CheckResult(
        check=f"prometheus.{query.name}",
        target=target.name,
        status=status,
        threshold=describe(query.threshold, query.unit),
        message=message,
        duration=round(seconds, 4),
    )
