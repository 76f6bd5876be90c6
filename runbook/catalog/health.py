"""Health history: the runs of the health flow, one row per check per run with its failing
streak, and the small state checks keep between runs (log offsets).

A run moves running -> ok | unknown | warn | critical (the worst status of its checks):
`start` records it, `record` adds its checks while it runs, `finish` gives its verdict.
"""

from __future__ import annotations

import enum
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
    Session,
    mapped_column,
)

from runbook.catalog.backups import Catalog
from runbook.catalog.db import Base, UTCDateTime, utcnow
from runbook.errors import NotFoundError
from runbook.health import CheckResult, Status, Tracked


class HealthRunStatus(enum.StrEnum):
    RUNNING = "running"  # started; a run the flow never finished stays here
    OK = "ok"
    UNKNOWN = "unknown"
    WARN = "warn"
    CRITICAL = "critical"

    @classmethod
    def of(cls, status: Status) -> HealthRunStatus:
        """A finished run's status: the worst status of its checks."""
        return cls(status.value)


class HealthRunTransitionError(RuntimeError):
    """A transition the run's status does not allow (a bug, not an operator mistake)."""


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


class HealthRun(BaseModel):
    id: str
    started_at: datetime
    finished_at: datetime | None = None
    status: HealthRunStatus
    severity: str | None = None  # P1-P4, None when every check was ok
    kinds: list[str] = []  # the check kinds it ran; empty: every kind
    flow_run_id: str | None = None


class StoredCheck(CheckResult):
    """A check result as the history keeps it: in which run, when, and its failing streak.
    The catalog keeps no unit: a stored check reads back with unit ''."""

    run_id: str
    at: datetime
    streak: int = 0  # consecutive failing runs, this one included (0 when ok)
    notified: bool = False  # this failing episode has been notified

    @classmethod
    def of(cls, tracked: Tracked, run_id: str, at: datetime) -> StoredCheck:
        return cls(
            **dict(tracked.result),
            run_id=run_id,
            at=at,
            streak=tracked.streak,
            notified=tracked.notified,
        )


# The row <-> model mapping follows the table's columns: a column added to check_results (and
# to StoredCheck) is stored and read back without touching this code.
_RESULT_COLUMNS = frozenset(c.key for c in CheckResultRow.__table__.columns) - {"id"}


def _result_row(check: StoredCheck) -> CheckResultRow:
    data = check.model_dump(include=_RESULT_COLUMNS)
    data["value"] = json.dumps(check.value) if check.value is not None else None
    return CheckResultRow(**data)


def _stored(row: CheckResultRow) -> StoredCheck:
    data = {key: getattr(row, key) for key in _RESULT_COLUMNS}
    data["value"] = json.loads(row.value) if row.value is not None else None
    return StoredCheck.model_validate(data)


def _run(row: HealthRunRow) -> HealthRun:
    data = {c.key: getattr(row, c.key) for c in HealthRunRow.__table__.columns}
    data["kinds"] = row.kinds.split(",") if row.kinds else []
    return HealthRun.model_validate(data)


class HealthHistory:
    """Health runs with their checks (and failing streaks), and the state checks keep."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    @staticmethod
    def _run_row(session: Session, run_id: str) -> HealthRunRow:
        row = session.get(HealthRunRow, run_id)
        if row is None:
            raise NotFoundError(f"unknown health run id {run_id!r}")
        return row

    @classmethod
    def _running_row(cls, session: Session, run_id: str, doing: str) -> HealthRunRow:
        row = cls._run_row(session, run_id)
        if row.status != HealthRunStatus.RUNNING:
            raise HealthRunTransitionError(
                f"cannot {doing} health run {run_id!r}: it is {row.status} already"
            )
        return row

    # --- a run's transitions ---------------------------------------------------------------

    def start(
        self, run_id: str, started_at: datetime, kinds: list[str], flow_run_id: str | None
    ) -> HealthRun:
        """Record a run as running; `kinds` empty means every kind."""
        with self.catalog.session() as session:
            if session.get(HealthRunRow, run_id) is not None:
                raise HealthRunTransitionError(f"health run {run_id!r} was already started")
            row = HealthRunRow(
                id=run_id,
                started_at=started_at,
                status=HealthRunStatus.RUNNING,
                kinds=",".join(kinds),
                flow_run_id=flow_run_id,
            )
            session.add(row)
            session.flush()
            return _run(row)

    def record(self, run_id: str, at: datetime, tracked: list[Tracked]) -> list[StoredCheck]:
        """Keep a running run's check results with their failing streaks."""
        stored = [StoredCheck.of(t, run_id, at) for t in tracked]
        with self.catalog.session() as session:
            self._running_row(session, run_id, "record checks of")
            session.add_all(_result_row(check) for check in stored)
        return stored

    def finish(self, run_id: str, status: Status, severity: str | None) -> HealthRun:
        """A running run's verdict: the worst status of its checks and its severity."""
        with self.catalog.session() as session:
            row = self._running_row(session, run_id, "finish")
            row.status = HealthRunStatus.of(status)
            row.severity = severity
            row.finished_at = utcnow()
            session.flush()
            return _run(row)

    # --- reading ---------------------------------------------------------------------------

    def run(self, run_id: str) -> HealthRun:
        with self.catalog.session() as session:
            return _run(self._run_row(session, run_id))

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

    def latest_run(self) -> HealthRun | None:
        """The newest finished health run, None when none has finished."""
        with self.catalog.session() as session:
            row = session.scalars(
                select(HealthRunRow)
                .where(HealthRunRow.status != HealthRunStatus.RUNNING)
                .order_by(HealthRunRow.started_at.desc())
                .limit(1)
            ).first()
            return _run(row) if row is not None else None

    def runs_between(self, start: datetime, end: datetime) -> list[HealthRun]:
        """The runs started in [start, end), oldest first."""
        with self.catalog.session() as session:
            rows = session.scalars(
                select(HealthRunRow)
                .where(HealthRunRow.started_at >= start, HealthRunRow.started_at < end)
                .order_by(HealthRunRow.started_at)
            )
            return [_run(row) for row in rows]

    def results_between(self, start: datetime, end: datetime) -> list[StoredCheck]:
        """Every stored check result in [start, end), oldest first."""
        with self.catalog.session() as session:
            rows = session.scalars(
                select(CheckResultRow)
                .where(CheckResultRow.at >= start, CheckResultRow.at < end)
                .order_by(CheckResultRow.at, CheckResultRow.id)
            )
            return [_stored(row) for row in rows]

    def run_results(self, run_id: str) -> list[StoredCheck]:
        """The checks of one run, in the order they were recorded."""
        with self.catalog.session() as session:
            rows = session.scalars(
                select(CheckResultRow)
                .where(CheckResultRow.run_id == run_id)
                .order_by(CheckResultRow.id)
            )
            return [_stored(row) for row in rows]

    def history(self, check: str, target: str, limit: int = 50) -> list[StoredCheck]:
        """One check of one target, newest first."""
        with self.catalog.session() as session:
            rows = session.scalars(
                select(CheckResultRow)
                .where(CheckResultRow.check == check, CheckResultRow.target == target)
                .order_by(CheckResultRow.at.desc(), CheckResultRow.id.desc())
                .limit(limit)
            )
            return [_stored(row) for row in rows]

    # --- state checks keep between runs ----------------------------------------------------

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
