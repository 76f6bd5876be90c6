"""Routing notifications by severity as pure functions: which route is told what, repeats,
escalation once per episode, the single webhook as an implicit route, config mistakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from runbook.config import Config, Notifications
from runbook.health import CheckResult, Status, Tracked
from tasks.health.notify import (
    Delivery,
    email_message,
    pagerduty_events,
    plan_deliveries,
    record_deliveries,
    slack_message,
    webhook_message,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def tracked(check: str, status: str, event: str | None, streak: int = 1, target: str = "app"):
    return Tracked(
        result=CheckResult(check=check, target=target, status=Status(status), message="m"),
        streak=streak if status != "ok" else 0,
        notified=event in ("failing", "escalated") or (event is None and status != "ok"),
        event=event,
    )


def routes(**extra):
    return Notifications.model_validate(
        {
            "routes": [
                {"name": "page", "when": ["critical"], "webhook": {"url": "http://p"}, **extra},
                {
                    "name": "chat",
                    "when": ["warn"],
                    "slack": {"url": "http://c"},
                    "escalate_after": 3,
                    "escalate_to": "page",
                },
                {
                    "name": "mail",
                    "when": ["unknown", "recovered"],
                    "email": {"to": ["a@b.c"], "smtp": "smtp://mail:587"},
                },
            ]
        }
    ).routes_in_effect()


def test_each_status_goes_to_its_route_only():
    run = [
        tracked("http.status", "critical", "failing"),
        tracked("redis.memory", "warn", "failing"),
        tracked("host.disk", "unknown", "failing"),
        tracked("pg.connect", "ok", "recovered"),
        tracked("pg.locks", "ok", None),
    ]
    got = {
        (d.route, d.reason): [t.result.check for t in d.items]
        for d in plan_deliveries(run, routes(), {}, NOW)
    }
    assert got == {
        ("page", "alert"): ["http.status"],
        ("chat", "alert"): ["redis.memory"],
        ("mail", "alert"): ["host.disk", "pg.connect"],
    }


def test_repeat_waits_its_interval_and_escalation_happens_once_per_episode():
    config = routes(repeat="30m")
    still = [tracked("http.status", "critical", None, streak=2), tracked("q", "warn", None, 3)]
    first = plan_deliveries(still, config, {}, NOW)
    assert {(d.route, d.reason, d.escalated_from) for d in first} == {
        ("page", "repeat", None),  # never sent to page as far as the state knows: due
        ("page", "escalation", "chat"),
    }
    state = record_deliveries({}, still, first, NOW)
    later = plan_deliveries(still, config, state, NOW + timedelta(minutes=10))
    assert later == []  # within the repeat interval; escalated already
    again = plan_deliveries(still, config, state, NOW + timedelta(minutes=31))
    assert [(d.route, d.reason) for d in again] == [("page", "repeat")]
    assert [t.result.check for t in again[0].items] == ["http.status"]

    # The warning recovers: its episode is forgotten, a new one escalates again.
    state = record_deliveries(state, [tracked("q", "ok", "recovered")], [], NOW)
    assert state["escalated"] == {"chat": []}
    anew = plan_deliveries([tracked("q", "warn", None, 3)], config, state, NOW)
    assert [(d.route, d.reason) for d in anew] == [("page", "escalation")]


def test_targets_under_maintenance_neither_repeat_nor_escalate():
    still = [tracked("http.status", "critical", None, 5), tracked("q", "warn", None, 5)]
    assert plan_deliveries(still, routes(repeat="1s"), {}, NOW, {"app": "window"}) == []


def test_the_single_webhook_is_an_implicit_route_sending_what_it_always_sent():
    notifications = Notifications.model_validate(
        {"webhook": {"url": "http://hooks/T0/SECRET", "min_status": "warn"}}
    )
    (route,) = notifications.routes_in_effect()
    assert route.name == "webhook" and route.channel == "slack"
    run = [
        tracked("http.status", "critical", "failing"),
        tracked("x", "unknown", "failing"),  # below min_status warn: not sent, as before
        tracked("y", "warn", "escalated", 4),
        tracked("z", "ok", "recovered"),
    ]
    (delivery,) = plan_deliveries(run, [route], {}, NOW)
    assert slack_message(delivery, "P2") == webhook_message(run, "P2", "warn")
    critical_only = Notifications.model_validate(
        {"webhook": {"url": "http://h", "min_status": "critical"}}
    ).routes_in_effect()[0]
    assert critical_only.when == ["critical", "recovered"]


def test_pagerduty_events_trigger_and_resolve_and_email_reads_well():
    delivery = Delivery(
        route="page",
        reason="alert",
        items=[tracked("http.status", "critical", "failing"), tracked("pg", "ok", "recovered")],
    )
    trigger, resolve = pagerduty_events(delivery, "key-1")
    assert trigger["event_action"] == "trigger" and trigger["routing_key"] == "key-1"
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "app"
    assert resolve == {
        "routing_key": "key-1",
        "event_action": "resolve",
        "dedup_key": "runbook:pg:app",
    }
    message = email_message(delivery, "P2", "rb@x", ["a@b.c", "d@e.f"])
    assert message["Subject"] == "critical: 1 check(s) failing" and message["To"] == "a@b.c, d@e.f"
    assert "CRITICAL  http.status on app: m" in message.get_content()
    assert "Recovered:\n  pg on app" in message.get_content()


@pytest.mark.parametrize(
    ("routes_config", "error"),
    [
        ([{"name": "a", "when": ["critical"]}], "exactly one channel"),
        (
            [{"name": "a", "when": ["warn"], "slack": {"url": "u"}, "webhook": {"url": "u"}}],
            "exactly one channel",
        ),
        (
            [{"name": "a", "when": ["warn"], "slack": {"url": "u"}, "escalate_to": "b"}],
            "escalate_after and escalate_to go together",
        ),
        (
            [
                {
                    "name": "a",
                    "when": ["warn"],
                    "slack": {"url": "u"},
                    "escalate_after": 2,
                    "escalate_to": "nope",
                }
            ],
            "no route named 'nope'",
        ),
        ([{"name": "a", "when": ["sometimes"], "slack": {"url": "u"}}], "when"),
        (
            [{"name": "a", "when": ["warn"], "email": {"to": ["x@y"], "smtp": "smtp://u:pw@h"}}],
            "put the password in `password`",
        ),
        (
            [{"name": "a", "when": ["warn"], "slack": {"url": "u"}}] * 2,
            "'a' is used twice",
        ),
    ],
)
def test_route_mistakes_name_the_field(routes_config, error):
    with pytest.raises(ValidationError, match=error):
        Config.model_validate({"notifications": {"routes": routes_config}})
