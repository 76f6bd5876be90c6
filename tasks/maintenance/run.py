"""One maintenance window in progress, and the context manager that keeps its record honest.

`recorded_window` records the run as running before anything is measured, and in the end
saves the verdict: done, failed (an action failed, or maintenance mode could not be entered or
left) or locked (a backup or drill kept a target); a run that is cancelled or crashes is
`interrupted`, its action in flight failed and its other planned actions skipped, so even a
killed window says where it stopped.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from runbook.catalog import (
    MaintenanceAction,
    MaintenanceLog,
    MaintenanceRun,
    MaintenanceStatus,
    Outcome,
    utcnow,
)
from runbook.config import WindowSettings
from runbook.health import CheckResult
from runbook.runtime import Runtime
from runbook.secrets import redact, target_secrets
from tasks.maintenance.procedure import Procedure
from tasks.maintenance.targets import MaintenanceTarget

log = logging.getLogger("runbook.maintenance")

INTERRUPTED = "interrupted before it finished (cancelled or crashed)"
# How long past its end a window's targets stay quiet without an Alertmanager margin.
DEFAULT_QUIET_MARGIN = timedelta(minutes=15)


class WindowStep(StrEnum):
    """The steps of a window, in order (tasks/maintenance/window.py)."""

    SWEEP = "sweep"  # close runs of these targets whose process died, expire their silences
    PLAN = "plan"  # measure every procedure on a target and plan it
    BACKUP = "backup"  # the pre-maintenance backup, through the backup flow
    LOCK = "lock"  # the targets' locks (the ones backups and drills take)
    ENTER = "enter"  # maintenance mode: the application's call, the Alertmanager silence
    APPLY = "apply"  # the plan of a target, under the window's budget
    EXIT = "exit"  # out of maintenance mode (always)
    VERIFY = "verify"  # re-measure, health checks against before


# How a step runs: (step, step function, window, *args) -> the step function's value. Plainly
# (`call_step`) or as a Prefect task run (tasks/maintenance/tasks.py).
StepRunner = Callable[..., Any]

# The pre-maintenance backup: target names -> {name: None when verified, else why not}.
BackUp = Callable[[list[str]], dict[str, str | None]]


def call_step(step: str, function: Callable[..., Any], window: Window, *args: Any) -> Any:
    return function(window, *args)


@dataclass(frozen=True)
class WindowRequest:
    """What one window run is asked to do, and with what (choose it with
    tasks/maintenance/window.py's choose_window: operator mistakes are refused there)."""

    runtime: Runtime
    window: str  # its name in maintenance.windows
    settings: WindowSettings
    targets: tuple[MaintenanceTarget, ...]  # PostgreSQL, Redis, files targets, the host
    procedures: tuple[str, ...]  # in the order they plan and apply (invalid_indexes first)
    registry: Mapping[str, Procedure]  # procedure name -> procedure
    dry_run: bool = True
    flow_run_id: str | None = None
    back_up: BackUp | None = None  # None: no pre-maintenance backup can be taken
    publish: Callable[[str, str], None] | None = None  # (artifact key, markdown)
    on_step: Callable[[str], None] | None = None  # progress lines; default: the runbook log
    clock: Callable[[], datetime] = field(default=utcnow)


class Window:
    """One window run in progress: its plan per target, what it holds (locks, maintenance
    mode, a silence) and what its steps found.

    A plain class on purpose: Prefect hands it to each step's task run as it is."""

    def __init__(self, request: WindowRequest, run_step: StepRunner):
        self.request = request
        self.runtime = request.runtime
        self.settings = request.runtime.config.maintenance
        self.log = MaintenanceLog(request.runtime.catalog)
        self.started_at = request.clock()
        self.ends_at = self.started_at + request.settings.duration
        alertmanager = self.settings.mode.alertmanager
        margin = alertmanager.margin if alertmanager is not None else DEFAULT_QUIET_MARGIN
        self.quiet_until = self.ends_at + margin  # the silence's end, too
        self.id = f"{self.started_at.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}"
        self.actions: dict[str, list[MaintenanceAction]] = {t.name: [] for t in request.targets}
        self.health_before: dict[str, list[CheckResult]] = {}
        self.locked: dict[str, str] = {}  # target -> why its lock was not granted
        self.locks = ExitStack()  # the targets' locks, held until the actions are applied
        self.mode_called = False  # the application's enter call was made (exit then follows)
        self.silence_id: str | None = None
        self.errors: list[str] = []  # what failed beside the actions (maintenance mode)
        self.current: str | None = None
        self.record: MaintenanceRun | None = None  # the saved verdict
        self._run_step = run_step

    # --- running steps -------------------------------------------------------------------------

    def step(self, step: str, function: Callable[..., Any], *args: Any) -> Any:
        self.current = step
        return self._run_step(step, function, self, *args)

    def say(self, message: str) -> None:
        (self.request.on_step or log.info)(message)

    def note(self, message: str) -> None:
        """Say it and keep it in the run's notes (the ledger, the report)."""
        self.say(message)
        self.log.note(self.id, message)

    def secrets(self) -> list[str | None]:
        """The targets' DSNs and passwords, and the values of the commands' environment."""
        steps = self.settings.command.steps
        return [s for target in self.request.targets for s in target_secrets(target)] + [
            value.get_secret_value() for step in steps for value in step.env.values()
        ]

    def scrub(self, text: str) -> str:
        return redact(text, self.secrets())[:2000]

    # --- the plan and its outcomes -------------------------------------------------------------

    def add_plan(self, target: str, actions: list[MaintenanceAction]) -> list[MaintenanceAction]:
        """Record a target's planned actions; those the plan already concluded (a procedure
        that cannot run here: skipped, a measurement that failed: failed) end as they are."""
        recorded = self.log.record_plan(self.id, actions)
        for index, (proposed, row) in enumerate(zip(actions, recorded, strict=True)):
            if proposed.outcome != Outcome.PLANNED:
                concluded = row.model_copy(
                    update={
                        "outcome": proposed.outcome,
                        "error": proposed.error,
                        "after": proposed.after,
                    }
                )
                recorded[index] = self.log.record_outcome(self.id, concluded)
        self.actions[target] = self.actions.get(target, []) + recorded
        return recorded

    def conclude(self, action: MaintenanceAction, outcome: Outcome, **changes: Any) -> None:
        """A planned action's outcome, saved in the ledger and kept here."""
        saved = self.log.record_outcome(
            self.id, action.model_copy(update={**changes, "outcome": outcome})
        )
        actions = self.actions[action.target]
        actions[:] = [saved if a.id == saved.id else a for a in actions]

    def pending(self, target: str | None = None) -> list[MaintenanceAction]:
        """Planned actions without an outcome yet (of one target, or of all)."""
        names = [target] if target else list(self.actions)
        return [a for name in names for a in self.actions[name] if a.outcome == Outcome.PLANNED]

    def skip(self, actions: list[MaintenanceAction], why: str) -> None:
        for action in actions:
            self.conclude(action, Outcome.SKIPPED, error=why)

    def all_actions(self) -> list[MaintenanceAction]:
        return [a for target in self.request.targets for a in self.actions[target.name]]

    def verdict(self) -> tuple[MaintenanceStatus, str | None]:
        failed = [a for a in self.all_actions() if a.outcome == Outcome.FAILED]
        problems = list(self.errors)
        if failed:
            problems.insert(0, f"{len(failed)} action(s) failed")
        if problems:
            return MaintenanceStatus.FAILED, "; ".join(problems)
        if self.locked:
            return MaintenanceStatus.LOCKED, "; ".join(
                f"{target}: {why}" for target, why in self.locked.items()
            )
        return MaintenanceStatus.DONE, None

    def run(self) -> MaintenanceRun:
        """The run as the ledger has it now."""
        return self.log.get(self.id)


@contextmanager
def recorded_window(request: WindowRequest, run_step: StepRunner) -> Iterator[Window]:
    """The window's record from start to verdict around the steps of the block."""
    window = Window(request, run_step)
    window.log.start(
        MaintenanceRun(
            id=window.id,
            window=request.window,
            dry_run=request.dry_run,
            targets=[t.name for t in request.targets],
            procedures=list(request.procedures),
            started_at=window.started_at,
            ends_at=window.ends_at,
            quiet_until=window.quiet_until,
            host=socket.gethostname(),
            pid=os.getpid(),
            flow_run_id=request.flow_run_id,
        )
    )
    kind = "dry run" if request.dry_run else "run"
    window.say(
        f"maintenance {request.window} {kind} {window.id}: "
        f"{', '.join(t.name for t in request.targets)}; ends {window.ends_at:%H:%M:%S} UTC"
    )
    try:
        yield window
    except Exception as exc:  # noqa: BLE001 - a crash of the window is recorded, not raised
        reason = window.scrub(f"crashed in step {window.current}: {type(exc).__name__}: {exc}")
        window.record = window.log.interrupt(window.id, reason)
        window.say(f"maintenance {window.id} {reason}")
        return
    except BaseException:  # cancelled (Prefect's TerminationSignal), Ctrl-C
        window.record = window.log.interrupt(window.id, f"{INTERRUPTED}, in step {window.current}")
        raise
    status, error = window.verdict()
    window.record = window.log.finish(window.id, status, error)
    counts = ", ".join(f"{n} {outcome}" for outcome, n in window.record.counts().items())
    window.say(f"maintenance {window.id} {status}: {counts or 'nothing to do'}")
