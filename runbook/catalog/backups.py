"""The catalog: Runbook's system of record (SQLAlchemy 2, SQLite by default, PostgreSQL too),
and in it the backups: one row per backup of one target, its artifacts and verifications.

A backup row moves only by the named transitions of `Catalog` (Barman's BackupInfo is the
model), each refusing a move its status does not allow (`TRANSITIONS`):

    start ------------------> running --mark_stored(manifest)------> stored
      (a new id; a retried      |     --mark_failed(step, error)---> failed
       attempt of a failed      |     --mark_locked(error)---------> locked
       or running one)
    stored | verified | corrupt --mark_verified--> verified
    stored | verified | corrupt --mark_corrupt---> corrupt          (failed_step "verify")
    unknown | deleted | stored  --import_stored(manifest)--> stored (storage wins)
    anything but deleted        --mark_deleting--> deleting --mark_deleted--> deleted
    stored | verified | corrupt --pin(keep_until, label) / unpin--> (status unchanged)

A pin set at backup time travels in the manifest; one set later (`runbook backups pin`) is the
catalog's alone (the sealed manifest is never rewritten), so a catalog rebuilt from storage
has the backup-time pin only.

The manifest in storage is the commit marker: a backup is listed as existing only once its
manifest was written (status stored, verified or corrupt: COMMITTED). Storage is not trusted:
the row keeps the manifest's seal (its sha256 and one per part, `ManifestSeal`) and the
artifacts it committed, so verification can tell an edited or swapped manifest. A backup
that is not good keeps the step it failed in (`failed_step`, a BackupStep) beside its error.
The schema is created and upgraded by the Alembic migrations in `runbook/migrations`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Iterator
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
    select,
)
from sqlalchemy.orm import (
    Mapped,
    Session,
    mapped_column,
    relationship,
)

from runbook.catalog.db import Base, UTCDateTime, make_engine, migrate, utcnow
from runbook.errors import NotFoundError
from runbook.manifest import Manifest, ManifestSeal, StoredArtifact
from runbook.pins import Pin


class BackupStatus(enum.StrEnum):
    RUNNING = "running"
    STORED = "stored"  # manifest written, verification pending
    VERIFIED = "verified"  # read back from storage and matched its manifest
    CORRUPT = "corrupt"  # committed, but storage no longer matches the manifest
    FAILED = "failed"
    LOCKED = "locked"  # another backup of the target held the lock for too long
    DELETING = "deleting"  # retention started removing its objects
    DELETED = "deleted"


# Named groups of statuses.
COMMITTED = frozenset({BackupStatus.STORED, BackupStatus.VERIFIED, BackupStatus.CORRUPT})
UNSUCCESSFUL = frozenset({BackupStatus.FAILED, BackupStatus.LOCKED})  # never committed


class BackupStep(enum.StrEnum):
    """The steps of a backup, in order (tasks/backups/dump.py, then verify.py): a backup that
    failed, was locked out or found corrupt names the one it failed in."""

    LOCK = "lock"  # wait for the target's lock (another backup of it is running)
    CONNECT = "connect"  # reach the source: server facts, Redis INFO, the files' paths
    SNAPSHOT = "snapshot"  # PostgreSQL: export a snapshot, read the schema and row counts in it
    DUMP = "dump"  # run the dump (pg_dump, the RDB stream, tar) and compress it
    STORE = "store"  # write the compressed stream to storage
    MANIFEST = "manifest"  # write the manifest, the commit marker
    VERIFY = "verify"  # read it back from storage and compare with the manifest


# transition -> (the statuses it may start from, the status it leads to; None: it stays)
TRANSITIONS: dict[str, tuple[frozenset[BackupStatus], BackupStatus | None]] = {
    "start": (frozenset({BackupStatus.FAILED, BackupStatus.RUNNING}), BackupStatus.RUNNING),
    "mark_stored": (frozenset({BackupStatus.RUNNING}), BackupStatus.STORED),
    "import_stored": (frozenset({BackupStatus.DELETED, BackupStatus.STORED}), BackupStatus.STORED),
    "mark_failed": (frozenset({BackupStatus.RUNNING}), BackupStatus.FAILED),
    "mark_locked": (frozenset({BackupStatus.RUNNING}), BackupStatus.LOCKED),
    "mark_verified": (COMMITTED, BackupStatus.VERIFIED),
    "mark_corrupt": (COMMITTED, BackupStatus.CORRUPT),
    "mark_deleting": (frozenset(BackupStatus) - {BackupStatus.DELETED}, BackupStatus.DELETING),
    "mark_deleted": (frozenset({BackupStatus.DELETING}), BackupStatus.DELETED),
    # `runbook backups pin/unpin`: a committed backup's label and keep_until, status unchanged
    "pin": (COMMITTED, None),
    "unpin": (COMMITTED, None),
}


class BackupTransitionError(RuntimeError):
    """A transition the backup's status does not allow (a bug, not an operator mistake)."""


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
    # The committed manifest's seal: sha256 of its bytes, and {part: sha256} as JSON.
    manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    manifest_parts: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    failed_step: Mapped[str | None] = mapped_column(String(32), nullable=True)  # BackupStep
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    label: Mapped[str | None] = mapped_column(String(63), nullable=True)  # runbook.pins
    keep_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # pin

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


