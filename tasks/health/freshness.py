"""Freshness: each backup target's newest verified backup against its RPO, and its newest
passed DR drill against the drill policy (health.drill_max_age)."""

from __future__ import annotations

from datetime import datetime

from runbook.catalog import BackupStatus, Catalog, DrillLog
from runbook.config import Config, PostgresTarget, RedisTarget
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
                unit="h",
                threshold=threshold,
                message=f"newest verified backup {latest.id} is {human_duration(age)} old",
            )
        )
    return results


def check_drill_freshness(config: Config, catalog: Catalog, now: datetime) -> list[CheckResult]:
    """`drill.age` per PostgreSQL and Redis target: warn when the newest passed drill is older
    than health.drill_max_age (or there is none), critical when the newest drill failed."""
    limit = config.health.drill_max_age
    threshold = f"warn > {human_duration(limit)}, critical: the newest drill failed"
    drills = DrillLog(catalog)
    results = []
    for target in config.backup_targets():
        if not isinstance(target, PostgresTarget | RedisTarget):
            continue
        # running drills have no verdict yet; refused ones were the operator's mistake
        history = [
            d for d in drills.list(target=target.name, limit=50) if d.status in ("passed", "failed")
        ]
        passed = next((d for d in history if d.passed), None)
        if history and not history[0].passed:
            status = Status.CRITICAL
            message = f"the newest drill {history[0].id} failed: {history[0].error or 'see checks'}"
        elif passed is None:
            status, message = Status.WARN, "no DR drill has passed yet (run `runbook drill`)"
        else:
            age = now - (passed.finished_at or passed.started_at)
            status = Status.WARN if age > limit else Status.OK
            message = f"newest passed drill {passed.id} is {human_duration(age)} old"
        value = None
        if passed is not None:
            value = round((now - (passed.finished_at or passed.started_at)).days, 1)
        results.append(
            CheckResult(
                check="drill.age",
                target=target.name,
                status=status,
                value=value,
                unit="d",
                threshold=threshold,
                message=message,
            )
        )
    return results
