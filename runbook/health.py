"""Health check results and grading, shared by every check module, the flow and the catalog.

Every check yields CheckResult(check, target, status, value, unit, threshold, message,
duration); `display_value` is the value as people read it ("91.2 %", "0.42 s", "12").
Statuses: ok < unknown < warn < critical for "how bad is the run" (unknown means Runbook could
not tell, which is never ok). Grading a value against a Threshold is one function, `grade`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from pydantic import BaseModel, field_validator

from runbook.config import Threshold
from runbook.formatting import quantity


class Status(enum.StrEnum):
    OK = "ok"
    UNKNOWN = "unknown"
    WARN = "warn"
    CRITICAL = "critical"


RANK = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARN: 2, Status.CRITICAL: 3}


class CheckResult(BaseModel):
    check: str  # what was checked, dotted: "http.status", "postgres.connections"
    target: str  # the configured target's name
    status: Status
    value: float | int | str | bool | None = None
    unit: str = ""  # of value: "%", "s", "ms", "h", "d", "GB"; "" for counts and ratios
    threshold: str | None = None  # human form, e.g. "warn > 80, critical > 95"
    message: str = ""
    duration: float = 0.0  # seconds

    @field_validator("unit")
    @classmethod
    def _bare_unit(cls, unit: str) -> str:
        return unit.strip()  # check modules pass " ms" to describe(): the text glue is ours

    @property
    def key(self) -> tuple[str, str]:
        return (self.check, self.target)

    @property
    def display_value(self) -> str:
        """The value with its unit: '91.2 %', '0.42 s', '12', 'yes'; '-' when not measured."""
        return quantity(self.value, self.unit)


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=RANK.__getitem__, default=Status.OK)


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
}


def grade(value: float | None, threshold: Threshold) -> Status:
    """ok / warn / critical for a measured value; None (no measurement) is unknown."""
    if value is None:
        return Status.UNKNOWN
    breached = _OPS[threshold.op]
    if threshold.critical is not None and breached(value, threshold.critical):
        return Status.CRITICAL
    if threshold.warn is not None and breached(value, threshold.warn):
        return Status.WARN
    return Status.OK


def describe(threshold: Threshold, unit: str = "") -> str | None:
    parts = []
    if threshold.warn is not None:
        parts.append(f"warn {threshold.op} {threshold.warn:g}{unit}")
    if threshold.critical is not None:
        parts.append(f"critical {threshold.op} {threshold.critical:g}{unit}")
    return ", ".join(parts) or None


def measured(
    check: str,
    target: str,
    value: float | None,
    threshold: Threshold,
    message: str,
    *,
    unit: str = "",
    duration: float = 0.0,
) -> CheckResult:
    """A CheckResult for a value graded against its threshold."""
    return CheckResult(
        check=check,
        target=target,
        status=grade(value, threshold),
        value=value,
        unit=unit,
        threshold=describe(threshold, unit),
        message=message,
        duration=round(duration, 4),
    )


@contextmanager
def timer() -> Any:
    """with timer() as elapsed: ...; elapsed() -> seconds since the block started."""
    started = time.perf_counter()
    yield lambda: time.perf_counter() - started


# Runbook 001's incident levels: P1 complete outage, P2 degraded, P3 partial, P4 minor.
def severity(results: list[CheckResult]) -> str | None:
    """P1 when every endpoint-like check of the run is critical (complete outage) or a
    check marked critical belongs to an http target and all http targets are down; P2 any
    critical; P3 any warn; P4 only unknowns; None when everything is ok."""
    if not results:
        return None
    statuses = [r.status for r in results]
    endpoints = [r for r in results if r.check in ("http.status", "redis.ping", "postgres.connect")]
    down = {r.target for r in endpoints if r.status == Status.CRITICAL}
    if endpoints and down == {r.target for r in endpoints}:
        return "P1"
    if Status.CRITICAL in statuses:
        return "P2"
    if Status.WARN in statuses:
        return "P3"
    if Status.UNKNOWN in statuses:
        return "P4"
    return None


# --- failing streaks, notifications and recoveries -------------------------------------------


class Tracked(BaseModel):
    """A result with its failing streak, as stored; plus what to tell people about it."""

    result: CheckResult
    streak: int  # consecutive failing runs, this one included (0 when ok)
    notified: bool  # this failing episode has been notified
    event: str | None = None  # "failing", "escalated", "recovered" or None


class Previous(Protocol):
    """What `track` needs of a check's previous result (the catalog's StoredCheck)."""

    @property
    def status(self) -> str: ...  # a Status, or its value

    @property
    def streak(self) -> int: ...

    @property
    def notified(self) -> bool: ...


def track(
    results: list[CheckResult],
    previous: Mapping[tuple[str, str], Previous],
    notify_after: Mapping[str, int],
) -> list[Tracked]:
    """Carry each check's failing streak forward from its previous stored result.

    A check notifies once its streak reaches `notify_after[status]` (default 1), again when it
    gets worse (warn -> critical), and a notified episode reports its recovery once.
    `previous` maps (check, target) to its newest stored result.
    """
    tracked = []
    for result in results:
        before = previous.get(result.key)
        failing = result.status != Status.OK
        was_failing = before is not None and before.status != Status.OK
        if not failing:
            recovered = was_failing and before.notified
            tracked.append(
                Tracked(
                    result=result,
                    streak=0,
                    notified=False,
                    event="recovered" if recovered else None,
                )
            )
            continue
        streak = before.streak + 1 if was_failing else 1
        notified = before.notified if was_failing else False
        event = None
        if not notified and streak >= notify_after.get(result.status.value, 1):
            event, notified = "failing", True
        elif notified and was_failing and RANK[result.status] > RANK[Status(before.status)]:
            event = "escalated"
        tracked.append(Tracked(result=result, streak=streak, notified=notified, event=event))
    return tracked
