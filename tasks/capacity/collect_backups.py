"""Backup storage bytes per target, from the catalog: what its committed backups hold now, and
the same figure at every past midnight (UTC) since its first backup, so the first report has a
history. Retention deletes are in it as drops; the report marks them as events."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from runbook.catalog import COMMITTED, BackupRecord, BackupStatus, Catalog, Sample
from tasks.capacity.samples import sample

KEPT = COMMITTED | {BackupStatus.DELETING, BackupStatus.DELETED}  # stored once


def stored_bytes(backups: list[BackupRecord], at: datetime) -> int:
    """Bytes of the backups that were in storage at `at`: finished by then, not yet
    deleted."""
    return sum(
        b.bytes_stored or 0
        for b in backups
        if b.finished_at is not None
        and b.finished_at <= at
        and (b.deleted_at is None or b.deleted_at > at)
    )


def collect_backups(catalog: Catalog, targets: list[str], at: datetime) -> list[Sample]:
    found = []
    history = catalog.list_backups(statuses=KEPT)
    for target in targets:
        mine = [b for b in history if b.target == target and b.bytes_stored]
        if not mine:
            continue
        first = min(b.finished_at or at for b in mine).date() + timedelta(days=1)
        day = first
        while day <= at.date():
            midnight = datetime.combine(day, time(), tzinfo=UTC)
            found.append(
                sample(
                    target,
                    "backups",
                    "backups.bytes",
                    stored_bytes(mine, midnight),
                    at=midnight,
                    unit="bytes",
                    source="backfill",
                )
            )
            day += timedelta(days=1)
        found.append(
            sample(target, "backups", "backups.bytes", stored_bytes(mine, at), at=at, unit="bytes")
        )
    return found


def retention_deletes(catalog: Catalog) -> list[BackupRecord]:
    """Backups retention removed, with the time they went."""
    return [b for b in catalog.list_backups(statuses={BackupStatus.DELETED}) if b.deleted_at]