class ArtifactRecord(StoredArtifact):
    """An artifact as the catalog knows it: the facts its manifest entry holds, plus what the
    last verification found. Two models over one set of facts, because the manifest is the
    commit marker written once into storage (and says which schema an archive holds), while
    verification state changes and belongs to the catalog only."""

    verified_at: datetime | None = None
    problem: str | None = None  # the last verification's finding, None when it matched


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
    manifest_sha256: str | None = None  # of the manifest this backup committed
    manifest_parts: dict[str, str] | None = None  # sha256 of each of its parts
    attempts: int = 0
    error: str | None = None
    failed_step: BackupStep | None = None  # the step a failed, locked or corrupt backup failed in
    flow_run_id: str | None = None
    label: str | None = None  # a name for people (`runbook backup --label`)
    keep_until: datetime | None = None  # pinned: retention keeps it until then
    artifacts: list[ArtifactRecord] = []

    @property
    def committed(self) -> bool:
        return self.status in COMMITTED

    @property
    def manifest_seal(self) -> ManifestSeal | None:
        """The seal of the manifest it committed; None for a backup committed before the
        catalog kept seals (until its first good verification) or not committed."""
        if self.manifest_sha256 is None:
            return None
        return ManifestSeal(self.manifest_sha256, dict(self.manifest_parts or {}))


class VerificationRecord(BaseModel):
    backup_id: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    problems: list[dict[str, Any]]


def _record(row: BackupRow) -> BackupRecord:
    data = {c.key: getattr(row, c.key) for c in BackupRow.__table__.columns}
    data["manifest_parts"] = json.loads(row.manifest_parts) if row.manifest_parts else None
    data["artifacts"] = [
        ArtifactRecord.model_validate(
            {c.key: getattr(a, c.key) for c in ArtifactRow.__table__.columns}
        )
        for a in row.artifacts
    ]
    return BackupRecord.model_validate(data)


def _sealed(seal: ManifestSeal) -> dict[str, Any]:
    return {"manifest_sha256": seal.sha256, "manifest_parts": json.dumps(seal.parts)}


def _stored_from(
    manifest: Manifest, seal: ManifestSeal
) -> tuple[dict[str, Any], Callable[[Session, BackupRow], None]]:
    """What a committed backup's row takes from its manifest (and the seal of the manifest's
    stored bytes): the one home of "record a stored backup", for a backup that just
    committed and for one imported from storage."""
    changes = {
        "finished_at": manifest.finished_at,
        "bytes_stored": sum(a.bytes for a in manifest.artifacts),
        "bytes_logical": sum(a.logical_bytes for a in manifest.artifacts),
        "manifest_key": manifest.key,
        # the manifest carries the label and pin, so they survive a catalog rebuilt from storage
        "label": manifest.label,
        "keep_until": manifest.keep_until,
        **_sealed(seal),
    }
    facts = set(StoredArtifact.model_fields)

    def artifacts(_session: Session, row: BackupRow) -> None:
        row.artifacts = [ArtifactRow(**a.model_dump(include=facts)) for a in manifest.artifacts]

    return changes, artifacts


def _record_checks(
    row: BackupRow, checked_at: datetime, good: Iterable[str], bad: dict[str, str | None]
) -> None:
    """Each artifact a verification read: verified at `checked_at`, or its problem."""
    good = set(good)
    for artifact in row.artifacts:
        if artifact.key in good:
            artifact.verified_at, artifact.problem = checked_at, None
        elif artifact.key in bad:
            artifact.verified_at, artifact.problem = None, bad[artifact.key]


