"""Health history: one row per check per run with its failing streak, the runs themselves, and
the small state checks keep between runs (log offsets).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    select,
)
from sqlalchemy.orm import (
    Mapped,
    mapped_column,
)

from runbook.catalog.backups import Catalog
from runbook.catalog.db import Base, UTCDateTime, utcnow


class HealthRunRow(Base):
    """One run of the health flow (daily or the hourly light run)."""

    __tablename__ = "health_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str | None] = mapped_column(String(4), nullable=True)
    kinds: Mapped[str] = mapped_column(String(255))  # comma-separated, "" = all
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class CheckResultRow(Base):
    """One check of one target in one run: the health history."""

    __tablename__ = "check_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        ForeignKey("health_runs.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    check: Mapped[str] = mapped_column(String(255))
    target: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    value: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    threshold: Mapped[str | None] = mapped_column(String(255), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    streak: Mapped[int] = mapped_column(Integer, default=0)  # consecutive failing runs
    notified: Mapped[bool] = mapped_column(default=False)


Index("ix_check_results_key_at", CheckResultRow.check, CheckResultRow.target, CheckResultRow.at)


class StateRow(Base):
    """Small JSON state that checks keep between runs (log offsets)."""

    __tablename__ = "state"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StoredCheck(BaseModel):
    run_id: str
    at: datetime
    check: str
    target: str
    status: str
    value: Any = None
    threshold: str | None = None
    message: str = ""
    duration: float = 0.0
    streak: int = 0
    notified: bool = False


def _stored(row: CheckResultRow) -> StoredCheck:
    return StoredCheck(
        run_id=row.run_id,
        at=row.at,
        check=row.check,
        target=row.target,
        status=row.status,
        value=json.loads(row.value) if row.value is not None else None,
        threshold=row.threshold,
        message=row.message,
        duration=row.duration,
        streak=row.streak,
        notified=row.notified,
    )


class HealthHistory:
    """Health runs, check results with their failing streaks, and check state."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def start_run(
        self, run_id: str, started_at: datetime, kinds: list[str], flow_run_id: str | None
    ) -> None:
        with self.catalog.session() as session:
            session.add(
                HealthRunRow(
                    id=run_id,
                    started_at=started_at,
                    status="running",
                    kinds=",".join(kinds),
                    flow_run_id=flow_run_id,
                )
            )

    def finish_run(self, run_id: str, status: str, severity: str | None) -> None:
        with self.catalog.session() as session:
            row = session.get(HealthRunRow, run_id)
            row.status, row.severity, row.finished_at = status, severity, utcnow()

    def last_results(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], StoredCheck]:
        """The newest stored result of each (check, target)."""
        found: dict[tuple[str, str], StoredCheck] = {}
        wanted = set(keys)
        checks = {k[0] for k in wanted}
        with self.catalog.session() as session:
            rows = session.scalars(
                select(CheckResultRow)
                .where(CheckResultRow.check.in_(checks))
                .order_by(CheckResultRow.at.desc(), CheckResultRow.id.desc())
            )
            for row in rows:
                key = (row.check, row.target)
                if key in wanted and key not in found:
                    found[key] = _stored(row)
                if len(found) == len(wanted):
                    break
        return found

    def add_results(self, run_id: str, at: datetime, results: list[StoredCheck]) -> None:
        with self.catalog.session() as session:
            for r in results:
                session.add(
                    CheckResultRow(
                        run_id=run_id,
                        at=at,
                        check=r.check,
                        target=r.target,
                        status=r.status,
                        value=json.dumps(r.value) if r.value is not None else None,
                        threshold=r.threshold,
                        message=r.message,
                        duration=r.duration,
                        streak=r.streak,
                        notified=r.notified,
                    )
                )

    def history(self, check: str, target: str, limit: int = 50) -> list[StoredCheck]:
        with self.catalog.session() as session:
            rows = session.scalars(
                select(CheckResultRow)
                .where(CheckResultRow.check == check, CheckResultRow.target == target)
                .order_by(CheckResultRow.at.desc(), CheckResultRow.id.desc())
                .limit(limit)
            )
            return [_stored(row) for row in rows]

    def get_state(self, key: str) -> dict[str, Any]:
        with self.catalog.session() as session:
            row = session.get(StateRow, key)
            return json.loads(row.value) if row else {}

    def put_state(self, key: str, value: dict[str, Any]) -> None:
        with self.catalog.session() as session:
            row = session.get(StateRow, key)
            if row is None:
                session.add(StateRow(key=key, value=json.dumps(value), updated_at=utcnow()))
            else:
                row.value, row.updated_at = json.dumps(value), utcnow()
