"""Capacity metrics for the Pushgateway (runbook/metrics.py): every resource of a full capacity
report in one group, job=<pushgateway.job>_capacity, replaced whole by each push (a resource
no longer measured disappears): `runbook_capacity_days_until{resource,threshold,quantile}`
(P10/P50/P90 days until 80/90/100 % of the limit; absent when not reached within the horizon
or not forecast, never a made-up number), the share of the limit in use and the status.
A report of chosen resources only is not pushed (it would drop the others from the group).
A failed push is a warning only; infra/grafana/runbook-capacity.json charts these series.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from runbook import metrics as m
from runbook.runtime import Runtime
from tasks.capacity.report import CapacityReport

STATUS_VALUE = {"ok": 0, "not-growing": 1, "not-enough-history": 2, "warn": 3, "critical": 4}


def capacity_metrics(report: CapacityReport) -> str:
    """The exposition text of the report's gauges."""
    days: list[m.Sample] = []
    used: list[m.Sample] = []
    status: list[m.Sample] = []
    for row in report.resources:
        for threshold, quantiles in row.days_until.items():
            for quantile, value in quantiles.items():
                if value is not None:
                    labels = {"resource": row.resource, "threshold": threshold}
                    days.append(({**labels, "quantile": quantile}, float(value)))
        if row.limit and row.current is not None:
            used.append(({"resource": row.resource}, row.current / row.limit))
        if row.status in STATUS_VALUE:
            status.append(({"resource": row.resource}, float(STATUS_VALUE[row.status])))
    return m.render(
        {
            m.CAPACITY_DAYS_UNTIL: days,
            m.CAPACITY_USED_RATIO: used,
            m.CAPACITY_STATUS: status,
            m.CAPACITY_REPORT_TIMESTAMP: [({}, report.generated_at.timestamp())],
        }
    )


@task(name="push-capacity-metrics", cache_policy=NO_CACHE, persist_result=False)
def push_capacity_metrics(runtime: Runtime, report: CapacityReport, partial: bool) -> bool:
    """Push the report's gauges when a Pushgateway is configured and the report is whole;
    whether they were pushed. Never raises: monitoring never fails a report."""
    settings = runtime.config.notifications.pushgateway
    if settings is None:
        return False
    logger = get_run_logger()
    if partial:
        logger.info("capacity metrics not pushed: the report covers chosen resources only")
        return False
    grouping = {"job": f"{settings.job}_capacity"}
    return m.push_or_warn(settings, grouping, capacity_metrics(report), logger)
