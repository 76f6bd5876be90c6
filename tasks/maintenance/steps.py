"""The steps of a maintenance window, each a plain function of the window in progress
(tasks/maintenance/run.py's Window) that tasks/maintenance/window.py calls in order, plainly
or as Prefect task runs. Every step records what it decides in the ledger as it goes.
"""

from __future__ import annotations

import socket
import time
from contextlib import ExitStack
from typing import Any

import psutil

from runbook.catalog import MaintenanceAction, MaintenanceRun, MaintenanceStatus, Outcome
from runbook.health import RANK, CheckResult
from runbook.locks import LockTimeout, named_lock
from tasks.health.registry import REGISTRY, deadline_for, run_kind, run_with_deadline
from tasks.maintenance.budget import deferral_reason, overruns
from tasks.maintenance.mode import ModeError, call_hook, create_silence, expire_silence
from tasks.maintenance.procedure import MeasureContext, Procedure
from tasks.maintenance.run import Window
from tasks.maintenance.targets import (
    BACKED_UP,
    MaintenanceTarget,
    kind_of,
    kinds_of,
    lock_names,
    open_session,
)


def _error(window: Window, exc: BaseException) -> str:
    return window.scrub(f"{type(exc).__name__}: {exc}")


# --- sweep -----------------------------------------------------------------------------------


def _alive(run: MaintenanceRun, now_ts: float) -> bool:
    """Is the run's process still there? (Another host's run: until its quiet time ends.)"""
    if run.host != socket.gethostname():
        return now_ts <= run.quiet_until.timestamp()
    try:
        process = psutil.Process(run.pid)
    except psutil.NoSuchProcess:
        return False
    return process.create_time() <= run.started_at.timestamp() + 5


def sweep(window: Window) -> list[str]:
    """Close the running runs of these targets whose process died (interrupted), and expire
    the Alertmanager silence such a run left open. Returns what was cleaned up."""
    ours = {t.name for t in window.request.targets}
    alertmanager = window.settings.mode.alertmanager
    cleaned = []
    now_ts = window.request.clock().timestamp()
    for run in window.log.list(status=MaintenanceStatus.RUNNING, limit=None):
        if run.id == window.id or not ours & set(run.targets) or _alive(run, now_ts):
            continue
        window.log.interrupt(run.id, f"its process died (found by maintenance run {window.id})")
        cleaned.append(f"closed maintenance run {run.id} (its process died)")
        if run.silence_id and alertmanager is not None:
            try:
                expire_silence(alertmanager, run.silence_id)
                window.log.clear_silence(run.id)
                cleaned.append(f"expired silence {run.silence_id} left open by run {run.id}")
            except ModeError as exc:
                cleaned.append(f"could not expire silence {run.silence_id} of run {run.id}: {exc}")
    for line in cleaned:
        window.note(line)
    return cleaned


# --- plan ------------------------------------------------------------------------------------


def _failed(procedure: str, target: str, reason: str, error: str) -> MaintenanceAction:
    return MaintenanceAction(
        procedure=procedure,
        target=target,
        object="",
        statement="",
        reason=reason,
        outcome=Outcome.FAILED,
        error=error,
    )


def procedures_for(window: Window, target: MaintenanceTarget) -> list[str]:
    """The window's procedures that apply to this kind of target, in order."""
    kind = kind_of(target)
    registry = window.request.registry
    return [name for name in window.request.procedures if kind in kinds_of(registry[name])]


def plan_target(window: Window, target: MaintenanceTarget) -> list[MaintenanceAction]:
    """Measure every procedure of the window that applies to `target`'s kind and plan it
    (pure); record the plan. A procedure that cannot measure is one failed action, and the
    others still plan. A real run also reads the target's health checks, to compare with
    after."""
    request = window.request
    planned: list[MaintenanceAction] = []
    try:
        with open_session(target, window.settings, window.runtime) as session:
            context = MeasureContext(session, target, window.settings, window.log)
            for name in procedures_for(window, target):
                procedure = request.registry[name]
                try:
                    actions = procedure.plan(procedure.measure(context), window.settings, target)
                except Exception as exc:  # noqa: BLE001 - recorded as a failed action
                    actions = [_failed(name, target.name, "measure and plan", _error(window, exc))]
                planned += [
                    a.model_copy(update={"destructive": a.destructive or procedure.destructive})
                    for a in actions
                ]
    except Exception as exc:  # noqa: BLE001 - the target cannot be reached: one failed action
        planned.append(
            _failed("connect", target.name, "reach the target to measure it", _error(window, exc))
        )
    if not request.dry_run:
        window.health_before[target.name] = target_health(window, target)
    recorded = window.add_plan(target.name, planned)
    proposed = sum(1 for a in recorded if a.outcome == Outcome.PLANNED)
    window.say(f"plan {target.name}: {proposed} action(s) over thresholds")
    return recorded


