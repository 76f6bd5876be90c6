"""Restores: one row per restore of one backup into one destination (a database or a folder),
its checks, hook results, timings and verdict.

A restore row moves only by the named transitions of `RestoreLog`, each refusing a move its
status does not allow (`TRANSITIONS`):

    start --> running --enter_step(step)-------> running
    running --finish---------------------------> restored | failed   every step ran
    running --mark_failed(step, error)---------> failed              a step raised
    running --interrupt(step, error)-----------> interrupted         cancelled or stopped mid-way
    running --abandon(note)--------------------> interrupted         its process died (found by
                                                                     the next restore)
    running --refuse(error)--------------------> refused             an operator's mistake found
                                                                     once connected

`restored` means restored *and* validated. Any other end leaves the destination incomplete
(or unproven), and the row's error says so: it is never reported as restored.
"""

from __future__ import annotations

import enum
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from runbook.catalog.backups import Catalog
from runbook.catalog.db import Base, UTCDateTime, utcnow
from runbook.errors import NotFoundError


class RestoreStatus(enum.StrEnum):
    RUNNING = "running"
    RESTORED = "restored"  # restored and validated
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # cancelled, stopped or killed mid-way: destination incomplete
    REFUSED = "refused"  # the operator's mistake found once connected (nothing touched)
    PLANNED = "planned"  # a dry run's plan (--dry-run): never stored, nothing touched


class RestoreStep(enum.StrEnum):
    """The steps of a restore, in order (tasks/restore/run.py)."""

    PICK = "pick"  # choose the backup, verify it and download it from storage
    PRE_HOOKS = "pre-hooks"  # the configured steps before the restore (stop the application)
    RESTORE = "restore"  # pg_restore into the database / extract into the folder
    VALIDATE = "validate"  # the restored data against the manifest
    POST_HOOKS = "post-hooks"  # the configured steps after it (always)


_RUNNING = frozenset({RestoreStatus.RUNNING})
_VERDICTS = frozenset({RestoreStatus.RESTORED, RestoreStatus.FAILED})

# transition -> (the statuses it may start from, the statuses it may lead to)
TRANSITIONS: dict[str, tuple[frozenset[RestoreStatus], frozenset[RestoreStatus]]] = {
    "enter_step": (_RUNNING, _RUNNING),
    "finish": (_RUNNING, _VERDICTS),
    "mark_failed": (_RUNNING, frozenset({RestoreStatus.FAILED})),
    "interrupt": (_RUNNING, frozenset({RestoreStatus.INTERRUPTED})),
    "abandon": (_RUNNING, frozenset({RestoreStatus.INTERRUPTED})),
    "refuse": (_RUNNING, frozenset({RestoreStatus.REFUSED})),
}


class RestoreTransitionError(RuntimeError):
    """A transition the restore's status does not allow (a bug, not an operator mistake)."""


