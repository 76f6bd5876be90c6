"""The catalog: Runbook's system of record (SQLAlchemy 2, SQLite by default, PostgreSQL too).

A backup row moves running -> stored -> verified, or ends failed / locked / corrupt; retention
moves it to deleting -> deleted. The manifest in storage is the commit marker: a backup is
listed as existing only once its manifest was written (status stored, verified or corrupt).
The schema is created and upgraded by the Alembic migrations in `runbook/migrations`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    delete,
    select,
)
from sqlalchemy.orm import (
    Mapped,
    Session,
    mapped_column,
    relationship,
)

from runbook.catalog.db import Base, UTCDateTime, make_engine, migrate
from runbook.errors import NotFoundError


class BackupStatus(enum.StrEnum):
    RUNNING = "running"
    STORED = "stored"  # manifest written, verification pending
    VERIFIED = "verified"  # read back from storage and matched its manifest
    CORRUPT = "corrupt"  # committed, but storage no longer matches the manifest
    FAILED = "failed"
    LOCKED = "locked"  # another backup of the target held the lock for too long
    DELETING = "deleting"  # retention started removing its objects
    DELETED = "deleted"


COMMITTED = frozenset({BackupStatus.STORED, BackupStatus.VERIFIED, BackupStatus.CORRUPT})


UNSUCCESSFUL = frozenset({BackupStatus.FAILED, BackupStatus.LOCKED})


class BackupRow(Base):
    __tablename__ = "backups"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(63), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    bytes_stored: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes_logical: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    storage: Mapped[str] = mapped_column(String(1024))
    manifest_key: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    failed_step: Mapped[str | None] = mapped_column(String(32), nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    artifacts: Mapped[list[ArtifactRow]] = relationship(
        back_populates="backup", cascade="all, delete-orphan", order_by="ArtifactRow.id"
    )


class ArtifactRow(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backup_id: Mapped[str] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(1024))
    content: Mapped[str] = mapped_column(String(32))
    codec: Mapped[str] = mapped_column(String(16))
    bytes: Mapped[int] = mapped_column(BigInteger)
    logical_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    problem: Mapped[str | None] = mapped_column(Text, nullable=True)

    backup: Mapped[BackupRow] = relationship(back_populates="artifacts")


class VerificationRow(Base):
    """Every verification run, good or bad, kept as history."""

    __tablename__ = "verifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backup_id: Mapped[str] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ok: Mapped[bool]
    problems: Mapped[str] = mapped_column(Text, default="[]")  # JSON list


class ArtifactRecord(BaseModel):
    name: str
    key: str
    content: str
    codec: str
    bytes: int
    logical_bytes: int
    sha256: str
    seconds: float | None = None
    verified_at: datetime | None = None
    problem: str | None = None


class BackupRecord(BaseModel):
    id: str
    target: str
    kind: str
    status: BackupStatus
    started_at: datetime
    finished_at: datetime | None = None
    verified_at: datetime | None = None
    deleted_at: datetime | None = None
    bytes_stored: int | None = None
    bytes_logical: int | None = None
    storage: str
    manifest_key: str | None = None
    attempts: int = 0
    error: str | None = None
    failed_step: str | None = None  # the step a failed backup died in: dump, store, verify...
    flow_run_id: str | None = None
    artifacts: list[ArtifactRecord] = []

    @property
    def committed(self) -> bool:
        return self.status in COMMITTED


class VerificationRecord(BaseModel):
    backup_id: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    problems: list[dict[str, Any]]


def _record(row: BackupRow) -> BackupRecord:
    data = {c.key: getattr(row, c.key) for c in BackupRow.__table__.columns}
    data["artifacts"] = [
        ArtifactRecord.model_validate(
            {c.key: getattr(a, c.key) for c in ArtifactRow.__table__.columns}
        )
        for a in row.artifacts
    ]
    return BackupRecord.model_validate(data)


class Catalog:
    """The repository for backups, their artifacts and verifications."""

    def __init__(self, url: str, *, migrate_schema: bool = True):
        self.url = url
        self.engine = make_engine(url)
        if migrate_schema:
            migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def _row(self, session: Session, backup_id: str) -> BackupRow:
        row = session.get(BackupRow, backup_id)
        if row is None:
            raise NotFoundError(f"unknown backup id {backup_id!r} (see `runbook backups list`)")
        return row

    # backups

    def create_backup(
        self,
        *,
        backup_id: str,
        target: str,
        kind: str,
        storage: str,
        started_at: datetime,
        flow_run_id: str | None = None,
    ) -> BackupRecord:
        with self.session() as session:
            row = BackupRow(
                id=backup_id,
                target=target,
                kind=kind,
                status=BackupStatus.RUNNING,
                started_at=started_at,
                storage=storage,
                attempts=0,
                flow_run_id=flow_run_id,
            )
            session.add(row)
            session.flush()
            return _record(row)

    def update_backup(self, backup_id: str, **fields: Any) -> BackupRecord:
        with self.session() as session:
            row = self._row(session, backup_id)
            for name, value in fields.items():
                if not hasattr(BackupRow, name) or name == "artifacts":
                    raise AttributeError(f"backups has no column {name!r}")
                setattr(row, name, value)
            session.flush()
            return _record(row)

    def get_backup(self, backup_id: str) -> BackupRecord:
        with self.session() as session:
            return _record(self._row(session, backup_id))

    def list_backups(
        self,
        *,
        target: str | None = None,
        statuses: set[BackupStatus] | frozenset[BackupStatus] | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> list[BackupRecord]:
        """Newest first."""
        query = select(BackupRow).order_by(BackupRow.started_at.desc(), BackupRow.id.desc())
        if target:
            query = query.where(BackupRow.target == target)
        if statuses:
            query = query.where(BackupRow.status.in_([s.value for s in statuses]))
        elif not include_deleted:
            query = query.where(BackupRow.status != BackupStatus.DELETED.value)
        if limit:
            query = query.limit(limit)
        with self.session() as session:
            return [_record(row) for row in session.scalars(query)]

    def latest_backup(
        self,
        target: str | None = None,
        statuses: frozenset[BackupStatus] = frozenset({BackupStatus.VERIFIED}),
    ) -> BackupRecord | None:
        found = self.list_backups(target=target, statuses=statuses, limit=1)
        return found[0] if found else None

    # artifacts

    def add_artifact(self, backup_id: str, artifact: ArtifactRecord) -> None:
        with self.session() as session:
            row = self._row(session, backup_id)
            row.artifacts.append(ArtifactRow(**artifact.model_dump()))

    def clear_artifacts(self, backup_id: str) -> None:
        with self.session() as session:
            self._row(session, backup_id)
            session.execute(delete(ArtifactRow).where(ArtifactRow.backup_id == backup_id))

    def record_artifact_check(
        self, backup_id: str, key: str, *, verified_at: datetime | None, problem: str | None
    ) -> None:
        with self.session() as session:
            for artifact in self._row(session, backup_id).artifacts:
                if artifact.key == key:
                    artifact.verified_at = verified_at
                    artifact.problem = problem

    # verifications

    def add_verification(
        self,
        backup_id: str,
        *,
        started_at: datetime,
        finished_at: datetime,
        ok: bool,
        problems: list[dict[str, Any]],
    ) -> None:
        with self.session() as session:
            self._row(session, backup_id)
            session.add(
                VerificationRow(
                    backup_id=backup_id,
                    started_at=started_at,
                    finished_at=finished_at,
                    ok=ok,
                    problems=json.dumps(problems),
                )
            )

    def verifications(self, backup_id: str) -> list[VerificationRecord]:
        query = (
            select(VerificationRow)
            .where(VerificationRow.backup_id == backup_id)
            .order_by(VerificationRow.id)
        )
        with self.session() as session:
            return [
                VerificationRecord(
                    backup_id=v.backup_id,
                    started_at=v.started_at,
                    finished_at=v.finished_at,
                    ok=v.ok,
                    problems=json.loads(v.problems),
                )
                for v in session.scalars(query)
            ]
