"""Backup freshness: age of each backup target's newest verified backup against its RPO."""

from __future__ import annotations

from datetime import datetime

from runbook.catalog import BackupStatus, Catalog
from runbook.config import Config
from runbook.formatting import human_duration
from runbook.health import CheckResult, Status


def check_backup_freshness(config: Config, catalog: Catalog, now: datetime) -> list[CheckResult]:
    """`backup.age` per backup target: warn past its rpo (or health.backup_max_age), critical
    past twice that; no verified backup at all is critical."""
    results = []
    for target in config.backup_targets():
        limit = target.rpo or config.health.backup_max_age
        latest = catalog.latest_backup(target.name, frozenset({BackupStatus.VERIFIED}))
        threshold = f"warn > {human_duration(limit)}, critical > {human_duration(2 * limit)}"
        if latest is None:
            results.append(
                CheckResult(
                    check="backup.age",
                    target=target.name,
                    status=Status.CRITICAL,
                    threshold=threshold,
                    message="no verified backup (run `runbook backup`)",
                )
            )
            continue
        age = now - (latest.finished_at or latest.started_at)
        status = Status.OK
        if age > 2 * limit:
            status = Status.CRITICAL
        elif age > limit:
            status = Status.WARN
        results.append(
            CheckResult(
                check="backup.age",
                target=target.name,
                status=status,
                value=round(age.total_seconds() / 3600, 2),
                threshold=threshold,
                message=f"newest verified backup {latest.id} is {human_duration(age)} old",
            )
        )
    return results
