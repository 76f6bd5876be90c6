from __future__ import annotations

from types import SimpleNamespace

import pytest

from runbook.config import Threshold
from runbook.health import CheckResult, Status, describe, grade, severity, track, worst


@pytest.mark.parametrize(
    ("value", "threshold", "expected"),
    [
        (79, Threshold(warn=80, critical=95), Status.OK),
        (80, Threshold(warn=80, critical=95), Status.OK),  # op ">": the boundary is fine
        (81, Threshold(warn=80, critical=95), Status.WARN),
        (96, Threshold(warn=80, critical=95), Status.CRITICAL),
        (25, Threshold(warn=30, critical=10, op="<"), Status.WARN),
        (5, Threshold(warn=30, critical=10, op="<"), Status.CRITICAL),
        (50, Threshold(), Status.OK),
        (None, Threshold(warn=1), Status.UNKNOWN),
    ],
)
def test_grade(value, threshold, expected):
    assert grade(value, threshold) is expected


def test_threshold_order_is_validated():
    with pytest.raises(ValueError, match="critical \\(10\\) must be above"):
        Threshold(warn=20, critical=10)
    assert describe(Threshold(warn=30, critical=10, op="<"), "%") == "warn < 30%, critical < 10%"


def result(status: Status, check: str = "x.y", target: str = "t") -> CheckResult:
    return CheckResult(check=check, target=target, status=status)


def test_worst_and_severity():
    assert worst([Status.OK, Status.UNKNOWN, Status.WARN]) is Status.WARN
    assert severity([result(Status.OK)]) is None
    assert severity([result(Status.UNKNOWN)]) == "P4"
    assert severity([result(Status.WARN)]) == "P3"
    assert severity([result(Status.CRITICAL), result(Status.OK, "http.status", "api")]) == "P2"
    down = [
        result(Status.CRITICAL, "http.status", "a"),
        result(Status.CRITICAL, "http.status", "b"),
    ]
    assert severity(down) == "P1"


def run(statuses, notify_after=None):
    """Feed one check through consecutive runs; return the events."""
    previous = {}
    events = []
    for status in statuses:
        [t] = track([result(status)], previous, notify_after or {"critical": 1, "warn": 3})
        previous = {
            ("x.y", "t"): SimpleNamespace(
                status=t.result.status.value, streak=t.streak, notified=t.notified
            )
        }
        events.append(t.event)
    return events


def test_critical_notifies_at_once_and_recovery_is_reported_once():
    assert run([Status.CRITICAL, Status.CRITICAL, Status.OK, Status.OK]) == [
        "failing",
        None,
        "recovered",
        None,
    ]


def test_warn_notifies_after_three_runs_in_a_row():
    assert run(
        [Status.WARN, Status.WARN, Status.OK, Status.WARN, Status.WARN, Status.WARN, Status.WARN]
    ) == [None, None, None, None, None, "failing", None]


def test_escalation_notifies_again_and_unnotified_recovery_is_silent():
    assert run([Status.WARN] * 3 + [Status.CRITICAL, Status.WARN, Status.OK]) == [
        None,
        None,
        "failing",
        "escalated",
        None,
        "recovered",
    ]
    assert run([Status.WARN, Status.OK]) == [None, None]


def test_a_health_run_logs_one_line_with_its_verdict_and_failing_checks():
    from flows.daily_health import HealthReport, summary_line

    checks = [
        CheckResult(check="http.status", target="api", status=Status.OK),
        CheckResult(check="host.disk[/]", target="box", status=Status.WARN, value=91.0),
        CheckResult(check="redis.ping", target="cache", status=Status.CRITICAL),
        CheckResult(check="logs.errors", target="app", status=Status.UNKNOWN),
    ]
    report = HealthReport(
        run_id="r", status=Status.CRITICAL, severity="P2", checks=checks, events=[]
    )
    assert summary_line(report) == (
        "health critical (P2): 4 checks, 1 critical, 1 warn, 1 unknown, 1 ok; failing: "
        "critical redis.ping on cache, warn host.disk[/] on box, unknown logs.errors on app"
    )
    calm = HealthReport(run_id="r", status=Status.OK, severity=None, checks=checks[:1], events=[])
    assert summary_line(calm) == "health ok: 1 checks, 0 critical, 0 warn, 0 unknown, 1 ok"


def test_a_maintenance_window_mutes_its_targets_until_it_ends():
    from tasks.health.notify import quiet_for_maintenance

    def run_quiet(steps: list[tuple[Status, bool]]) -> list[str | None]:
        previous: dict = {}
        events = []
        for status, in_window in steps:
            tracked = track([result(status)], previous, {"critical": 1, "warn": 1})
            [t] = quiet_for_maintenance(tracked, {"t": "under maintenance"} if in_window else {})
            previous = {
                ("x.y", "t"): SimpleNamespace(
                    status=t.result.status.value, streak=t.streak, notified=t.notified
                )
            }
            events.append(t.event)
        return events

    # a failure during the window is muted and notifies at the first run after it
    assert run_quiet(
        [(Status.CRITICAL, True), (Status.CRITICAL, True), (Status.CRITICAL, False)]
    ) == ["muted", "muted", "failing"]
    # an alert from before the window: its escalation is muted, its recovery still reported
    assert run_quiet([(Status.WARN, False), (Status.CRITICAL, True), (Status.OK, True)]) == [
        "failing",
        "muted",
        "recovered",
    ]
    # other targets are not muted
    tracked = track([result(Status.CRITICAL)], {}, {"critical": 1})
    assert quiet_for_maintenance(tracked, {"other": "under maintenance"})[0].event == "failing"
