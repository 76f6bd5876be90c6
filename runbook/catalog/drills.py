"""DR drills: one row per drill of one target, its checks, timings and verdict."""

from __future__ import annotations

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
from runbook.catalog.db import Base, UTCDateTime
from runbook.errors import NotFoundError


class DrillRow(Base):
    """One DR restore drill of one target."""

    __tablename__ = "drills"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(63), index=True)
    backup_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # running, passed, failed
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fell_back_from: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rto_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    rpo_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    rto_target_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    rpo_target_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    timings: Mapped[str] = mapped_column(Text, default="{}")  # JSON: step -> seconds
    checks: Mapped[str] = mapped_column(Text, default="[]")  # JSON: [{name, ok, detail}]
    scratch: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    kept: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    failed_step: Mapped[str | None] = mapped_column(String(32), nullable=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The Great Expectations validation result (JSON), loaded only by DrillLog.gx_result:
    # it grows with the number of tables, and lists of drills do not need it.
    gx_result: Mapped[str | None] = deferred(mapped_column(Text, nullable=True))
    data_docs: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # index.html


class DrillCheckRecord(BaseModel):
    name: str
    ok: bool
    detail: str = ""


class DrillRecord(BaseModel):
    id: str
    target: str
    backup_id: str | None = None
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    fell_back_from: str | None = None
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rto_target_seconds: float | None = None
    rpo_target_seconds: float | None = None
    timings: dict[str, float] = {}
    checks: list[DrillCheckRecord] = []
    scratch: str | None = None
    kept: bool = False
    error: str | None = None
    failed_step: str | None = None  # the step a failed drill died in: pick, restore, validate...
    host: str
    pid: int
    flow_run_id: str | None = None
    data_docs: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _drill(row: DrillRow) -> DrillRecord:
    data = {c.key: getattr(row, c.key) for c in DrillRow.__table__.columns if c.key != "gx_result"}
    data["timings"] = json.loads(row.timings or "{}")
    data["checks"] = json.loads(row.checks or "[]")
    return DrillRecord.model_validate(data)


class DrillLog:
    """The catalog's record of DR drills."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def start(
        self,
        drill_id: str,
        target: str,
        started_at: datetime,
        host: str,
        pid: int,
        flow_run_id: str | None,
    ) -> DrillRecord:
        with self.catalog.session() as session:
            row = DrillRow(
                id=drill_id,
                target=target,
                status="running",
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

    def update(self, drill_id: str, **fields: Any) -> DrillRecord:
        with self.catalog.session() as session:
            row = self._row(session, drill_id)
            for name, value in fields.items():
                if name in ("timings", "checks") or (name == "gx_result" and value is not None):
                    value = json.dumps(value)
                setattr(row, name, value)
            session.flush()
            return _drill(row)

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
        self, target: str | None = None, limit: int | None = 50, status: str | None = None
    ) -> list[DrillRecord]:
        query = select(DrillRow).order_by(DrillRow.started_at.desc(), DrillRow.id.desc())
        if target:
            query = query.where(DrillRow.target == target)
        if status:
            query = query.where(DrillRow.status == status)
        if limit:
            query = query.limit(limit)
        with self.catalog.session() as session:
            return [_drill(row) for row in session.scalars(query)]
