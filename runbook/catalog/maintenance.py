"""Maintenance windows: one run per window and target set, and one ledger row per action, with
its outcome and before/after figures (what a plan proposed and what applying it did are the
same record: an action starts `planned` and ends done / dry-run / skipped / deferred /
failed). Capacity reports read this ledger: a reclaim is a one-off drop, not a trend.

A run moves only by the named transitions of `MaintenanceLog`, each refusing a move its status
does not allow (`TRANSITIONS`); an action moves once, from planned to its outcome:

    start -------------------------> running
    running --record_plan / start_action / record_outcome / note / record_silence--> running
    running --finish(status)--------> done | failed | locked
    running --interrupt(reason)-----> interrupted   cancelled or crashed: the action it had
                                                     started failed, the others end skipped
    running | interrupted --clear_silence--> (same)  the silence it opened was expired

    action: planned --start_action--> planned, started --record_outcome--> done | dry-run |
            skipped | deferred | failed
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from runbook.catalog.backups import Catalog
from runbook.catalog.db import Base, UTCDateTime, utcnow
from runbook.errors import NotFoundError

Figure = float | int | str | bool | None


class Outcome(enum.StrEnum):
    PLANNED = "planned"  # in a plan, not yet applied
    DONE = "done"
    DRY_RUN = "dry-run"  # a dry run: planned and deliberately not applied
    SKIPPED = "skipped"  # not applied, with the reason (a missing extension, a failed backup)
    DEFERRED = "deferred"  # would overrun the window: left for the next one
    FAILED = "failed"


# The outcomes an action can end with (once: a final outcome never changes).
FINAL_OUTCOMES = frozenset(Outcome) - {Outcome.PLANNED}


class MaintenanceAction(BaseModel):
    """One thing a procedure does to one object of one target: the plan proposes it (reason,
    estimate, `before` figures), applying it fills in the outcome, `after` and timings."""

    procedure: str  # vacuum, reindex, idle_connections, analyze_stale, query_baseline, ...
    target: str
    object: str  # schema.table, schema.index, a session "pid 4711", or "" for the whole target
    statement: str  # the SQL to run (never a secret); "" for actions that only record
    reason: str  # why the plan proposes it, in numbers: "dead 38 % of 1.2M rows > 20 %"
    destructive: bool = False  # skipped when the pre-maintenance backup failed
    estimate_seconds: float = 0.0
    before: dict[str, Figure] = {}
    after: dict[str, Figure] = {}
    outcome: Outcome = Outcome.PLANNED
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration: float | None = None  # seconds the statement took
    error: str | None = None  # why it failed, was skipped or deferred
    id: int | None = None  # its ledger row, once the plan is recorded (MaintenanceLog)

    def json_row(self) -> dict[str, Any]:
        """The action as `runbook maintenance ... --json` prints it."""
        return {
            "procedure": self.procedure,
            "target": self.target,
            "object": self.object,
            "statement": self.statement,
            "outcome": self.outcome.value,
            "reason": self.reason if self.error is None else f"{self.reason}; {self.error}",
            "before": self.before,
            "after": self.after,
            "duration": self.duration,
        }


class MaintenanceStatus(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"  # every action ended done, dry-run, skipped or deferred
    FAILED = "failed"  # an action failed, or maintenance mode could not be entered or left
    LOCKED = "locked"  # a backup or drill of a target held its lock past wait_for_target
    INTERRUPTED = "interrupted"  # cancelled or crashed before it finished


# A run's verdict (the statuses `finish` may give); interrupted runs are closed by `interrupt`.
VERDICTS = frozenset({MaintenanceStatus.DONE, MaintenanceStatus.FAILED, MaintenanceStatus.LOCKED})
_RUNNING = frozenset({MaintenanceStatus.RUNNING})
_OPEN_SILENCE = frozenset({MaintenanceStatus.RUNNING, MaintenanceStatus.INTERRUPTED})

# transition -> (the statuses it may start from, the statuses it may lead to)
TRANSITIONS: dict[str, tuple[frozenset[MaintenanceStatus], frozenset[MaintenanceStatus]]] = {
    "record_plan": (_RUNNING, _RUNNING),
    "start_action": (_RUNNING, _RUNNING),
    "record_outcome": (_RUNNING, _RUNNING),
    "note": (_RUNNING, _RUNNING),
    "record_silence": (_RUNNING, _RUNNING),
    "clear_silence": (_OPEN_SILENCE, _OPEN_SILENCE),
    "finish": (_RUNNING, VERDICTS),
    "interrupt": (_RUNNING, frozenset({MaintenanceStatus.INTERRUPTED})),
}


class MaintenanceTransitionError(RuntimeError):
    """A transition the run's status (or an action's outcome) does not allow (a bug, not an
    operator mistake)."""


class MaintenanceRunRow(Base):
    """One maintenance window run over a set of targets."""

    __tablename__ = "maintenance_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    window: Mapped[str] = mapped_column(String(63), index=True)
    dry_run: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16), index=True)  # MaintenanceStatus
    targets: Mapped[str] = mapped_column(Text)  # JSON list of target names
    procedures: Mapped[str] = mapped_column(Text)  # JSON list, in the order applied
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the window's end: the budget
    # Until when its targets count as under maintenance (health does not notify for them):
    # the window's end plus the silence margin, so a run that died stops muting by itself.
    quiet_until: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The Alertmanager silence it created, until it is expired (the next window expires the
    # silence of a run that died).
    silence_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    notes: Mapped[str] = mapped_column(Text, default="[]")  # JSON list: what the window said


class MaintenanceActionRow(Base):
    """One action of a run: planned, then its outcome with before/after figures."""

    __tablename__ = "maintenance_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        ForeignKey("maintenance_runs.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)  # order in the run's plan
    procedure: Mapped[str] = mapped_column(String(63))
    target: Mapped[str] = mapped_column(String(63))
    object: Mapped[str] = mapped_column(String(1024))
    statement: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    destructive: Mapped[bool] = mapped_column(Boolean)
    estimate_seconds: Mapped[float] = mapped_column(Float)
    before: Mapped[str] = mapped_column(Text, default="{}")  # JSON figures
    after: Mapped[str] = mapped_column(Text, default="{}")  # JSON figures
    outcome: Mapped[str] = mapped_column(String(16))  # Outcome
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


Index(
    "ix_maintenance_actions_history",
    MaintenanceActionRow.target,
    MaintenanceActionRow.procedure,
    MaintenanceActionRow.object,
    MaintenanceActionRow.outcome,
)


class MaintenanceRun(BaseModel):
    """One window run: what it was asked to do, its verdict, what it said and its actions."""

    id: str
    window: str
    dry_run: bool
    status: MaintenanceStatus = MaintenanceStatus.RUNNING
    targets: list[str]
    procedures: list[str]
    started_at: datetime
    ends_at: datetime
    quiet_until: datetime
    finished_at: datetime | None = None
    host: str
    pid: int
    flow_run_id: str | None = None
    silence_id: str | None = None
    error: str | None = None
    notes: list[str] = []
    actions: list[MaintenanceAction] = []

    @property
    def ok(self) -> bool:
        return self.status == MaintenanceStatus.DONE

    def counts(self) -> dict[str, int]:
        """Actions by outcome: {"done": 3, "deferred": 1}, outcomes that occur only."""
        found: dict[str, int] = {}
        for action in self.actions:
            found[action.outcome.value] = found.get(action.outcome.value, 0) + 1
        return found

    def json_run(self) -> dict[str, Any]:
        """The run as `runbook maintenance ... --json` prints it (under "run")."""
        return {
            "id": self.id,
            "window": self.window,
            "dry_run": self.dry_run,
            "status": self.status.value,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "ends_at": self.ends_at.isoformat(),
            "targets": self.targets,
            "procedures": self.procedures,
            "error": self.error,
            "notes": self.notes,
            "actions": [a.json_row() for a in self.actions],
        }


def _action(row: MaintenanceActionRow) -> MaintenanceAction:
    return MaintenanceAction(
        id=row.id,
        procedure=row.procedure,
        target=row.target,
        object=row.object,
        statement=row.statement,
        reason=row.reason,
        destructive=row.destructive,
        estimate_seconds=row.estimate_seconds,
        before=json.loads(row.before or "{}"),
        after=json.loads(row.after or "{}"),
        outcome=Outcome(row.outcome),
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration=row.duration,
        error=row.error,
    )


def _action_columns(action: MaintenanceAction) -> dict[str, Any]:
    """The columns an action's outcome sets."""
    return {
        "outcome": action.outcome.value,
        "after": json.dumps(action.after, default=str),
        "started_at": action.started_at,
        "finished_at": action.finished_at,
        "duration": action.duration,
        "error": action.error,
    }


