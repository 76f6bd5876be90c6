"""Runbook's own changes to a resource's level, from the catalog: maintenance ledger actions
that were applied (a reindex, a VACUUM FULL: figures before and after) and retention deletes.
The forecast treats the drops they cause as level shifts, never as trend."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from runbook.catalog import BackupRecord, MaintenanceLog, MaintenanceRun, Outcome
from runbook.formatting import human_bytes
from tasks.capacity.forecast import Event


@dataclass(frozen=True)
class Change:
    """An event and what it touched: target, and object ("" = the whole target)."""

    target: str
    object: str
    event: Event
    kinds: frozenset[str]  # the resource kinds it changes


_PG_KINDS = frozenset({"postgres.database", "postgres.table", "postgres.index"})


def _figures(before: dict, after: dict) -> str:
    parts = []
    for name, value in before.items():
        later = after.get(name)
        numeric = isinstance(value, int | float) and isinstance(later, int | float)
        if numeric and name.endswith("bytes"):
            parts.append(f"{name} {human_bytes(int(value))} -> {human_bytes(int(later))}")
    return ", ".join(parts)


def ledger_changes(runs: Iterable[MaintenanceRun]) -> list[Change]:
    """Every applied action of applied maintenance runs, placed when it finished."""
    found = []
    for run in runs:
        if run.dry_run:
            continue
        for action in run.actions:
            if action.outcome != Outcome.DONE or action.finished_at is None:
                continue
            figures = _figures(action.before, action.after)
            text = f"{action.procedure} {action.object or action.target}"
            event = Event(
                action.finished_at, "maintenance", f"{text}: {figures}" if figures else text
            )
            found.append(Change(action.target, action.object, event, _PG_KINDS))
    return found


def retention_changes(deleted: Iterable[BackupRecord]) -> list[Change]:
    return [
        Change(
            b.target,
            "",
            Event(
                b.deleted_at,
                "retention",
                f"retention deleted backup {b.id} ({human_bytes(b.bytes_stored or 0)})",
            ),
            frozenset({"backups.bytes"}),
        )
        for b in deleted
        if b.deleted_at is not None
    ]


def events_for(resource: str, kind: str, target: str, changes: Iterable[Change]) -> list[Event]:
    """The events that change this resource: of its target and kind, and of its object when
    the event names one (a table's vacuum is not an event of another table)."""
    what = resource.removeprefix(f"{target}/")
    obj = what.split("/", 1)[1] if what.count("/") >= 1 else ""
    found = []
    for change in changes:
        if change.target != target or kind not in change.kinds:
            continue
        if kind in ("postgres.table", "postgres.index") and change.object not in ("", obj):
            continue
        found.append(change.event)
    return found


def catalog_changes(log: MaintenanceLog, deleted: Iterable[BackupRecord]) -> list[Change]:
    return ledger_changes(log.list(limit=None)) + retention_changes(deleted)
