"""command: a team's own script as a window step (runbook 000's
`scripts/weekly_maintenance.sh`, `scripts/verify_rollback.sh`,
`scripts/validate_performance.sh`), from `maintenance.command.steps`.

- measure: the ledger's past durations of each step.
- plan (pure): one action per step, in the configured order: its argument list (never its
  environment's values), estimated from its past runs (its timeout when it never ran).
- apply: run the argument list (no shell) in its own process group, with its working folder,
  the window's environment plus the step's `env`, under its timeout (the whole group is
  killed when it passes); after: exit status, duration and the tail of its output (stdout
  and stderr together) with every secret redacted. A non-zero exit fails the action.
"""

from __future__ import annotations

import collections
import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import ClassVar

from runbook.catalog.maintenance import Figure, MaintenanceAction
from runbook.config import MaintenanceSettings
from runbook.config.maintenance import CommandStep
from runbook.secrets import redact
from tasks.maintenance.procedure import MeasureContext
from tasks.maintenance.targets import HOST, HostSession, HostTarget

TAIL_CHARS = 4000


class CommandFailed(RuntimeError):
    """The step's script exited non-zero or ran past its timeout."""


@dataclass(frozen=True)
class CommandFacts:
    past_seconds: dict[str, float]  # step name -> its last duration


@dataclass(frozen=True)
class CommandResult:
    exit_status: int | None  # None: killed at its timeout
    seconds: float
    tail: str


def run_command(step: CommandStep, secrets: list[str | None]) -> CommandResult:
    """Run one step; stdout and stderr together, only the last `tail_lines` lines kept."""
    env = {**os.environ, **{k: v.get_secret_value() for k, v in step.env.items()}}
    tail: collections.deque[str] = collections.deque(maxlen=max(step.tail_lines, 1))
    began = time.monotonic()
    proc = subprocess.Popen(
        step.run,
        cwd=step.cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: a timeout kills its children too
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(step.timeout.total_seconds(), kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.decode(errors="replace").rstrip("\n"))
        status = proc.wait()
    except BaseException:
        kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
    text = redact("\n".join(tail) if step.tail_lines else "", secrets)[-TAIL_CHARS:]
    return CommandResult(
        None if timed_out.is_set() else status, round(time.monotonic() - began, 3), text
    )


class Command:
    name: ClassVar[str] = "command"
    destructive: ClassVar[bool] = True  # each step says (`destructive`)
    kinds: ClassVar[tuple[str, ...]] = (HOST,)
    remeasure: ClassVar[bool] = False  # a step ran; there is nothing to measure again

    def measure(self, context: MeasureContext) -> CommandFacts:
        past = {}
        for step in context.settings.command.steps:
            done = context.ledger.history(context.target.name, self.name, step.name, limit=1)
            if done and done[0].duration is not None:
                past[step.name] = done[0].duration
        return CommandFacts(past)

    def plan(
        self, facts: CommandFacts, settings: MaintenanceSettings, target: HostTarget
    ) -> list[MaintenanceAction]:
        actions = []
        for step in settings.command.steps:
            past = facts.past_seconds.get(step.name)
            estimate = past if past is not None else step.timeout.total_seconds()
            env = f" with {', '.join(sorted(step.env))} set" if step.env else ""
            actions.append(
                MaintenanceAction(
                    procedure=self.name,
                    target=target.name,
                    object=step.name,
                    statement=shlex.join(step.run),
                    reason=(
                        f"window step {step.name}{env}, timeout "
                        f"{step.timeout.total_seconds():g} s"
                        + (f", took {past:.1f} s last time" if past is not None else "")
                    ),
                    destructive=step.destructive,
                    estimate_seconds=round(estimate, 1),
                    before={"cwd": str(step.cwd) if step.cwd else None},
                )
            )
        return actions

    def apply(self, session: HostSession, action: MaintenanceAction) -> dict[str, Figure]:
        steps = {step.name: step for step in session.settings.command.steps}
        step = steps.get(action.object)
        if step is None:
            raise CommandFailed(f"step {action.object!r} is no longer configured")
        secrets: list[str | None] = [v.get_secret_value() for v in step.env.values()]
        result = run_command(step, secrets)
        if result.exit_status is None:
            raise CommandFailed(
                f"killed at its timeout ({step.timeout.total_seconds():g} s); "
                f"output tail:\n{result.tail}"
            )
        if result.exit_status != 0:
            raise CommandFailed(
                f"exit status {result.exit_status} after {result.seconds:.1f} s; "
                f"output tail:\n{result.tail}"
            )
        return {"exit_status": 0, "seconds": result.seconds, "output_tail": result.tail}
