"""DR drills: one row per drill of one target, its checks, timings and verdict.

A drill row moves only by the named transitions of `DrillLog`, each refusing a move its
status does not allow (`TRANSITIONS`):

    start --> running --record_scratch / enter_step(step) / mark_cleaned--> running
    running --finish-------------------> passed | failed   every step ran
    running --mark_failed(step, error)--> failed            a step raised (or stopped the drill)
    running --refuse(error)-------------> refused           an operator's mistake found late
    running --abandon(note)-------------> failed            its process died (the next drill
                                                            finds it)
    failed  --keep_for_forensics--------> failed, kept      its scratch is left for a person

While a drill runs, its row names the step it is in, so a drill whose process was killed
still says where it died; `failed_step` shows it once the drill has failed.
"""

from __future__ import annotations

import enum
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Float,
    Integer,
    String,
    Text,
    select,
)
from sqlalchemy.orm import (
    Mapped,
    Session,
    deferred,
    mapped_column,
)

from runbook.catalog.backups import Catalog
from runbook.catalog.db import Base, UTCDateTime, utcnow
from runbook.errors import NotFoundError


class DrillStatus(enum.StrEnum):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    REFUSED = "refused"  # the operator's mistake found once connected (drill server = source)


# A drill's result, which health and reports weigh; refused drills and running ones are not.
VERDICTS = frozenset({DrillStatus.PASSED, DrillStatus.FAILED})


class DrillStep(enum.StrEnum):
    """The steps of a drill, in order (tasks/drills/drill.py)."""

    SWEEP = "sweep"  # clean up after drills that died
    PICK = "pick"  # choose the backup, verify it and download it from storage
    RESTORE = "restore"  # into a scratch database / redis-server
    VALIDATE = "validate"  # the restored data against the manifest
    OBJECTIVES = "objectives"  # RTO and RPO against their targets
    CLEANUP = "cleanup"  # drop the scratch database / server, the work folder


_RUNNING = frozenset({DrillStatus.RUNNING})

# transition -> (the statuses it may start from, the statuses it may lead to)
TRANSITIONS: dict[str, tuple[frozenset[DrillStatus], frozenset[DrillStatus]]] = {
    "record_scratch": (_RUNNING, _RUNNING),
    "enter_step": (_RUNNING, _RUNNING),
    "mark_cleaned": (_RUNNING, _RUNNING),
    "finish": (_RUNNING, VERDICTS),
    "mark_failed": (_RUNNING, frozenset({DrillStatus.FAILED})),
    "refuse": (_RUNNING, frozenset({DrillStatus.REFUSED})),
    "abandon": (_RUNNING, frozenset({DrillStatus.FAILED})),
    "keep_for_forensics": (frozenset({DrillStatus.FAILED}), frozenset({DrillStatus.FAILED})),
}


class DrillTransitionError(RuntimeError):
    """A transition the drill's status does not allow (a bug, not an operator mistake)."""