class Catalog:
    """The catalog's entry point (its engine and sessions, shared by DrillLog and
    HealthHistory) and the repository of backups: lookups and named transitions."""

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

    @staticmethod
    def _row(session: Session, backup_id: str) -> BackupRow:
        row = session.get(BackupRow, backup_id)
        if row is None:
            raise NotFoundError(f"unknown backup id {backup_id!r} (see `runbook backups list`)")
        return row

    # --- transitions ---------------------------------------------------------------------------

    def start(
        self,
        backup_id: str,
        *,
        target: str,
        kind: str,
        storage: str,
        started_at: datetime,
        flow_run_id: str | None = None,
        pin: Pin | None = None,
    ) -> BackupRecord:
        """An attempt at a backup begins: a new row, or the next attempt of a failed one
        (a retry after a transient fault), counted in `attempts`; `pin` its label and the
        moment retention keeps it until."""
        pin = pin or Pin()

        def new() -> BackupRow:
            return BackupRow(
                id=backup_id,
                target=target,
                kind=kind,
                status=BackupStatus.RUNNING,
                started_at=started_at,
                storage=storage,
                attempts=0,
                flow_run_id=flow_run_id,
            )

        def next_attempt(_session: Session, row: BackupRow) -> None:
            row.attempts = (row.attempts or 0) + 1

        changes = {
            "started_at": started_at,
            "finished_at": None,
            "error": None,
            "label": pin.label,
            "keep_until": pin.keep_until,
        }
        return self._move(
            backup_id, "start", {**changes, "failed_step": None}, new=new, edit=next_attempt
        )

    def mark_stored(
        self, backup_id: str, manifest: Manifest, seal: ManifestSeal | None = None
    ) -> BackupRecord:
        """The attempt wrote its manifest: the backup exists, with the manifest's artifacts
        and its seal (by default that of `manifest.to_json()`, the bytes a backup writes)."""
        changes, artifacts = _stored_from(manifest, seal or manifest.seal())
        return self._move(backup_id, "mark_stored", changes, edit=artifacts)

    def import_stored(
        self, manifest: Manifest, storage: str, seal: ManifestSeal | None = None
    ) -> BackupRecord:
        """A committed backup found in storage that the catalog does not know, or knows as
        deleted (storage wins): stored, and said to be unverified until it is read back.
        `seal` is that of the manifest's bytes as found (default: of `manifest.to_json()`).
        Whether storage may be believed is the importer's call (tasks/backups/retention.py)."""
        changes, artifacts = _stored_from(manifest, seal or manifest.seal())
        changes |= {"deleted_at": None, "error": "imported from storage; not yet verified"}

        def new() -> BackupRow:
            return BackupRow(
                id=manifest.backup_id,
                target=manifest.target,
                kind=manifest.kind,
                status=BackupStatus.STORED,
                started_at=manifest.started_at,
                storage=storage,
                attempts=0,
            )

        return self._move(manifest.backup_id, "import_stored", changes, new=new, edit=artifacts)

    def mark_failed(
        self, backup_id: str, step: BackupStep, error: str, *, at: datetime | None = None
    ) -> BackupRecord:
        """The attempt failed in `step` (its objects are already removed)."""
        changes = {"finished_at": at or utcnow(), "error": error, "failed_step": step}
        return self._move(backup_id, "mark_failed", changes)

    def mark_locked(
        self, backup_id: str, error: str, *, at: datetime | None = None
    ) -> BackupRecord:
        """Another backup of the target held its lock for longer than backup.lock_timeout."""
        changes = {"finished_at": at or utcnow(), "error": error, "failed_step": BackupStep.LOCK}
        return self._move(backup_id, "mark_locked", changes)

    def mark_verified(
        self,
        backup_id: str,
        *,
        started_at: datetime,
        finished_at: datetime,
        keys: Iterable[str],
        seal: ManifestSeal | None = None,
    ) -> BackupRecord:
        """A verification read the artifacts `keys` back and each matched the manifest.
        `seal` seals a backup committed before the catalog kept seals (never replaces one)."""

        def record(session: Session, row: BackupRow) -> None:
            _record_checks(row, finished_at, keys, {})
            if seal is not None and row.manifest_sha256 is None:
                for column, value in _sealed(seal).items():
                    setattr(row, column, value)
            session.add(
                VerificationRow(
                    backup_id=backup_id, started_at=started_at, finished_at=finished_at, ok=True
                )
            )

        changes = {"verified_at": finished_at, "error": None, "failed_step": None}
        return self._move(backup_id, "mark_verified", changes, edit=record)

    def mark_corrupt(
        self,
        backup_id: str,
        *,
        started_at: datetime,
        finished_at: datetime,
        problems: list[dict[str, Any]],
        good_keys: Iterable[str] = (),
    ) -> BackupRecord:
        """A verification found damage: `problems` are {key, problem, detail} (the first one
        becomes the backup's error); the artifacts `good_keys` matched."""
        if not problems:
            raise ValueError("mark_corrupt needs at least one problem")

        def record(session: Session, row: BackupRow) -> None:
            _record_checks(row, finished_at, good_keys, {p["key"]: p["detail"] for p in problems})
            session.add(
                VerificationRow(
                    backup_id=backup_id,
                    started_at=started_at,
                    finished_at=finished_at,
                    ok=False,
                    problems=json.dumps(problems),
                )
            )

        first = problems[0]
        changes = {
            "error": f"{first['problem']}: {first['detail']}",
            "failed_step": BackupStep.VERIFY,
        }
        return self._move(backup_id, "mark_corrupt", changes, edit=record)

    def mark_deleting(self, backup_id: str) -> BackupRecord:
        """Retention starts removing its objects: no longer listed as existing."""
        return self._move(backup_id, "mark_deleting", {})

    def mark_deleted(self, backup_id: str, *, at: datetime | None = None) -> BackupRecord:
        """Its objects are gone from storage."""
        return self._move(backup_id, "mark_deleted", {"deleted_at": at or utcnow()})

    def pin(self, backup_id: str, keep_until: datetime, label: str | None) -> BackupRecord:
        """Retention keeps the backup until `keep_until` (and its label becomes `label` when
        one is given). Only a committed backup can be pinned: PinError otherwise."""
        self._pinnable(backup_id, "pinned")
        changes: dict[str, Any] = {"keep_until": keep_until}
        if label is not None:
            changes["label"] = label
        return self._move(backup_id, "pin", changes)

    def unpin(self, backup_id: str) -> BackupRecord:
        """Retention treats the backup like any other again (its label stays)."""
        self._pinnable(backup_id, "unpinned")
        return self._move(backup_id, "unpin", {"keep_until": None})

    def _pinnable(self, backup_id: str, what: str) -> None:
        from runbook.pins import PinError  # noqa: PLC0415 - pins imports the config package

        status = self.get_backup(backup_id).status  # NotFoundError naming the id
        if status not in TRANSITIONS["pin"][0]:
            raise PinError(
                f"backup {backup_id} is {status.value}: only a stored, verified or corrupt "
                f"backup can be {what}"
            )

    def _move(
        self,
        backup_id: str,
        transition: str,
        changes: dict[str, Any],
        *,
        new: Callable[[], BackupRow] | None = None,
        edit: Callable[[Session, BackupRow], None] | None = None,
    ) -> BackupRecord:
        """One transition in one transaction, if the backup's status allows it; `new` makes
        the row of an id the catalog does not know yet (for the transitions that may)."""
        allowed, status = TRANSITIONS[transition]
        with self.session() as session:
            row = session.get(BackupRow, backup_id)
            if row is None and new is not None:
                row = new()
                session.add(row)
            elif row is None:
                row = self._row(session, backup_id)  # raises NotFoundError
            elif row.status not in allowed:
                raise BackupTransitionError(
                    f"backup {backup_id} is {row.status}: {transition} needs a "
                    f"{' or '.join(sorted(allowed))} backup"
                )
            if status is not None:
                row.status = status
            for column, value in changes.items():
                setattr(row, column, value)
            if edit is not None:
                edit(session, row)
            session.flush()
            return _record(row)

    # --- lookups -------------------------------------------------------------------------------

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
        label: str | None = None,
    ) -> list[BackupRecord]:
        """Newest first."""
        query = select(BackupRow).order_by(BackupRow.started_at.desc(), BackupRow.id.desc())
        if target:
            query = query.where(BackupRow.target == target)
        if label:
            query = query.where(BackupRow.label == label)
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

    def verifications_between(self, start: datetime, end: datetime) -> list[VerificationRecord]:
        """Every verification that finished in [start, end), oldest first (the daily report)."""
        query = (
            select(VerificationRow)
            .where(VerificationRow.finished_at >= start, VerificationRow.finished_at < end)
            .order_by(VerificationRow.finished_at, VerificationRow.id)
        )
        return self._verifications(query)

    def verifications(self, backup_id: str) -> list[VerificationRecord]:
        query = (
            select(VerificationRow)
            .where(VerificationRow.backup_id == backup_id)
            .order_by(VerificationRow.id)
        )
        return self._verifications(query)

    def latest_verification(self, target: str) -> VerificationRecord | None:
        """The newest verification of any of the target's backups (the Pushgateway metrics)."""
        query = (
            select(VerificationRow)
            .join(BackupRow, BackupRow.id == VerificationRow.backup_id)
            .where(BackupRow.target == target)
            .order_by(VerificationRow.finished_at.desc(), VerificationRow.id.desc())
            .limit(1)
        )
        found = self._verifications(query)
        return found[0] if found else None

    def _verifications(self, query: Any) -> list[VerificationRecord]:
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
