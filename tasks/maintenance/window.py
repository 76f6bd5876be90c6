"""A maintenance window: upkeep of PostgreSQL, Redis and the host, planned, bounded and
proven.

`run_window` is the whole window as a plain function; the flow (flows/maintenance.py) runs the
same function with each step as a Prefect task run (tasks/maintenance/tasks.py). Steps
(tasks/maintenance/steps.py), each recorded in the ledger as it happens:

1. sweep: close runs of these targets whose process died; expire a silence one left open.
2. plan: measure every procedure on every target (invalid_indexes first: what an interrupted
   concurrent build left is dropped before anything else) and plan it (pure), each action with
   its reason and estimate; publish the plan. A dry run stops here: every action `dry-run`.
3. backup: the pre-maintenance backup through the backup flow (when the window has
   `pre_backup`); a target whose backup failed has its destructive actions skipped.
4. lock: each target's own lock and those its backups and drills take, waiting up to
   maintenance.wait_for_target; a target still held is `locked`.
5. enter maintenance mode (the application's HTTP call, an Alertmanager silence until the
   window's end plus a margin) and apply every target's plan under the window's budget; exit
   maintenance mode always (also on failure and cancellation).
6. verify: re-measure what was treated and run the targets' health checks, against before.
7. record the verdict (tasks/maintenance/run.py): done, failed, locked or interrupted.

Operator mistakes (an unknown window, target or procedure) are refused by `choose_window`
before anything is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from runbook.catalog import MaintenanceRun
from runbook.config import PROCEDURES, Config, WindowSettings
from runbook.errors import NotFoundError, RunbookError
from tasks.maintenance import steps
from tasks.maintenance.procedure import Procedure
from tasks.maintenance.report import plan_markdown
from tasks.maintenance.run import (
    StepRunner,
    Window,
    WindowRequest,
    WindowStep,
    call_step,
    recorded_window,
)
from tasks.maintenance.targets import (
    HOST,
    HOST_TARGET,
    MaintenanceTarget,
    find_target,
    kind_of,
    kinds_of,
)

PLAN_ARTIFACT = "maintenance-plan"


@dataclass(frozen=True)
class WindowChoice:
    """A window the operator asked for, every name checked."""

    window: str
    settings: WindowSettings
    targets: tuple[MaintenanceTarget, ...]  # of the kinds its procedures apply to
    procedures: tuple[str, ...]  # in the registry's order, housekeeping (invalid_indexes) first


def _target_of(config: Config, name: str, needed: set[str]) -> MaintenanceTarget:
    """A target the operator named, if a chosen procedure applies to its kind."""
    target = find_target(config, name)  # an unknown name fails here
    kind = kind_of(target)
    if kind not in needed:
        raise RunbookError(
            f"target {name!r} is a {kind} target: no chosen maintenance procedure applies to "
            f"it (they cover {', '.join(sorted(needed - {HOST})) or 'the host only'} targets)"
        )
    return target


def choose_window(
    config: Config,
    window: str,
    targets: list[str],
    procedures: list[str],
    registry: Mapping[str, Procedure],
) -> WindowChoice:
    """Check the operator's request against the config; raises RunbookError (exit 2, nothing
    recorded) naming the culprit. Empty `procedures`: the window's. Empty `targets`: every
    target of the kinds the procedures apply to (tasks/maintenance/targets.py); a procedure
    of the host (log_archive, command) runs on the host whatever the targets. Procedures of
    the registry that no window chooses (invalid_indexes) always run, first."""
    windows = config.maintenance.windows
    if window not in windows:
        raise NotFoundError(
            f"unknown maintenance window {window!r} (maintenance.windows: {', '.join(windows)})"
        )
    settings = windows[window]
    unknown = [name for name in procedures if name not in PROCEDURES]
    if unknown:
        raise RunbookError(
            f"unknown maintenance procedure {unknown[0]!r} (choose from {', '.join(PROCEDURES)})"
        )
    wanted = set(procedures or settings.procedures)
    needed = {kind for name in wanted for kind in kinds_of(registry.get(name))}
    if targets:
        chosen = [_target_of(config, name, needed) for name in targets]
    else:
        chosen = [t for kind in sorted(needed - {HOST}) for t in getattr(config.targets, kind)]
    if HOST in needed:
        chosen.append(HOST_TARGET)
    if not chosen:
        if needed == {"postgres"}:
            raise RunbookError("no PostgreSQL targets to maintain (add targets.postgres)")
        raise RunbookError(
            f"no targets to maintain: the procedures apply to {', '.join(sorted(needed))} "
            "targets and none is configured"
        )
    missing = [name for name in wanted if name not in registry]
    if missing:
        raise RunbookError(f"maintenance procedure {missing[0]!r} is not available here")
    ordered = tuple(name for name in registry if name in wanted or name not in PROCEDURES)
    # A target only runs the procedures of its kind: keep those that have one.
    kinds = {kind_of(t) for t in chosen}
    ordered = tuple(n for n in ordered if set(kinds_of(registry[n])) & kinds)
    return WindowChoice(window, settings, tuple(chosen), ordered)


def run_window(request: WindowRequest, run_step: StepRunner = call_step) -> MaintenanceRun:
    """One maintenance window (see the module docstring), recorded in the ledger; returns the
    run with every action's outcome. A failed action is a result: the window goes on and the
    run says `failed`."""
    with recorded_window(request, run_step) as window:
        if not request.dry_run:
            window.step(WindowStep.SWEEP, steps.sweep)
        for target in request.targets:
            window.step(WindowStep.PLAN, steps.plan_target, target)
        if request.publish is not None:
            request.publish(PLAN_ARTIFACT, plan_markdown(window.run()))
        if request.dry_run:
            steps.record_dry_run(window)
        else:
            _apply(window)
    assert window.record is not None  # recorded_window saved the verdict
    return window.record


def _apply(window: Window) -> None:
    """Steps 3 to 6 of a real run."""
    request = window.request
    if request.settings.pre_backup and window.pending():
        window.current = WindowStep.BACKUP  # the backup flow shows as its own (sub)flow run
        steps.pre_backup(window)
    applied: list[MaintenanceTarget] = []
    with window.locks:  # released once the plan is applied, whatever happens
        if window.pending():
            held = window.step(WindowStep.LOCK, steps.lock_targets)
            with maintenance_mode(window) as entered:
                if entered:
                    for target in request.targets:
                        if target.name in held:
                            window.step(WindowStep.APPLY, steps.apply_target, target)
                            applied.append(target)
    for target in applied:
        window.step(WindowStep.VERIFY, steps.verify_target, target)


@contextmanager
def maintenance_mode(window: Window) -> Iterator[bool]:
    """Enter maintenance mode for the block (yields whether it was entered) and leave it in
    `finally`: on failure, and on cancellation too (then without starting a task run, as the
    run is being torn down). Nothing is entered when no action is left to apply."""
    if not window.pending():
        yield False
        return
    torn_down = False
    try:
        yield window.step(WindowStep.ENTER, steps.enter_mode)
    except Exception:
        raise
    except BaseException:  # cancelled (Prefect's TerminationSignal), Ctrl-C
        torn_down = True
        raise
    finally:
        if torn_down:  # window.current stays the step that was interrupted
            steps.exit_mode(window)
        else:
            window.step(WindowStep.EXIT, steps.exit_mode)


__all__ = ["WindowChoice", "WindowRequest", "choose_window", "run_window"]