class RestoreRow(Base):
    """One restore of one backup."""

    __tablename__ = "restores"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(63), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # postgres | files
    backup_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    into: Mapped[str] = mapped_column(String(1024))  # user@host:port/db or a folder; no secret
    schema_name: Mapped[str | None] = mapped_column(String(63), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # RestoreStatus
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fell_back_from: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rto_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    timings: Mapped[str] = mapped_column(Text, default="{}")  # JSON: step -> seconds
    checks: Mapped[str] = mapped_column(Text, default="[]")  # JSON: [{name, ok, detail}]
    hooks: Mapped[str] = mapped_column(Text, default="[]")  # JSON: [{name, ok, detail}]
    plan: Mapped[str] = mapped_column(Text, default="[]")  # JSON: the plan's actions
    # JSON: what the operator does next (a Redis RDB written to a folder: load it)
    next_steps: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The step a running restore is in; once it failed or was interrupted, that step.
    failed_step: Mapped[str | None] = mapped_column(String(32), nullable=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RestoreCheck(BaseModel):
    """One finding of a restore ("backup integrity", "restore", "rows shop.orders", "file
    etc/app.conf") or one hook's result ("pre: stop app")."""

    name: str
    ok: bool
    detail: str = ""


class RestoreResults(BaseModel):
    """What a restore's steps found so far; saved at every step and with the verdict."""

    backup_id: str | None = None
    fell_back_from: str | None = None
    rto_seconds: float | None = None
    timings: dict[str, float] = {}
    checks: list[RestoreCheck] = []
    hooks: list[RestoreCheck] = []
    plan: list[str] = []
    next_steps: list[str] = []  # what the operator does next, in order
    failed_step: RestoreStep | None = None  # the first step with a failing check or hook

    def add(self, step: RestoreStep, checks: list[RestoreCheck]) -> None:
        self.checks.extend(checks)
        self._note(step, checks)

    def add_hooks(self, step: RestoreStep, hooks: list[RestoreCheck]) -> None:
        self.hooks.extend(hooks)
        self._note(step, hooks)

    def _note(self, step: RestoreStep, found: list[RestoreCheck]) -> None:
        if self.failed_step is None and not all(c.ok for c in found):
            self.failed_step = step

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and all(h.ok for h in self.hooks)


class RestoreRecord(BaseModel):
    id: str
    target: str
    kind: str
    backup_id: str | None = None
    into: str
    schema_name: str | None = None
    status: RestoreStatus
    started_at: datetime
    finished_at: datetime | None = None
    fell_back_from: str | None = None
    rto_seconds: float | None = None
    timings: dict[str, float] = {}
    checks: list[RestoreCheck] = []
    hooks: list[RestoreCheck] = []
    plan: list[str] = []
    next_steps: list[str] = []
    error: str | None = None
    failed_step: RestoreStep | None = None
    host: str
    pid: int
    flow_run_id: str | None = None

    @property
    def restored(self) -> bool:
        return self.status == RestoreStatus.RESTORED


def _record(row: RestoreRow) -> RestoreRecord:
    data = {c.key: getattr(row, c.key) for c in RestoreRow.__table__.columns}
    for column in ("timings", "checks", "hooks", "plan", "next_steps"):
        data[column] = json.loads(getattr(row, column) or ("{}" if column == "timings" else "[]"))
    if row.status in (RestoreStatus.RESTORED, RestoreStatus.REFUSED):
        data["failed_step"] = None
    return RestoreRecord.model_validate(data)


def _result_columns(results: RestoreResults) -> dict[str, Any]:
    return {
        "backup_id": results.backup_id,
        "fell_back_from": results.fell_back_from,
        "rto_seconds": results.rto_seconds,
        "timings": json.dumps(results.timings),
        "checks": json.dumps([c.model_dump() for c in results.checks]),
        "hooks": json.dumps([h.model_dump() for h in results.hooks]),
        "plan": json.dumps(results.plan),
        "next_steps": json.dumps(results.next_steps),
    }


class RestoreLog:
    """The catalog's record of restores: lookups, and the transitions of one restore."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    # --- transitions ---------------------------------------------------------------------------

    def start(self, record: RestoreRecord) -> RestoreRecord:
        """A new restore, running (record.status must be running)."""
        if record.status != RestoreStatus.RUNNING:
            raise RestoreTransitionError(f"restore {record.id} must start running")
        with self.catalog.session() as session:
            if session.get(RestoreRow, record.id) is not None:
                raise RestoreTransitionError(f"restore {record.id} was already started")
            data = record.model_dump(exclude={"timings", "checks", "hooks", "plan", "next_steps"})
            row = RestoreRow(
                **data, timings="{}", checks="[]", hooks="[]", plan="[]", next_steps="[]"
            )
            session.add(row)
            session.flush()
            return _record(row)

    def enter_step(
        self, restore_id: str, step: RestoreStep, results: RestoreResults
    ) -> RestoreRecord:
        """Save what the steps so far found, and the step the restore now enters."""
        changes = {**_result_columns(results), "failed_step": step}
        return self._apply(restore_id, "enter_step", changes)

    def finish(self, restore_id: str, results: RestoreResults) -> RestoreRecord:
        """Every step ran: restored when every check and hook passed, else failed."""
        status = RestoreStatus.RESTORED if results.ok else RestoreStatus.FAILED
        changes = {**_result_columns(results), "status": status, "finished_at": utcnow()}
        if results.ok:
            changes["failed_step"] = None
        else:
            changes["failed_step"] = results.failed_step
            changes["error"] = _first_failure(results)
        return self._apply(restore_id, "finish", changes)

    def mark_failed(
        self, restore_id: str, step: RestoreStep, error: str, results: RestoreResults
    ) -> RestoreRecord:
        changes = {
            **_result_columns(results),
            "status": RestoreStatus.FAILED,
            "failed_step": step,
            "error": error,
            "finished_at": utcnow(),
        }
        return self._apply(restore_id, "mark_failed", changes)

    def interrupt(
        self, restore_id: str, step: RestoreStep | None, error: str, results: RestoreResults
    ) -> RestoreRecord:
        changes = {
            **_result_columns(results),
            "status": RestoreStatus.INTERRUPTED,
            "failed_step": step,
            "error": error,
            "finished_at": utcnow(),
        }
        return self._apply(restore_id, "interrupt", changes)

    def abandon(self, restore_id: str, note: str) -> RestoreRecord:
        """The restore's process died: interrupted in the step it was in."""
        changes = {"status": RestoreStatus.INTERRUPTED, "finished_at": utcnow(), "error": note}
        return self._apply(restore_id, "abandon", changes)

    def refuse(self, restore_id: str, error: str, results: RestoreResults) -> RestoreRecord:
        changes = {
            **_result_columns(results),
            "status": RestoreStatus.REFUSED,
            "error": error,
            "finished_at": utcnow(),
        }
        return self._apply(restore_id, "refuse", changes)

    def _apply(self, restore_id: str, transition: str, changes: dict[str, Any]) -> RestoreRecord:
        starts, leads_to = TRANSITIONS[transition]
        with self.catalog.session() as session:
            row = self._row(session, restore_id)
            status = RestoreStatus(row.status)
            if status not in starts or changes.get("status", status) not in leads_to:
                raise RestoreTransitionError(
                    f"restore {restore_id} is {status}: cannot {transition}"
                )
            for column, value in changes.items():
                setattr(row, column, value)
            session.flush()
            return _record(row)

    # --- lookups -------------------------------------------------------------------------------

    @staticmethod
    def _row(session: Session, restore_id: str) -> RestoreRow:
        row = session.get(RestoreRow, restore_id)
        if row is None:
            raise NotFoundError(f"unknown restore id {restore_id!r} (see `runbook restores list`)")
        return row

    def get(self, restore_id: str) -> RestoreRecord:
        with self.catalog.session() as session:
            return _record(self._row(session, restore_id))

    def list(
        self,
        target: str | None = None,
        limit: int | None = 50,
        status: RestoreStatus | str | None = None,
    ) -> list[RestoreRecord]:
        query = select(RestoreRow).order_by(RestoreRow.started_at.desc(), RestoreRow.id.desc())
        if target:
            query = query.where(RestoreRow.target == target)
        if status:
            query = query.where(RestoreRow.status == RestoreStatus(status))
        if limit:
            query = query.limit(limit)
        with self.catalog.session() as session:
            return [_record(row) for row in session.scalars(query)]


def _first_failure(results: RestoreResults) -> str:
    failing = [f"{c.name}: {c.detail}" for c in [*results.checks, *results.hooks] if not c.ok]
    return "; ".join(failing)[:2000]
