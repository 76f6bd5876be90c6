"""The health aggregate of the catalog on SQLite and on PostgreSQL: a run's transitions, its
checks stored with their failing streaks and read back as the same model."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runbook.catalog import (
    Catalog,
    HealthHistory,
    HealthRunStatus,
    HealthRunTransitionError,
    StoredCheck,
    utcnow,
)
from runbook.errors import NotFoundError
from runbook.health import CheckResult, Status, Tracked, track


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request, tmp_path, pg15):
    if request.param == "sqlite":
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        yield HealthHistory(catalog)
        catalog.close()
        return
    name = pg15.create_database("rbhealth")
    catalog = Catalog(pg15.url(name))
    yield HealthHistory(catalog)
    catalog.close()
    pg15.drop_database(name)


def result(status: Status, value: float | int | str | bool | None = None) -> CheckResult:
    return CheckResult(
        check="postgres.connections",
        target="app",
        status=status,
        value=value,
        unit="%",
        threshold="warn > 80%, critical > 95%",
        message="connections in use",
        duration=0.125,
    )


def test_a_run_starts_records_its_checks_and_finishes(history):
    now = utcnow()
    run = history.start("r1", now, ["postgres", "http"], "flow-1")
    assert run.status is HealthRunStatus.RUNNING
    assert run.kinds == ["postgres", "http"] and run.finished_at is None

    tracked = track([result(Status.CRITICAL, 97.5)], {}, {"critical": 1})
    stored = history.record("r1", now, tracked)
    assert stored[0].streak == 1 and stored[0].notified

    finished = history.finish("r1", Status.CRITICAL, "P2")
    assert finished.status is HealthRunStatus.CRITICAL and finished.severity == "P2"
    assert finished.finished_at is not None and finished.finished_at >= now
    assert history.run("r1") == finished

    [back] = history.history("postgres.connections", "app")
    assert isinstance(back, StoredCheck) and isinstance(back, CheckResult)
    assert back.status is Status.CRITICAL
    assert (back.run_id, back.at, back.streak, back.notified) == ("r1", now, 1, True)
    # Everything but the unit (the catalog keeps none) reads back as it was measured.
    assert back.model_dump(include=set(CheckResult.model_fields) - {"unit"}) == result(
        Status.CRITICAL, 97.5
    ).model_dump(exclude={"unit"})


def test_streaks_carry_over_runs_and_values_keep_their_type(history):
    start = utcnow()
    for i, (status, value) in enumerate(
        [(Status.WARN, 12), (Status.WARN, True), (Status.OK, "fine"), (Status.WARN, None)]
    ):
        at = start + timedelta(minutes=i)
        history.start(f"r{i}", at, [], None)
        previous = history.last_results([("postgres.connections", "app")])
        tracked = track([result(status, value)], previous, {"warn": 2})
        history.record(f"r{i}", at, tracked)
        history.finish(f"r{i}", status, None)

    rows = history.history("postgres.connections", "app")
    assert [(r.run_id, r.status, r.streak, r.notified, r.value) for r in rows] == [
        ("r3", "warn", 1, False, None),
        ("r2", "ok", 0, False, "fine"),
        ("r1", "warn", 2, True, True),
        ("r0", "warn", 1, False, 12),
    ]
    assert type(rows[-1].value) is int
    assert history.run("r0").kinds == []  # every kind
    assert (
        history.last_results([("postgres.connections", "app")])[("postgres.connections", "app")]
        == rows[0]
    )


def test_transitions_only_from_running(history):
    now = utcnow()
    history.start("r1", now, [], None)
    history.finish("r1", Status.OK, None)
    with pytest.raises(
        HealthRunTransitionError, match="cannot finish health run 'r1': it is ok already"
    ):
        history.finish("r1", Status.CRITICAL, "P2")
    tracked = [Tracked(result=result(Status.OK), streak=0, notified=False)]
    with pytest.raises(HealthRunTransitionError, match="cannot record checks of health run 'r1'"):
        history.record("r1", now, tracked)
    assert history.history("postgres.connections", "app") == []
    assert history.run("r1").status is HealthRunStatus.OK
    with pytest.raises(HealthRunTransitionError, match="health run 'r1' was already started"):
        history.start("r1", now, [], None)
    with pytest.raises(NotFoundError, match="unknown health run id 'nope'"):
        history.finish("nope", Status.OK, None)


def test_check_state_round_trips(history):
    assert history.get_state("logs:app") == {}
    history.put_state("logs:app", {"/var/log/app.log": {"offset": 10}})
    history.put_state("logs:app", {"/var/log/app.log": {"offset": 42}})
    assert history.get_state("logs:app") == {"/var/log/app.log": {"offset": 42}}