def record_dry_run(window: Window) -> None:
    """A dry run applies nothing: every planned action ends `dry-run`."""
    for action in window.pending():
        window.conclude(action, Outcome.DRY_RUN)


# --- pre-maintenance backup ------------------------------------------------------------------


def pre_backup(window: Window) -> dict[str, str | None]:
    """Back up the targets through the backup flow first. A target whose backup failed has
    its destructive actions skipped (unless the window says `stop_on_backup_failure: false`)."""
    names = [
        t.name for t in window.request.targets if kind_of(t) in BACKED_UP and window.pending(t.name)
    ]
    if not names:
        return {}
    if window.request.back_up is None:
        results = {name: "no backup runner in this context" for name in names}
    else:
        results = window.request.back_up(names)
    stop = window.request.settings.stop_on_backup_failure
    for name in names:
        why = results.get(name, "no backup result")
        if why is None:
            window.note(f"pre-maintenance backup of {name}: verified")
            continue
        window.note(
            f"pre-maintenance backup of {name} failed: {why}"
            + ("" if stop else " (going on: stop_on_backup_failure is false)")
        )
        if stop:
            destructive = [a for a in window.pending(name) if a.destructive]
            window.skip(destructive, f"pre-maintenance backup failed: {why}")
    return results


# --- locks -----------------------------------------------------------------------------------


def lock_targets(window: Window) -> list[str]:
    """Take each target's locks (a window never runs beside a backup or drill of its target),
    waiting up to maintenance.wait_for_target in all; a target still held then is `locked`:
    its actions are skipped. Returns the targets held; the window releases them."""
    catalog = window.runtime.config.catalog
    deadline = time.monotonic() + window.settings.wait_for_target.total_seconds()
    held = []
    for target in window.request.targets:
        if not window.pending(target.name):
            continue
        try:
            with ExitStack() as stack:
                for name in lock_names(target):
                    wait = max(0.0, deadline - time.monotonic())
                    stack.enter_context(named_lock(catalog, name, wait))
                window.locks.enter_context(stack.pop_all())
        except LockTimeout as exc:
            why = f"locked: {exc} (maintenance.wait_for_target)"
            window.locked[target.name] = why
            window.note(f"{target.name}: {why}")
            window.skip(window.pending(target.name), why)
            continue
        held.append(target.name)
    return held


# --- maintenance mode ------------------------------------------------------------------------


def enter_mode(window: Window) -> bool:
    """The application's enter call, then the Alertmanager silence (until the window's end
    plus its margin). When either fails nothing is applied: the pending actions are skipped
    and the run fails; what was entered is left again at exit."""
    mode = window.settings.mode
    try:
        if mode.enter is not None:
            window.mode_called = True
            window.note(f"maintenance mode entered: {call_hook(mode.enter)}")
        if mode.alertmanager is not None:
            window.silence_id = create_silence(
                mode.alertmanager,
                window.request.clock(),
                window.ends_at,
                f"Runbook maintenance window {window.request.window} (run {window.id})",
            )
            window.log.record_silence(window.id, window.silence_id)
            window.note(
                f"Alertmanager silence {window.silence_id} created until "
                f"{window.quiet_until:%Y-%m-%d %H:%M:%S} UTC"
            )
    except ModeError as exc:
        why = f"maintenance mode not entered: {exc}"
        window.errors.append(why)
        window.note(why)
        window.skip(window.pending(), why)
        return False
    return True


def exit_mode(window: Window) -> None:
    """Out of maintenance mode: the application's exit call (when enter was called, even if it
    failed), and the silence expired. Always runs; a failure here fails the run."""
    mode = window.settings.mode
    if window.mode_called and mode.exit is not None:
        try:
            window.note(f"maintenance mode left: {call_hook(mode.exit)}")
        except ModeError as exc:
            why = f"maintenance mode exit failed: {exc} (the application may still be in it)"
            window.errors.append(why)
            window.note(why)
    if window.silence_id is not None and mode.alertmanager is not None:
        try:
            expire_silence(mode.alertmanager, window.silence_id)
            window.log.clear_silence(window.id)
            window.note(f"Alertmanager silence {window.silence_id} expired")
            window.silence_id = None
        except ModeError as exc:
            why = (
                f"Alertmanager silence {window.silence_id} not expired: {exc} (it ends by "
                f"itself at {window.quiet_until:%H:%M:%S} UTC; the next window retries)"
            )
            window.errors.append(why)
            window.note(why)


# --- apply -----------------------------------------------------------------------------------


