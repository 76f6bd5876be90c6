"""A maintenance ledger in memory, and a window's plan/apply steps without Prefect, for the
procedures' tests (the real ledger and flow are tested with them elsewhere)."""

from __future__ import annotations

from datetime import UTC, datetime

from runbook.catalog.maintenance import MaintenanceAction, MaintenanceLedger, Outcome
from runbook.config import MaintenanceSettings, PostgresTarget
from tasks.maintenance.procedure import MaintenanceSession, MeasureContext, Procedure


class MemoryLedger(MaintenanceLedger):
    def __init__(self) -> None:
        super().__init__()
        self.actions: list[MaintenanceAction] = []

    def record(self, action: MaintenanceAction) -> None:
        self.actions.append(action)

    def history(
        self, target: str, procedure: str, object: str | None = None, limit: int = 20
    ) -> list[MaintenanceAction]:
        done = [
            a
            for a in reversed(self.actions)
            if a.target == target
            and a.procedure == procedure
            and (object is None or a.object == object)
            and a.outcome is Outcome.DONE
        ]
        return done[:limit]


def plan(
    procedure: Procedure,
    target: PostgresTarget,
    settings: MaintenanceSettings,
    ledger: MaintenanceLedger,
) -> list[MaintenanceAction]:
    """measure + plan, as a window's first step (and a dry run's only one)."""
    with MaintenanceSession.open(target, settings) as session:
        facts = procedure.measure(MeasureContext(session, target, settings, ledger))
    return procedure.plan(facts, settings, target)


def apply(
    procedure: Procedure,
    target: PostgresTarget,
    settings: MaintenanceSettings,
    actions: list[MaintenanceAction],
    ledger: MemoryLedger,
) -> list[MaintenanceAction]:
    """Apply the planned actions (only those still `planned`) and record every action."""
    recorded = []
    with MaintenanceSession.open(target, settings) as session:
        for action in actions:
            if action.outcome is Outcome.PLANNED:
                started = datetime.now(UTC)
                after = procedure.apply(session, action)
                finished = datetime.now(UTC)
                action = action.model_copy(
                    update={
                        "after": after,
                        "outcome": Outcome.DONE,
                        "started_at": started,
                        "finished_at": finished,
                        "duration": (finished - started).total_seconds(),
                    }
                )
            ledger.record(action)
            recorded.append(action)
    return recorded
