"""Drill metrics for the Pushgateway (runbook/metrics.py): per target, read from the catalog
when the drill flow ends: the newest drill's verdict, when it finished, the RTO and RPO it
measured, the RTO target it was held to, and how old a drill may get (health.drill_max_age).

Group: job=<pushgateway.job>_drill, target=<name>. A failed push is a warning only.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from runbook import metrics as m
from runbook.catalog import Catalog, DrillLog, DrillStatus
from runbook.config import Config


def drill_metrics(config: Config, catalog: Catalog, target: str) -> str:
    """The exposition text of one target's drill gauges; "" when it has no drill verdict yet
    (a refused or running drill is not one)."""
    drills = DrillLog(catalog)
    verdicts = [
        found[0]
        for status in (DrillStatus.PASSED, DrillStatus.FAILED)
        if (found := drills.list(target=target, limit=1, status=status))
    ]
    if not verdicts:
        return ""
    drill = max(verdicts, key=lambda d: (d.started_at, d.id))
    configured = next((t for t in config.backup_targets() if t.name == target), None)
    rto_target = drill.rto_target_seconds
    if rto_target is None and configured is not None and configured.rto is not None:
        rto_target = configured.rto.total_seconds()
    nothing: dict[str, str] = {}
    samples: dict[m.Gauge, list[m.Sample]] = {
        m.DRILL_LAST_RESULT: [(nothing, 1 if drill.passed else 0)],
        m.DRILL_LAST_TIMESTAMP: [(nothing, (drill.finished_at or drill.started_at).timestamp())],
        m.DRILL_MAX_AGE: [(nothing, config.health.drill_max_age.total_seconds())],
        m.DRILL_RTO: [(nothing, drill.rto_seconds)] if drill.rto_seconds is not None else [],
        m.DRILL_RPO: [(nothing, drill.rpo_seconds)] if drill.rpo_seconds is not None else [],
        m.DRILL_RTO_TARGET: [(nothing, rto_target)] if rto_target is not None else [],
    }
    return m.render(samples)


@task(name="push-drill-metrics", cache_policy=NO_CACHE)
def push_drill_metrics(config_path: str | None, targets: Sequence[str]) -> list[str]:
    """Push each target's drill gauges when a Pushgateway is configured; the targets pushed.
    Never raises: a push that fails (or a catalog read for it) is a warning in the run's log."""
    return m.push_per_target(config_path, targets, "drill", drill_metrics, get_run_logger())
