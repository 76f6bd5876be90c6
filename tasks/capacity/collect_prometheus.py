"""Capacity series from Prometheus (`capacity.series`): the value and limit now (instant
queries), and once per run the last `backfill` days with query_range at `step`, on times
aligned to the step so a second run stores nothing twice. A query answering several series is
summed (a capacity series is one number)."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime

from runbook.catalog import Sample
from runbook.config import CapacitySeries, PrometheusTarget
from runbook.systems.prometheus import Prometheus
from tasks.capacity.samples import sample


def _total(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) if finite else None


def _summed_range(client: Prometheus, query: str, start: float, end: float, step: float):
    totals: dict[float, float] = defaultdict(float)
    for _labels, points in client.query_range(query, start, end, step):
        for t, value in points:
            if math.isfinite(value):
                totals[t] += value
    return totals


def collect_series(
    series: CapacitySeries, prometheus: PrometheusTarget, at: datetime
) -> list[Sample]:
    found: list[Sample] = []
    unit = series.unit
    with Prometheus.for_target(prometheus) as client:
        value = _total([v for _labels, v in client.query(series.query)])
        limit = series.limit
        if series.limit_query:
            limit = _total([v for _labels, v in client.query(series.limit_query)])
        if series.backfill.total_seconds() > 0:
            step = series.step.total_seconds()
            end = math.floor(at.timestamp() / step) * step
            start = end - series.backfill.total_seconds()
            values = _summed_range(client, series.query, start, end, step)
            limits = (
                _summed_range(client, series.limit_query, start, end, step)
                if series.limit_query
                else {}
            )
            for t, v in sorted(values.items()):
                found.append(
                    sample(
                        prometheus.name,
                        series.name,
                        "prometheus.series",
                        v,
                        at=datetime.fromtimestamp(t, UTC),
                        limit=limits.get(t, series.limit),
                        unit=unit,
                        source="backfill",
                    )
                )
    if value is not None:
        found.append(
            sample(
                prometheus.name,
                series.name,
                "prometheus.series",
                value,
                at=at,
                limit=limit,
                unit=unit,
            )
        )
    return found
