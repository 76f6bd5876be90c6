"""Stopping a run promptly: SIGTERM and SIGINT act within a second, whatever the run is doing.

A Python signal handler only runs in the main thread, between bytecodes: while that thread
sits in one long C call (zstd at level 19 compresses one job for tens of seconds) a SIGTERM
waits, and supervisors escalate to SIGKILL. So long streaming work runs in a worker thread
(`run_interruptibly`) while the main thread waits on an event, which a signal interrupts at
once; the handler (`stop_on_signals`) raises `Stopped` there, the stream's producer is killed,
and the run records why it ended (`stop_reason`: "stopped by SIGTERM"); the command then
leaves at once (`leave_now`) instead of waiting for the abandoned thread.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

log = logging.getLogger("runbook.stopping")

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After a stop, how long the worker may take to clean up (delete its temp file) before the
# run goes on without it: its zstd call may not return for tens of seconds.
STOP_GRACE_SECONDS = 1.0


class Stopped(BaseException):  # noqa: N818 - reads as "the run was stopped", like SystemExit
    """The process was asked to stop (SIGTERM, SIGINT). A BaseException, as KeyboardInterrupt
    is, so `except Exception` in a procedure does not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process a signal ended

    def __str__(self) -> str:
        return f"stopped by {signal_name(self.signum)}"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _raise_stopped(signum: int, _frame: Any) -> None:
    raise Stopped(signum)


def stop_on_signals() -> None:
    """Make SIGTERM and SIGINT raise `Stopped` in the main thread (the `runbook` command).
    While a flow runs, Prefect swaps in its own SIGTERM handler (raising TerminationSignal)
    and, when it fires, restores this one and re-sends the signal. A signal the process was
    started with ignored (SIGINT in a shell's background job) stays ignored."""
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_stopped)


def leave_now(code: int) -> NoReturn:
    """End a stopped process: flush its logs while what they go to still runs (Prefect's
    log handler sends to the temporary server, which an exit hook stops), run its exit hooks,
    then exit without the interpreter's teardown, whose garbage collection would wait for an
    abandoned zstd call to finish its job (tens of seconds at level 19)."""
    try:
        logging.shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def stop_reason(exc: BaseException) -> str | None:
    """The reason to record ("stopped by SIGTERM") when `exc` is how a signal stopped the run,
    else None. Knows Prefect's TerminationSignal (a BaseException carrying `.signal`) without
    importing it."""
    if isinstance(exc, Stopped):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return f"stopped by {signal_name(signal.SIGINT)}"
    signum = getattr(exc, "signal", None)
    if not isinstance(exc, Exception) and isinstance(signum, int):
        return f"stopped by {signal_name(signum)}"
    return None


def run_interruptibly(
    work: Callable[..., T],
    *args: Any,
    stop: Callable[[], object] | None = None,
    grace: float = STOP_GRACE_SECONDS,
) -> T:
    """`work(*args)` in a worker thread, while the calling (main) thread waits for it and so
    stays free to act on a signal. When the wait is interrupted (its handler raises), `stop()`
    ends the work's producer (kills a pg_dump, so the work fails instead of committing), the
    worker gets `grace` seconds to clean up, and the exception goes on; the worker, a daemon,
    is left to die with the process. Outside the main thread this is a plain call."""
    if threading.current_thread() is not threading.main_thread():
        return work(*args)
    outcome: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()  # the Prefect run context, for its logger

    def run() -> None:
        try:
            outcome["value"] = context.run(work, *args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=run, name=f"interruptible-{_name(work)}", daemon=True)
    worker.start()
    try:
        done.wait()  # a signal interrupts this wait at once
    except BaseException:
        if stop is not None:
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - stopping is best effort; we are leaving
                log.warning("could not stop %s: %s", _name(work), exc)
        done.wait(grace)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _name(work: Callable[..., Any]) -> str:
    return getattr(work, "__qualname__", None) or type(work).__name__