def apply_target(window: Window, target: MaintenanceTarget) -> list[MaintenanceAction]:
    """Apply a target's planned actions in order, under the window's budget: an action whose
    estimated duration would pass the window's end is deferred and not started; one that
    fails is `failed` with its error, and the window goes on with the next."""
    request = window.request
    with ExitStack() as stack:
        session: Any = None  # the target kind's session (tasks/maintenance/targets.py)
        for action in window.pending(target.name):
            procedure = request.registry[action.procedure]
            now = request.clock()
            if overruns(action, now, window.ends_at):
                reason = deferral_reason(action, now, window.ends_at)
                window.conclude(action, Outcome.DEFERRED, error=reason)
                window.say(f"{target.name} {action.procedure} {action.object}: {reason}")
                continue
            if session is None or not session.usable:
                try:
                    session = stack.enter_context(
                        open_session(target, window.settings, window.runtime)
                    )
                except Exception as exc:  # noqa: BLE001 - recorded as a failed action
                    window.conclude(
                        action, Outcome.FAILED, error=f"cannot connect: {_error(window, exc)}"
                    )
                    continue
            _apply_one(window, session, procedure, action)
    return window.actions[target.name]


def _apply_one(
    window: Window, session: Any, procedure: Procedure, action: MaintenanceAction
) -> None:
    started_at = window.request.clock()
    window.log.start_action(window.id, action.id, started_at)  # a run that dies says which
    began = time.monotonic()
    label = f"{action.target} {action.procedure} {action.object}".rstrip()
    try:
        after = procedure.apply(session, action)
    except Exception as exc:  # noqa: BLE001 - a failed action is a result; the window goes on
        seconds = round(time.monotonic() - began, 3)
        error = _error(window, exc)
        window.conclude(
            action,
            Outcome.FAILED,
            started_at=started_at,
            finished_at=window.request.clock(),
            duration=seconds,
            error=error,
        )
        window.say(f"{label}: failed after {seconds:.1f} s: {error}")
        return
    seconds = round(time.monotonic() - began, 3)
    window.conclude(
        action,
        Outcome.DONE,
        after=dict(after or {}),
        started_at=started_at,
        finished_at=window.request.clock(),
        duration=seconds,
    )
    window.say(f"{label}: done in {seconds:.1f} s")


# --- verify ----------------------------------------------------------------------------------


def target_health(window: Window, target: MaintenanceTarget) -> list[CheckResult]:
    """The target's health checks (tasks/health), under their deadline (none for the host)."""
    kind = kind_of(target)
    health = getattr(target, "health", None)
    check = REGISTRY.get(kind)
    if health is None or not health.enabled or check is None or not check.per_target:
        return []
    config = window.runtime.config
    return run_with_deadline(
        lambda: run_kind(window.runtime, kind, target.name, window.request.clock()),
        deadline_for(config, kind),
        kind,
        target.name,
        config.health.unreachable,
    )


def verify_target(window: Window, target: MaintenanceTarget) -> list[str]:
    """After the window: re-measure (which of the objects treated would a plan still propose)
    and run the target's health checks again, each compared with before; what it finds goes
    into the run's notes. Returns those notes."""
    request = window.request
    done = [a for a in window.actions[target.name] if a.outcome == Outcome.DONE]
    findings = []
    treated = {(a.procedure, a.object) for a in done}
    procedures = [
        name
        for name in request.procedures
        if any(a.procedure == name for a in done)
        and getattr(request.registry[name], "remeasure", True)  # a script's step: nothing to
    ]
    try:
        with open_session(target, window.settings, window.runtime) as session:
            context = MeasureContext(session, target, window.settings, window.log)
            for name in procedures:
                procedure = request.registry[name]
                again = procedure.plan(procedure.measure(context), window.settings, target)
                still = [
                    a.object
                    for a in again
                    if (a.procedure, a.object) in treated and a.outcome == Outcome.PLANNED
                ]
                total = sum(1 for a in done if a.procedure == name)
                findings.append(
                    f"{target.name} {name}: re-measured, {total - len(still)} of {total} treated "
                    "object(s) now under the thresholds"
                    + (f"; still over: {', '.join(still)}" if still else "")
                )
    except Exception as exc:  # noqa: BLE001 - a verification that cannot measure says so
        findings.append(f"{target.name}: could not re-measure: {_error(window, exc)}")
    findings += _compare_health(
        target.name, window.health_before.get(target.name, []), target_health(window, target)
    )
    for line in findings:
        window.note(line)
    return findings


def _compare_health(target: str, before: list[CheckResult], after: list[CheckResult]) -> list[str]:
    """One line: how many checks, and each check that got worse than before the window."""
    if not after:
        return []
    earlier = {c.check: c for c in before}
    worse = [
        f"{c.check} {earlier[c.check].status.value} -> {c.status.value} ({c.message})"
        for c in after
        if c.check in earlier and RANK[c.status] > RANK[earlier[c.check].status]
    ]
    better = sum(
        1 for c in after if c.check in earlier and RANK[c.status] < RANK[earlier[c.check].status]
    )
    if worse:
        return [f"{target} health after the window: worse than before: {'; '.join(worse)}"]
    return [
        f"{target} health after the window: {len(after)} checks, none worse than before"
        + (f", {better} better" if better else "")
    ]
