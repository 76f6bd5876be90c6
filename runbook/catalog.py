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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    delete,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    deferred,
    mapped_column,
    relationship,
)

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


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


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
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The Great Expectations validation result (JSON), loaded only by DrillLog.gx_result:
    # it grows with the number of tables, and lists of drills do not need it.
    gx_result: Mapped[str | None] = deferred(mapped_column(Text, nullable=True))
    data_docs: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # index.html


class StateRow(Base):
    """Small JSON state that checks keep between runs (log offsets)."""

    __tablename__ = "state"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- records handed to callers (detached from the session) ---------------------------------


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


# --- the repository ------------------------------------------------------------------------

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration; a test keeps it equal to Alembic's head. When the database is already
# there, opening the catalog skips importing Alembic (read-only commands must start fast).
HEAD_REVISION = "0004"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def current_revision(engine: Engine) -> str | None:
    from sqlalchemy import inspect, text

    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


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


# --- health history and state ------------------------------------------------------------------


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


# --- drills ------------------------------------------------------------------------------------


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
