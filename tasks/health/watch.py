"""Watching: health runs repeated for a while, ending with one verdict and the worst moment
(runbook 001 "Monitor for stability (15 min)" after a rollback, 003 "Monitor metrics for 1
hour").

`watch(run_once, duration, every)` runs `run_once()` at 0, every, 2 x every, ... up to and
including `duration` (a run that overruns its slot delays the next one, never skips it), and
`verdict(samples)` says how it went: the verdict is the worst status of any run (a critical
blip in the middle is not "stable"), `stable` means every run was ok, and the worst moment is
the run with the worst status, the most failing checks on a tie, the earliest on a further tie.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import BaseModel

from runbook.health import RANK, Status, worst


class WatchSample(BaseModel):
    """One health run of the watch."""

    at: datetime
    run_id: str
    status: Status
    severity: str | None = None
    checks: int = 0
    failing: list[str] = []  # "critical http.status on api", worst first


class WatchVerdict(BaseModel):
    status: Status  # the worst status of any run
    stable: bool  # every run was ok
    duration: float  # seconds asked for
    every: float
    runs: list[WatchSample]
    worst: WatchSample
    last: WatchSample

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for r in self.runs if r.status == s) for s in Status}

    def summary(self) -> str:
        """'warn: 2 of 16 runs failing, ended ok' or 'ok: stable over 16 runs'."""
        runs = len(self.runs)
        if self.stable:
            return f"ok: stable, every one of {runs} run{'s' if runs != 1 else ''} ok"
        failing = sum(1 for r in self.runs if r.status != Status.OK)
        return (
            f"{self.status.value}: {failing} of {runs} runs failing, ended {self.last.status.value}"
        )


def verdict(samples: list[WatchSample], duration: float, every: float) -> WatchVerdict:
    if not samples:
        raise ValueError("a watch with no runs has no verdict")
    worst_sample = min(
        enumerate(samples),
        key=lambda pair: (-RANK[pair[1].status], -len(pair[1].failing), pair[0]),
    )[1]
    status = worst(s.status for s in samples)
    return WatchVerdict(
        status=status,
        stable=status == Status.OK,
        duration=duration,
        every=every,
        runs=samples,
        worst=worst_sample,
        last=samples[-1],
    )


def check_watch_window(duration: timedelta, every: timedelta) -> None:
    """Operator errors name the option: --every must be positive and no longer than --watch."""
    if every.total_seconds() <= 0:
        raise ValueError("--every must be longer than 0s")
    if duration.total_seconds() <= 0:
        raise ValueError("--watch must be longer than 0s")
    if every > duration:
        raise ValueError(f"--every ({every}) is longer than --watch ({duration}): one run only?")


def watch(
    run_once: Callable[[], WatchSample],
    duration: float,
    every: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WatchVerdict:
    """Run `run_once` every `every` seconds for `duration` seconds (both ends included)."""
    started = clock()
    samples: list[WatchSample] = []
    slot = 0
    while True:
        samples.append(run_once())
        slot += 1
        next_at = slot * every
        if next_at > duration + 1e-9:
            break
        wait = started + next_at - clock()
        if wait > 0:
            sleep(wait)
    return verdict(samples, duration, every)