def _run(row: MaintenanceRunRow, actions: Iterable[MaintenanceActionRow]) -> MaintenanceRun:
    data = {c.key: getattr(row, c.key) for c in MaintenanceRunRow.__table__.columns}
    for key in ("targets", "procedures", "notes"):
        data[key] = json.loads(data[key] or "[]")
    data["actions"] = [_action(a) for a in actions]
    return MaintenanceRun.model_validate(data)


class MaintenanceLedger:
    """The ledger's reads that procedures plan with: what was done before to an object (its
    figures after the last rebuild, the last query baseline, how long the same action took).
    Without a catalog it is an empty ledger (a first window, or a test)."""

    def __init__(self, catalog: Catalog | None = None):
        self.catalog = catalog

    def history(
        self, target: str, procedure: str, object: str | None = None, limit: int = 20
    ) -> list[MaintenanceAction]:
        """Actions of this procedure on this target (and object) that were done, newest
        first."""
        if self.catalog is None:
            return []
        query = (
            select(MaintenanceActionRow)
            .where(
                MaintenanceActionRow.target == target,
                MaintenanceActionRow.procedure == procedure,
                MaintenanceActionRow.outcome == Outcome.DONE.value,
            )
            .order_by(
                func.coalesce(
                    MaintenanceActionRow.finished_at, MaintenanceActionRow.started_at
                ).desc(),
                MaintenanceActionRow.id.desc(),
            )
            .limit(limit)
        )
        if object is not None:
            query = query.where(MaintenanceActionRow.object == object)
        with self.catalog.session() as session:
            return [_action(row) for row in session.scalars(query)]


    def latest(
        self,
        target: str,
        procedure: str,
        outcomes: Iterable[Outcome] = (Outcome.DONE, Outcome.DRY_RUN, Outcome.SKIPPED),
    ) -> list[MaintenanceAction]:
        """The actions of this procedure on this target in the newest run that recorded any
        with one of these outcomes, in plan order: the previous security audit's findings,
        the Redis counters the last cleanup measured. [] when there is none."""
        if self.catalog is None:
            return []
        wanted = [o.value for o in outcomes]
        mine = (
            MaintenanceActionRow.target == target,
            MaintenanceActionRow.procedure == procedure,
            MaintenanceActionRow.outcome.in_(wanted),
        )
        with self.catalog.session() as session:
            newest = session.scalars(
                select(MaintenanceActionRow.run_id)
                .where(*mine)
                .order_by(MaintenanceActionRow.id.desc())
                .limit(1)
            ).first()
            if newest is None:
                return []
            rows = session.scalars(
                select(MaintenanceActionRow)
                .where(*mine, MaintenanceActionRow.run_id == newest)
                .order_by(MaintenanceActionRow.position)
            )
            return [_action(row) for row in rows]