class DrillRow(Base):
    """One DR restore drill of one target."""

    __tablename__ = "drills"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(63), index=True)
    backup_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # DrillStatus
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fell_back_from: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rto_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    rpo_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    rto_target_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    rpo_target_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    timings: Mapped[str] = mapped_column(Text, default="{}")  # JSON: step -> seconds
    checks: Mapped[str] = mapped_column(Text, default="[]")  # JSON: [{name, ok, detail}]
    # 'server|database|work folder': recorded before any of them exists, cleared once cleaned
    # up; kept for forensics, or left by a cleanup that failed or a drill that died.
    scratch: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    kept: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The step a running drill is in; once failed, the step it failed in (DrillStep).
    failed_step: Mapped[str | None] = mapped_column(String(32), nullable=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The Great Expectations validation result (JSON), loaded only by DrillLog.gx_result:
    # it grows with the number of tables, and lists of drills do not need it.
    gx_result: Mapped[str | None] = deferred(mapped_column(Text, nullable=True))
    data_docs: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # index.html


class DrillCheck(BaseModel):
    """One finding of a drill: a step's own check ("backup integrity", "restore", "rto") or a
    validation check ("rows shop.orders", "sequence shop.invoice_no", "amcheck", "keys db0")."""

    name: str
    ok: bool
    detail: str = ""  # what was found vs expected, one line


class DrillResults(BaseModel):
    """What a drill's steps found so far; saved at every step and with the verdict."""

    backup_id: str | None = None
    fell_back_from: str | None = None
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rto_target_seconds: float | None = None
    rpo_target_seconds: float | None = None
    timings: dict[str, float] = {}  # download, restore, validation, cleanup
    checks: list[DrillCheck] = []
    gx_result: dict[str, Any] | None = None  # saved with the verdict only (it can be large)
    data_docs: str | None = None
    failed_step: DrillStep | None = None  # the first step with a failing check

    def add(self, step: DrillStep, checks: list[DrillCheck]) -> None:
        """Record a step's checks; the first step with a failing one is where the drill
        failed."""
        self.checks.extend(checks)
        if self.failed_step is None and not all(c.ok for c in checks):
            self.failed_step = step

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


class DrillRecord(BaseModel):
    id: str
    target: str
    backup_id: str | None = None
    status: DrillStatus
    started_at: datetime
    finished_at: datetime | None = None
    fell_back_from: str | None = None
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rto_target_seconds: float | None = None
    rpo_target_seconds: float | None = None
    timings: dict[str, float] = {}
    checks: list[DrillCheck] = []
    scratch: str | None = None
    kept: bool = False
    error: str | None = None
    failed_step: DrillStep | None = None  # the step a failed drill failed in; None otherwise
    host: str
    pid: int
    flow_run_id: str | None = None
    data_docs: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == DrillStatus.PASSED


def _drill(row: DrillRow) -> DrillRecord:
    data = {c.key: getattr(row, c.key) for c in DrillRow.__table__.columns if c.key != "gx_result"}
    data["timings"] = json.loads(row.timings or "{}")
    data["checks"] = json.loads(row.checks or "[]")
    if row.status != DrillStatus.FAILED:
        data["failed_step"] = None  # a running drill's step is where it is, not where it failed
    return DrillRecord.model_validate(data)


def _result_columns(results: DrillResults, *, with_gx: bool = False) -> dict[str, Any]:
    columns = results.model_dump(exclude={"gx_result", "failed_step", "timings", "checks"})
    columns["timings"] = json.dumps(results.timings)
    columns["checks"] = json.dumps([c.model_dump() for c in results.checks])
    if with_gx and results.gx_result is not None:
        columns["gx_result"] = json.dumps(results.gx_result)
    return columns


def _verdict(
    results: DrillResults, status: DrillStatus, step: DrillStep | None, error: str | None
) -> dict[str, Any]:
    return {
        **_result_columns(results, with_gx=True),
        "status": status,
        "failed_step": step,
        "error": error,
        "finished_at": utcnow(),
    }


class DrillLog:
    """The catalog's record of DR drills: lookups, and the transitions of one drill."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    # --- transitions ---------------------------------------------------------------------------

    def start(
        self,
        drill_id: str,
        target: str,
        started_at: datetime,
        host: str,
        pid: int,
        flow_run_id: str | None,
    ) -> DrillRecord:
        """A new drill of `target`, running in process `pid` on `host`."""
        with self.catalog.session() as session:
            if session.get(DrillRow, drill_id) is not None:
                raise DrillTransitionError(f"drill {drill_id} was already started")
            row = DrillRow(
                id=drill_id,
                target=target,
                status=DrillStatus.RUNNING,
                started_at=started_at,
                host=host,
                pid=pid,
                flow_run_id=flow_run_id,
                timings="{}",
                checks="[]",
                kept=False,
            )
            session.add(row)
            session.flush()
            return _drill(row)

    def record_scratch(self, drill_id: str, scratch: str) -> DrillRecord:
        """Where the drill's scratch database, server and work folder will be: recorded
        before any of them is created, so a drill that dies leaves a record of what to clean."""
        return self._apply(drill_id, "record_scratch", {"scratch": scratch})

    def enter_step(self, drill_id: str, step: DrillStep, results: DrillResults) -> DrillRecord:
        """Save what the steps so far found, and the step the drill now enters."""
        return self._apply(
            drill_id, "enter_step", {**_result_columns(results), "failed_step": step}
        )

    def mark_cleaned(self, drill_id: str) -> DrillRecord:
        """The scratch database, server and work folder are gone."""
        return self._apply(drill_id, "mark_cleaned", {"scratch": None})

    def finish(self, drill_id: str, results: DrillResults) -> DrillRecord:
        """Every step ran: passed when every check passed, else failed in the first step
        with a failing check."""
        status = DrillStatus.PASSED if results.ok else DrillStatus.FAILED
        step = None if results.ok else results.failed_step
        return self._apply(drill_id, "finish", _verdict(results, status, step, None))

    def mark_failed(
        self, drill_id: str, step: DrillStep, error: str | None, results: DrillResults
    ) -> DrillRecord:
        """A step failed: with an error, or with its reason already among the checks."""
        changes = _verdict(results, DrillStatus.FAILED, step, error)
        return self._apply(drill_id, "mark_failed", changes)

    def refuse(self, drill_id: str, error: str, results: DrillResults) -> DrillRecord:
        """An operator's mistake found once connected (the drill server is the source): no
        drill result."""
        changes = _verdict(results, DrillStatus.REFUSED, None, error)
        return self._apply(drill_id, "refuse", changes)

    def abandon(self, drill_id: str, note: str) -> DrillRecord:
        """The drill's process died: failed in the step it was in."""
        changes = {"status": DrillStatus.FAILED, "finished_at": utcnow(), "error": note}
        return self._apply(drill_id, "abandon", changes)

    def keep_for_forensics(self, drill_id: str) -> DrillRecord:
        """A failed drill's scratch is kept (not cleaned up) for someone to look at."""
        return self._apply(drill_id, "keep_for_forensics", {"kept": True})

    def _apply(self, drill_id: str, transition: str, changes: dict[str, Any]) -> DrillRecord:
        """One transition in one transaction, if the drill's status allows it."""
        starts, leads_to = TRANSITIONS[transition]
        with self.catalog.session() as session:
            row = self._row(session, drill_id)
            status = DrillStatus(row.status)
            if status not in starts or changes.get("status", status) not in leads_to:
                raise DrillTransitionError(f"drill {drill_id} is {status}: cannot {transition}")
            if transition == "keep_for_forensics" and (row.kept or row.scratch is None):
                raise DrillTransitionError(f"drill {drill_id} has no scratch left to keep")
            for column, value in changes.items():
                setattr(row, column, value)
            session.flush()
            return _drill(row)

    # --- lookups -------------------------------------------------------------------------------

    @staticmethod
    def _row(session: Session, drill_id: str) -> DrillRow:
        row = session.get(DrillRow, drill_id)
        if row is None:
            raise NotFoundError(f"unknown drill id {drill_id!r} (see `runbook drills list`)")
        return row

    def get(self, drill_id: str) -> DrillRecord:
        with self.catalog.session() as session:
            return _drill(self._row(session, drill_id))

    def gx_result(self, drill_id: str) -> dict[str, Any] | None:
        """The drill's Great Expectations validation result, or None (a Redis drill, or a drill
        that failed before validation)."""
        with self.catalog.session() as session:
            row = self._row(session, drill_id)
            return json.loads(row.gx_result) if row.gx_result else None

    def list(
        self,
        target: str | None = None,
        limit: int | None = 50,
        status: DrillStatus | str | None = None,
    ) -> list[DrillRecord]:
        query = select(DrillRow).order_by(DrillRow.started_at.desc(), DrillRow.id.desc())
        if target:
            query = query.where(DrillRow.target == target)
        if status:
            query = query.where(DrillRow.status == DrillStatus(status))
        if limit:
            query = query.limit(limit)
        with self.catalog.session() as session:
            return [_drill(row) for row in session.scalars(query)]
