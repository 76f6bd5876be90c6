"""Stopping a run promptly (issue 15, item 4): a signal acts while the work runs in C for a
long time, the work's producer is stopped, and the reason reads "stopped by SIGTERM"."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from runbook.stopping import Stopped, run_interruptibly, stop_reason


def raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signum)


@pytest.fixture
def raising_on_sigterm():
    previous = signal.signal(signal.SIGTERM, raise_stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_signal_stops_the_wait_at_once_and_stops_the_producer(raising_on_sigterm):
    release = threading.Event()
    stopped = []

    def stop() -> None:
        stopped.append(time.monotonic())
        release.set()

    def long_work() -> str:
        release.wait(30)  # like zstd at level 19: tens of seconds without returning
        return "done"

    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    began = time.monotonic()
    with pytest.raises(Stopped) as caught:
        run_interruptibly(long_work, stop=stop, grace=1.0)
    assert time.monotonic() - began < 3
    assert stopped, "the producer was not stopped"
    assert stop_reason(caught.value) == "stopped by SIGTERM"


def test_results_and_errors_of_the_work_come_back_unchanged():
    assert run_interruptibly(lambda a, b: a + b, 2, 3) == 5
    error = OSError(28, "No space left on device")

    def failing() -> None:
        raise error

    with pytest.raises(OSError) as caught:
        run_interruptibly(failing)
    assert caught.value is error


def test_stop_reasons():
    class TerminationSignal(BaseException):  # Prefect's, by shape
        def __init__(self, signum: int):
            self.signal = signum

    assert stop_reason(Stopped(signal.SIGINT)) == "stopped by SIGINT"
    assert stop_reason(TerminationSignal(signal.SIGTERM)) == "stopped by SIGTERM"
    assert stop_reason(KeyboardInterrupt()) == "stopped by SIGINT"
    assert stop_reason(RuntimeError("boom")) is None
