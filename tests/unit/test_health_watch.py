"""`runbook health --watch`: the schedule of the runs, the verdict and the worst moment, with
a fake clock (the CLI path against real flows is in tests/e2e/test_health_watch.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runbook.health import Status
from tasks.health.watch import WatchSample, check_watch_window, verdict, watch

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def sample(minute: int, status: Status, *failing: str) -> WatchSample:
    return WatchSample(
        at=T0 + timedelta(minutes=minute),
        run_id=f"run-{minute}",
        status=status,
        checks=10,
        failing=list(failing),
    )


class FakeClock:
    def __init__(self, run_takes: float) -> None:
        self.now = 0.0
        self.run_takes = run_takes
        self.starts: list[float] = []
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def run(self) -> WatchSample:
        self.starts.append(self.now)
        self.now += self.run_takes
        return sample(len(self.starts), Status.OK)


def test_runs_at_every_slot_from_start_to_end_inclusive() -> None:
    fake = FakeClock(run_takes=10)
    outcome = watch(fake.run, 15 * 60, 60, clock=fake.clock, sleep=fake.sleep)
    assert fake.starts == [60.0 * i for i in range(16)]  # 0, 1m, ... 15m
    assert fake.sleeps == [50.0] * 15  # each run's time is taken out of the wait
    assert len(outcome.runs) == 16 and outcome.stable


def test_a_run_longer_than_the_slot_delays_the_next_never_skips() -> None:
    fake = FakeClock(run_takes=90)
    watch(fake.run, 180, 60, clock=fake.clock, sleep=fake.sleep)
    assert fake.starts == [0, 90, 180, 270]  # slots 0, 60, 120, 180: started late, none lost
    assert fake.sleeps == []


def test_the_verdict_is_the_worst_run_and_names_the_worst_moment() -> None:
    runs = [
        sample(0, Status.OK),
        sample(1, Status.WARN, "warn redis.hit_rate on cache"),
        sample(2, Status.CRITICAL, "critical http.status on api"),
        sample(3, Status.CRITICAL, "critical http.status on api", "warn http.latency on api"),
        sample(4, Status.CRITICAL, "critical http.status on api", "warn http.latency on api"),
        sample(5, Status.OK),
    ]
    outcome = verdict(runs, 300, 60)
    assert outcome.status == Status.CRITICAL and not outcome.stable
    assert outcome.worst.run_id == "run-3"  # critical with the most failing checks, earliest
    assert outcome.last.run_id == "run-5"
    assert outcome.summary() == "critical: 4 of 6 runs failing, ended ok"
    assert outcome.counts() == {"ok": 2, "unknown": 0, "warn": 1, "critical": 3}


def test_a_stable_watch() -> None:
    outcome = verdict([sample(0, Status.OK), sample(1, Status.OK)], 60, 60)
    assert outcome.stable and outcome.status == Status.OK
    assert outcome.summary() == "ok: stable, every one of 2 runs ok"
    assert outcome.worst.run_id == "run-0"


@pytest.mark.parametrize(
    ("duration", "every", "error"),
    [
        (timedelta(minutes=15), timedelta(0), "--every must be longer than 0s"),
        (timedelta(0), timedelta(minutes=1), "--watch must be longer than 0s"),
        (timedelta(minutes=1), timedelta(minutes=5), "--every (0:05:00) is longer than --watch"),
    ],
)
def test_bad_windows_name_the_option(duration, every, error) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        check_watch_window(duration, every)
