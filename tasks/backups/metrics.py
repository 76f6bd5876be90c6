"""Backup metrics for the Pushgateway (runbook/metrics.py): per target, read from the catalog
when a backup or verification flow ends, so each push is the target's whole state: its newest
verified backup against its RPO, its newest finished backup and its newest verification.

Group: job=<pushgateway.job>_backup, target=<name>. A failed push is a warning only.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from runbook import metrics as m
from runbook.catalog import COMMITTED, UNSUCCESSFUL, BackupStatus, Catalog
from runbook.config import Config

FINISHED = COMMITTED | UNSUCCESSFUL  # a backup that ended, well or not


def rpo_seconds(config: Config, target: str) -> float:
    """The target's RPO, else health.backup_max_age (as the `backup.age` health check)."""
    configured = next((t for t in config.backup_targets() if t.name == target), None)
    limit = (configured.rpo if configured else None) or config.health.backup_max_age
    return limit.total_seconds()


def backup_metrics(config: Config, catalog: Catalog, target: str) -> str:
    """The exposition text of one target's backup gauges (no labels: the group adds target)."""
    verified = catalog.latest_backup(target, frozenset({BackupStatus.VERIFIED}))
    newest = catalog.list_backups(target=target, statuses=FINISHED, limit=1)
    check = catalog.latest_verification(target)
    nothing: dict[str, str] = {}
    samples: dict[m.Gauge, list[m.Sample]] = {
        m.BACKUP_RPO_TARGET: [(nothing, rpo_seconds(config, target))],
        # 0 when there is none: "never" is older than any RPO
        m.BACKUP_LAST_VERIFIED: [
            (nothing, (verified.finished_at or verified.started_at).timestamp() if verified else 0)
        ],
        m.BACKUP_LAST_VERIFIED_BYTES: (
            [(nothing, float(verified.bytes_stored))] if verified and verified.bytes_stored else []
        ),
    }
    if newest:
        last = newest[0]
        samples[m.BACKUP_LAST_RESULT] = [(nothing, 1 if last.status in COMMITTED else 0)]
        samples[m.BACKUP_LAST_TIMESTAMP] = [
            (nothing, (last.finished_at or last.started_at).timestamp())
        ]
    if check is not None:
        samples[m.VERIFICATION_LAST_RESULT] = [(nothing, 1 if check.ok else 0)]
        samples[m.VERIFICATION_LAST_TIMESTAMP] = [(nothing, check.finished_at.timestamp())]
    return m.render(samples)


@task(name="push-backup-metrics", cache_policy=NO_CACHE)
def push_backup_metrics(config_path: str | None, targets: Sequence[str]) -> list[str]:
    """Push each target's backup gauges when a Pushgateway is configured; the targets pushed.
    Never raises: a push that fails (or a catalog read for it) is a warning in the run's log."""
    return m.push_per_target(config_path, targets, "backup", backup_metrics, get_run_logger())
