"""The maintenance ledger (runbook.catalog.maintenance): a window run and its actions move only
by their named transitions, on SQLite and PostgreSQL; history() is what procedures plan with;
under_maintenance() is what health runs stay quiet for."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runbook.catalog import (
    Catalog,
    MaintenanceAction,
    MaintenanceLedger,
    MaintenanceLog,
    MaintenanceRun,
    MaintenanceStatus,
    MaintenanceTransitionError,
    Outcome,
    utcnow,
)
from runbook.catalog.maintenance import TRANSITIONS
from runbook.errors import NotFoundError


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        yield MaintenanceLog(catalog)
        catalog.close()
        return
    pg15 = request.getfixturevalue("pg15")
    name = pg15.create_database("rbmaint")
    catalog = Catalog(pg15.url(name))
    yield MaintenanceLog(catalog)
    catalog.close()
    pg15.drop_database(name)


def new_run(run_id: str = "r1", *, targets=("app",), dry_run=False, started=None, minutes=120):
    started = started or utcnow()
    return MaintenanceRun(
        id=run_id,
        window="weekly",
        dry_run=dry_run,
        targets=list(targets),
        procedures=["invalid_indexes", "vacuum"],
        started_at=started,
        ends_at=started + timedelta(minutes=minutes),
        quiet_until=started + timedelta(minutes=minutes + 15),
        host="host-1",
        pid=4242,
    )


def vacuum(obj: str, target: str = "app", **fields) -> MaintenanceAction:
    return MaintenanceAction(
        procedure="vacuum",
        target=target,
        object=obj,
        statement=f"VACUUM (ANALYZE) {obj}",
        reason="dead 38 % of 1.2M rows > 20 %",
        destructive=False,
        estimate_seconds=12.5,
        before={"dead_tuples": 450_000, "table_bytes": 80_000_000},
        **fields,
    )


def test_a_run_records_its_plan_each_outcome_and_its_verdict(ledger):
    run = ledger.start(new_run())
    assert run.status == MaintenanceStatus.RUNNING and run.actions == []
    planned = ledger.record_plan("r1", [vacuum("public.a"), vacuum("public.b")])
    assert [a.outcome for a in planned] == [Outcome.PLANNED, Outcome.PLANNED]
    assert all(a.id is not None for a in planned)
    assert planned[0].before == {"dead_tuples": 450_000, "table_bytes": 80_000_000}

    started = utcnow()
    ledger.start_action("r1", planned[0].id, started)
    done = planned[0].model_copy(
        update={
            "outcome": Outcome.DONE,
            "after": {"dead_tuples": 0, "table_bytes": 79_000_000},
            "started_at": started,
            "finished_at": utcnow(),
            "duration": 3.25,
        }
    )
    ledger.record_outcome("r1", done)
    ledger.record_outcome(
        "r1", planned[1].model_copy(update={"outcome": Outcome.DEFERRED, "error": "too long"})
    )
    ledger.note("r1", "maintenance mode entered")
    ledger.record_silence("r1", "s-1")
    assert ledger.get("r1").silence_id == "s-1"
    ledger.clear_silence("r1")
    finished = ledger.finish("r1", MaintenanceStatus.DONE)

    assert finished.status == MaintenanceStatus.DONE and finished.finished_at is not None
    assert finished.silence_id is None and finished.notes == ["maintenance mode entered"]
    assert finished.counts() == {"done": 1, "deferred": 1}
    rows = finished.json_run()["actions"]
    assert rows[0]["outcome"] == "done" and rows[0]["after"]["dead_tuples"] == 0
    assert rows[0]["duration"] == 3.25
    assert rows[1]["outcome"] == "deferred" and rows[1]["reason"].endswith("; too long")
    assert set(finished.json_run()) >= {
        "id",
        "window",
        "dry_run",
        "status",
        "started_at",
        "finished_at",
        "actions",
    }


def test_an_action_ends_once_and_only_with_a_final_outcome(ledger):
    ledger.start(new_run())
    (action,) = ledger.record_plan("r1", [vacuum("public.a")])
    with pytest.raises(MaintenanceTransitionError, match="not planned"):
        ledger.record_outcome("r1", action)  # still planned: not an outcome
    ledger.record_outcome("r1", action.model_copy(update={"outcome": Outcome.FAILED}))
    with pytest.raises(MaintenanceTransitionError, match="already failed"):
        ledger.record_outcome("r1", action.model_copy(update={"outcome": Outcome.DONE}))
    with pytest.raises(MaintenanceTransitionError, match="no action"):
        ledger.record_outcome("r1", vacuum("public.x", outcome=Outcome.DONE))  # never planned
    with pytest.raises(MaintenanceTransitionError, match="already failed"):
        ledger.start_action("r1", action.id, utcnow())


def test_finishing_needs_every_outcome_and_a_verdict(ledger):
    ledger.start(new_run())
    (action,) = ledger.record_plan("r1", [vacuum("public.a")])
    with pytest.raises(MaintenanceTransitionError, match="1 planned action"):
        ledger.finish("r1", MaintenanceStatus.DONE)
    ledger.record_outcome("r1", action.model_copy(update={"outcome": Outcome.DRY_RUN}))
    with pytest.raises(MaintenanceTransitionError, match="cannot finish to interrupted"):
        ledger.finish("r1", MaintenanceStatus.INTERRUPTED)  # that is interrupt's
    assert ledger.finish("r1", MaintenanceStatus.LOCKED, "app: locked").error == "app: locked"


@pytest.mark.parametrize("transition", sorted(TRANSITIONS))
@pytest.mark.parametrize("status", [MaintenanceStatus.DONE, MaintenanceStatus.INTERRUPTED])
def test_each_transition_moves_only_from_the_statuses_it_names(ledger, transition, status):
    ledger.start(new_run())
    (action,) = ledger.record_plan("r1", [vacuum("public.a")])
    if status == MaintenanceStatus.DONE:
        ledger.record_outcome("r1", action.model_copy(update={"outcome": Outcome.DONE}))
        ledger.finish("r1", MaintenanceStatus.DONE)
    else:
        ledger.interrupt("r1", "cancelled")
    calls = {
        "record_plan": lambda: ledger.record_plan("r1", [vacuum("public.b")]),
        "start_action": lambda: ledger.start_action("r1", action.id, utcnow()),
        "record_outcome": lambda: ledger.record_outcome(
            "r1", action.model_copy(update={"outcome": Outcome.DONE})
        ),
        "note": lambda: ledger.note("r1", "late"),
        "record_silence": lambda: ledger.record_silence("r1", "s-2"),
        "clear_silence": lambda: ledger.clear_silence("r1"),
        "finish": lambda: ledger.finish("r1", MaintenanceStatus.DONE),
        "interrupt": lambda: ledger.interrupt("r1", "again"),
    }
    starts, _ = TRANSITIONS[transition]
    if status in starts:
        calls[transition]()  # allowed (clear_silence of an interrupted run: the next window)
        return
    with pytest.raises(MaintenanceTransitionError, match=f"is {status}: cannot {transition}"):
        calls[transition]()
    assert ledger.get("r1").status == status  # unchanged


def test_interrupt_fails_the_action_in_flight_and_skips_the_rest(ledger):
    ledger.start(new_run())
    first, second, third = ledger.record_plan(
        "r1", [vacuum("public.a"), vacuum("public.b"), vacuum("public.c")]
    )
    ledger.record_outcome("r1", first.model_copy(update={"outcome": Outcome.DONE}))
    ledger.start_action("r1", second.id, utcnow())
    run = ledger.interrupt("r1", "cancelled in step apply")
    assert run.status == MaintenanceStatus.INTERRUPTED and run.error == "cancelled in step apply"
    outcomes = {a.object: (a.outcome, a.error) for a in run.actions}
    assert outcomes["public.a"] == (Outcome.DONE, None)
    assert outcomes["public.b"] == (
        Outcome.FAILED,
        "interrupted while running: cancelled in step apply",
    )
    assert outcomes["public.c"] == (Outcome.SKIPPED, "not started: cancelled in step apply")


def test_history_lists_done_actions_of_a_procedure_newest_first(ledger):
    base = utcnow() - timedelta(days=30)
    for week in range(3):
        run_id = f"w{week}"
        ledger.start(new_run(run_id, started=base + timedelta(days=7 * week)))
        a, b, other = ledger.record_plan(
            run_id,
            [vacuum("public.a"), vacuum("public.b"), vacuum("public.a", target="other")],
        )
        at = base + timedelta(days=7 * week, minutes=5)
        ledger.record_outcome(
            run_id,
            a.model_copy(
                update={
                    "outcome": Outcome.DONE,
                    "duration": float(week),
                    "started_at": at,
                    "finished_at": at,
                }
            ),
        )
        ledger.record_outcome(
            run_id,
            b.model_copy(
                update={"outcome": Outcome.DEFERRED if week else Outcome.DONE, "finished_at": at}
            ),
        )
        ledger.record_outcome(run_id, other.model_copy(update={"outcome": Outcome.DONE}))
        ledger.finish(run_id, MaintenanceStatus.DONE)

    past = ledger.history("app", "vacuum", "public.a")
    assert [a.duration for a in past] == [2.0, 1.0, 0.0]  # newest first
    assert all(a.target == "app" and a.object == "public.a" for a in past)
    assert [a.object for a in ledger.history("app", "vacuum", "public.b")] == ["public.b"]
    assert len(ledger.history("app", "vacuum")) == 4  # every object, done only
    assert len(ledger.history("app", "vacuum", limit=2)) == 2
    assert ledger.history("app", "reindex") == []
    # A ledger without a catalog is an empty one (a first window, a procedure's unit test).
    assert MaintenanceLedger().history("app", "vacuum") == []


def test_under_maintenance_covers_running_real_windows_until_their_quiet_time(ledger):
    now = utcnow()
    ledger.start(new_run("real", targets=("app", "billing")))
    ledger.start(new_run("dry", targets=("reports",), dry_run=True))
    ledger.start(new_run("dead", targets=("old",), started=now - timedelta(hours=5)))
    ledger.start(new_run("done", targets=("done-target",)))
    ledger.finish("done", MaintenanceStatus.DONE)

    covered = ledger.under_maintenance(utcnow())
    assert set(covered) == {"app", "billing"}
    assert covered["app"].id == "real"
    # a crashed run (still "running") stops covering its targets after quiet_until
    assert "old" not in covered
    assert ledger.under_maintenance(now + timedelta(hours=3)) == {}


def test_lookups_list_newest_first_and_unknown_ids_say_so(ledger):
    base = utcnow()
    ledger.start(new_run("old", started=base - timedelta(days=7)))
    ledger.start(new_run("new", targets=("billing",), started=base))
    monthly = new_run("monthly", started=base - timedelta(days=1)).model_copy(
        update={"window": "monthly"}
    )
    ledger.start(monthly)
    assert [r.id for r in ledger.list()] == ["new", "monthly", "old"]
    assert [r.id for r in ledger.list(target="app")] == ["monthly", "old"]
    assert [r.id for r in ledger.list(window="monthly")] == ["monthly"]
    assert [r.id for r in ledger.list(limit=1)] == ["new"]
    with pytest.raises(NotFoundError, match="unknown maintenance run id 'nope'"):
        ledger.get("nope")
    with pytest.raises(MaintenanceTransitionError, match="already started"):
        ledger.start(new_run("new"))