class MaintenanceLog(MaintenanceLedger):
    """The catalog's record of maintenance windows: the transitions of one run and its
    actions, and lookups. It is also the ledger procedures read (MaintenanceLedger)."""

    catalog: Catalog

    def __init__(self, catalog: Catalog):
        super().__init__(catalog)

    # --- transitions ---------------------------------------------------------------------------

    def start(self, run: MaintenanceRun) -> MaintenanceRun:
        """A new run, recorded as running before it measures anything (its actions come with
        record_plan)."""
        if run.status != MaintenanceStatus.RUNNING or run.actions or run.finished_at is not None:
            raise MaintenanceTransitionError(f"run {run.id}: start records a new running run")
        with self.catalog.session() as session:
            if session.get(MaintenanceRunRow, run.id) is not None:
                raise MaintenanceTransitionError(f"maintenance run {run.id} was already started")
            row = MaintenanceRunRow(
                id=run.id,
                window=run.window,
                dry_run=run.dry_run,
                status=MaintenanceStatus.RUNNING.value,
                targets=json.dumps(run.targets),
                procedures=json.dumps(run.procedures),
                started_at=run.started_at,
                ends_at=run.ends_at,
                quiet_until=run.quiet_until,
                host=run.host,
                pid=run.pid,
                flow_run_id=run.flow_run_id,
                notes=json.dumps(run.notes),
            )
            session.add(row)
            session.flush()
            return _run(row, [])

    def record_plan(self, run_id: str, actions: list[MaintenanceAction]) -> list[MaintenanceAction]:
        """Add planned actions to a running run (after those it has); returns them with their
        ledger ids, in order. Their outcomes come with record_outcome."""
        with self.catalog.session() as session:
            self._running(session, run_id, "record_plan")
            last = session.scalar(
                select(func.max(MaintenanceActionRow.position)).where(
                    MaintenanceActionRow.run_id == run_id
                )
            )
            rows = [
                MaintenanceActionRow(
                    run_id=run_id,
                    position=(last or 0) + index,
                    procedure=a.procedure,
                    target=a.target,
                    object=a.object,
                    statement=a.statement,
                    reason=a.reason,
                    destructive=a.destructive,
                    estimate_seconds=a.estimate_seconds,
                    before=json.dumps(a.before, default=str),
                    after="{}",
                    outcome=Outcome.PLANNED.value,
                )
                for index, a in enumerate(actions, start=1)
            ]
            session.add_all(rows)
            session.flush()
            return [_action(row) for row in rows]

    def start_action(self, run_id: str, action_id: int, at: datetime) -> MaintenanceAction:
        """A planned action starts running (so a run that dies mid-statement says which)."""
        with self.catalog.session() as session:
            self._running(session, run_id, "start_action")
            row = self._planned_action(session, run_id, action_id)
            row.started_at = at
            session.flush()
            return _action(row)

    def record_outcome(self, run_id: str, action: MaintenanceAction) -> MaintenanceAction:
        """A planned action of a running run ends: done, dry-run, skipped, deferred or failed,
        with its after figures, timings and error (once: an outcome never changes)."""
        if action.outcome not in FINAL_OUTCOMES:
            raise MaintenanceTransitionError(
                f"run {run_id}: an action ends {', '.join(sorted(FINAL_OUTCOMES))}, "
                f"not {action.outcome}"
            )
        with self.catalog.session() as session:
            self._running(session, run_id, "record_outcome")
            row = self._planned_action(session, run_id, action.id)
            for column, value in _action_columns(action).items():
                setattr(row, column, value)
            session.flush()
            return _action(row)

    def note(self, run_id: str, text: str) -> MaintenanceRun:
        """Something the window says (a backup's result, maintenance mode, a cleanup)."""

        def add(_session: Session, row: MaintenanceRunRow) -> None:
            row.notes = json.dumps([*json.loads(row.notes or "[]"), text])

        return self._move(run_id, "note", {}, add)

    def record_silence(self, run_id: str, silence_id: str) -> MaintenanceRun:
        """The Alertmanager silence the run created (expired at exit, or by the next window)."""
        return self._move(run_id, "record_silence", {"silence_id": silence_id})

    def clear_silence(self, run_id: str) -> MaintenanceRun:
        """The run's silence was expired."""
        return self._move(run_id, "clear_silence", {"silence_id": None})

    def finish(
        self, run_id: str, status: MaintenanceStatus, error: str | None = None
    ) -> MaintenanceRun:
        """The run's verdict once every action has its outcome: done, failed or locked."""

        def check(session: Session, row: MaintenanceRunRow) -> None:
            pending = session.scalar(
                select(func.count()).where(
                    MaintenanceActionRow.run_id == row.id,
                    MaintenanceActionRow.outcome == Outcome.PLANNED.value,
                )
            )
            if pending:
                raise MaintenanceTransitionError(
                    f"run {run_id} still has {pending} planned action(s): record their "
                    "outcomes before finishing it"
                )

        changes = {"status": MaintenanceStatus(status), "finished_at": utcnow(), "error": error}
        return self._move(run_id, "finish", changes, check)

    def interrupt(self, run_id: str, reason: str) -> MaintenanceRun:
        """The run was cancelled or crashed (or found so by the next window, its process
        gone): the action it had started failed with `reason`, its other planned actions end
        skipped."""
        now = utcnow()

        def close(session: Session, row: MaintenanceRunRow) -> None:
            pending = session.scalars(
                select(MaintenanceActionRow).where(
                    MaintenanceActionRow.run_id == row.id,
                    MaintenanceActionRow.outcome == Outcome.PLANNED.value,
                )
            )
            for action in pending:
                if action.started_at is not None:  # in flight when the run stopped
                    action.outcome = Outcome.FAILED.value
                    action.error = f"interrupted while running: {reason}"
                    action.finished_at = now
                else:
                    action.outcome = Outcome.SKIPPED.value
                    action.error = f"not started: {reason}"

        changes = {"status": MaintenanceStatus.INTERRUPTED, "finished_at": now, "error": reason}
        return self._move(run_id, "interrupt", changes, close)

    def _move(
        self,
        run_id: str,
        transition: str,
        changes: dict[str, Any],
        edit: Callable[[Session, MaintenanceRunRow], None] | None = None,
    ) -> MaintenanceRun:
        """One transition in one transaction, if the run's status allows it."""
        starts, leads_to = TRANSITIONS[transition]
        with self.catalog.session() as session:
            row = self._row(session, run_id)
            status = MaintenanceStatus(row.status)
            if status not in starts or changes.get("status", status) not in leads_to:
                raise MaintenanceTransitionError(
                    f"maintenance run {run_id} is {status}: cannot {transition}"
                    + (f" to {changes['status']}" if "status" in changes else "")
                )
            if edit is not None:
                edit(session, row)
            for column, value in changes.items():
                setattr(row, column, value.value if isinstance(value, enum.Enum) else value)
            session.flush()
        return self.get(run_id)

    def _running(self, session: Session, run_id: str, transition: str) -> MaintenanceRunRow:
        row = self._row(session, run_id)
        if row.status not in TRANSITIONS[transition][0]:
            raise MaintenanceTransitionError(
                f"maintenance run {run_id} is {row.status}: cannot {transition}"
            )
        return row

    @staticmethod
    def _planned_action(
        session: Session, run_id: str, action_id: int | None
    ) -> MaintenanceActionRow:
        row = session.get(MaintenanceActionRow, action_id) if action_id is not None else None
        if row is None or row.run_id != run_id:
            raise MaintenanceTransitionError(
                f"run {run_id} has no action {action_id!r} (record_plan first)"
            )
        if row.outcome != Outcome.PLANNED.value:
            raise MaintenanceTransitionError(
                f"run {run_id}: action {row.id} ({row.procedure} {row.object}) is already "
                f"{row.outcome}"
            )
        return row

    # --- lookups -------------------------------------------------------------------------------

    @staticmethod
    def _row(session: Session, run_id: str) -> MaintenanceRunRow:
        row = session.get(MaintenanceRunRow, run_id)
        if row is None:
            raise NotFoundError(
                f"unknown maintenance run id {run_id!r} (see `runbook maintenance list`)"
            )
        return row

    @staticmethod
    def _actions(session: Session, run_ids: list[str]) -> dict[str, list[MaintenanceActionRow]]:
        found: dict[str, list[MaintenanceActionRow]] = {run_id: [] for run_id in run_ids}
        if not run_ids:
            return found
        rows = session.scalars(
            select(MaintenanceActionRow)
            .where(MaintenanceActionRow.run_id.in_(run_ids))
            .order_by(MaintenanceActionRow.run_id, MaintenanceActionRow.position)
        )
        for row in rows:
            found[row.run_id].append(row)
        return found

    def get(self, run_id: str) -> MaintenanceRun:
        with self.catalog.session() as session:
            row = self._row(session, run_id)
            return _run(row, self._actions(session, [run_id])[run_id])

    def list(
        self,
        *,
        window: str | None = None,
        target: str | None = None,
        status: MaintenanceStatus | str | None = None,
        limit: int | None = 20,
    ) -> list[MaintenanceRun]:
        """Runs newest first (a target: the runs that covered it)."""
        query = select(MaintenanceRunRow).order_by(
            MaintenanceRunRow.started_at.desc(), MaintenanceRunRow.id.desc()
        )
        if window:
            query = query.where(MaintenanceRunRow.window == window)
        if status:
            query = query.where(MaintenanceRunRow.status == MaintenanceStatus(status).value)
        with self.catalog.session() as session:
            rows = list(session.scalars(query))
            if target:
                rows = [r for r in rows if target in json.loads(r.targets or "[]")]
            if limit:
                rows = rows[:limit]
            actions = self._actions(session, [r.id for r in rows])
            return [_run(row, actions[row.id]) for row in rows]

    def under_maintenance(self, now: datetime) -> dict[str, MaintenanceRun]:
        """Target name -> the running window (not a dry run) that covers it now: started and
        not past its `quiet_until` (a run whose process died stops covering its targets then,
        as its Alertmanager silence ends)."""
        covered: dict[str, MaintenanceRun] = {}
        for run in self.list(status=MaintenanceStatus.RUNNING, limit=None):
            if run.dry_run or not run.started_at <= now <= run.quiet_until:
                continue
            for target in run.targets:
                covered.setdefault(target, run)
        return covered


__all__ = [
    "FINAL_OUTCOMES",
    "TRANSITIONS",
    "VERDICTS",
    "Figure",
    "MaintenanceAction",
    "MaintenanceLedger",
    "MaintenanceLog",
    "MaintenanceRun",
    "MaintenanceTransitionError",
    "Outcome",
    "MaintenanceStatus",
]
