"""A drill's record and its named transitions (runbook.catalog.drills.DrillLog), on SQLite and
PostgreSQL; and the context manager that drives them (tasks.drills.session.recorded_drill)
with stand-in steps, so every way a drill can end is checked without a drill server."""

from __future__ import annotations

import pytest

from runbook.catalog import (
    Catalog,
    DrillCheck,
    DrillLog,
    DrillResults,
    DrillStatus,
    DrillStep,
    DrillTransitionError,
    utcnow,
)
from runbook.catalog.drills import TRANSITIONS
from runbook.runtime import open_runtime
from tasks.drills.scratch import DrillRefused, ScratchPlace
from tasks.drills.session import INTERRUPTED, DrillRun, StepFailed, call_step, recorded_drill


@pytest.fixture(params=["sqlite", "postgresql"])
def drills(request, tmp_path):
    if request.param == "sqlite":
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        yield DrillLog(catalog)
        catalog.close()
        return
    pg15 = request.getfixturevalue("pg15")
    name = pg15.create_database("rbdrills")
    catalog = Catalog(pg15.url(name))
    yield DrillLog(catalog)
    catalog.close()
    pg15.drop_database(name)


def started(drills: DrillLog, drill_id: str = "d1") -> str:
    drills.start(drill_id, "app", utcnow(), "host-1", 4242, None)
    return drill_id


def results(*checks: tuple[str, bool], step: DrillStep = DrillStep.VALIDATE) -> DrillResults:
    found = DrillResults(backup_id="b1", timings={"download": 1.0, "restore": 2.0})
    found.add(step, [DrillCheck(name=name, ok=ok, detail=name) for name, ok in checks])
    return found


def test_a_drill_that_runs_every_step_passes_with_its_findings(drills):
    drill_id = started(drills)
    assert drills.get(drill_id).status == DrillStatus.RUNNING
    drills.record_scratch(drill_id, "postgres:db:5432|runbook_drill_app_x|/tmp/w")
    for step in (DrillStep.SWEEP, DrillStep.PICK, DrillStep.RESTORE):
        running = drills.enter_step(drill_id, step, results(("backup integrity", True)))
        assert running.failed_step is None  # a running drill has not failed anywhere
    assert running.backup_id == "b1" and running.scratch is not None
    drills.mark_cleaned(drill_id)

    record = drills.finish(drill_id, results(("rows t", True)))

    assert record.status == DrillStatus.PASSED and record.passed
    assert record.failed_step is None and record.error is None and record.scratch is None
    assert record.finished_at is not None and record.timings["restore"] == 2.0
    assert [c.name for c in record.checks] == ["rows t"]


def test_failing_checks_fail_the_drill_in_the_first_step_that_had_one(drills):
    found = results(("rows t", False))  # validate
    found.add(DrillStep.OBJECTIVES, [DrillCheck(name="rto", ok=False, detail="MISSED")])
    drill_id = started(drills)

    record = drills.finish(drill_id, found)

    assert record.status == DrillStatus.FAILED and record.failed_step == DrillStep.VALIDATE
    assert record.error is None  # the checks say why


def test_mark_failed_names_the_step_and_keeps_the_gx_result(drills):
    drill_id = started(drills)
    found = results(("rows t", True))
    found.gx_result = {"success": True, "statistics": {}}
    drills.enter_step(drill_id, DrillStep.RESTORE, found)
    assert drills.gx_result(drill_id) is None  # saved with the verdict only

    record = drills.mark_failed(drill_id, DrillStep.RESTORE, "PermanentError: boom", found)

    assert record.status == DrillStatus.FAILED and record.failed_step == DrillStep.RESTORE
    assert record.error == "PermanentError: boom"
    assert drills.gx_result(drill_id) == {"success": True, "statistics": {}}
    assert drills.list(status="failed")[0].failed_step == "restore"


def test_refused_and_abandoned_drills(drills):
    refused = drills.refuse(started(drills, "r1"), "drill.dsn is the source", DrillResults())
    assert refused.status == DrillStatus.REFUSED and refused.failed_step is None

    dead = started(drills, "k1")
    drills.record_scratch(dead, "embedded:/tmp/w/pg|runbook_drill_app_x|/tmp/w")
    drills.enter_step(dead, DrillStep.VALIDATE, DrillResults())
    abandoned = drills.abandon(dead, "abandoned: the drill's process died")
    # The step the drill was in when its process died, from the row it saved on entering it.
    assert abandoned.status == DrillStatus.FAILED and abandoned.failed_step == "validate"
    assert abandoned.scratch is not None  # what it left behind stays on record


def test_keep_for_forensics_keeps_a_failed_drills_scratch(drills):
    drill_id = started(drills)
    drills.record_scratch(drill_id, "postgres:db:5432|runbook_drill_app_x|/tmp/w")
    drills.mark_failed(drill_id, DrillStep.OBJECTIVES, None, results(("rto", False)))

    kept = drills.keep_for_forensics(drill_id)

    assert kept.kept and kept.scratch == "postgres:db:5432|runbook_drill_app_x|/tmp/w"
    with pytest.raises(DrillTransitionError, match="no scratch left to keep"):
        drills.keep_for_forensics(drill_id)  # once


@pytest.mark.parametrize(
    ("end", "keepable"), [("finish", False), ("mark_failed", True), ("refuse", False)]
)
def test_transitions_a_status_does_not_allow_are_refused(drills, end, keepable):
    drill_id = started(drills)
    drills.record_scratch(drill_id, "postgres:db:5432|runbook_drill_app_x|/tmp/w")
    ends = {
        "finish": lambda: drills.finish(drill_id, DrillResults()),
        "mark_failed": lambda: drills.mark_failed(drill_id, DrillStep.PICK, "x", DrillResults()),
        "refuse": lambda: drills.refuse(drill_id, "x", DrillResults()),
    }
    ends[end]()
    before = drills.get(drill_id)
    moves = {
        "record_scratch": lambda: drills.record_scratch(drill_id, "x|y|z"),
        "enter_step": lambda: drills.enter_step(drill_id, DrillStep.PICK, DrillResults()),
        "mark_cleaned": lambda: drills.mark_cleaned(drill_id),
        "finish": lambda: drills.finish(drill_id, DrillResults()),
        "mark_failed": lambda: drills.mark_failed(drill_id, DrillStep.PICK, "x", DrillResults()),
        "refuse": lambda: drills.refuse(drill_id, "x", DrillResults()),
        "abandon": lambda: drills.abandon(drill_id, "dead"),
    }
    assert set(moves) | {"keep_for_forensics"} == set(TRANSITIONS)
    for name, move in moves.items():
        with pytest.raises(DrillTransitionError, match=f"is {before.status}: cannot {name}"):
            move()
    assert drills.get(drill_id) == before  # nothing moved
    if keepable:  # a failed drill, and only one, may keep its scratch
        assert drills.keep_for_forensics(drill_id).kept
    else:
        with pytest.raises(DrillTransitionError):
            drills.keep_for_forensics(drill_id)
    with pytest.raises(DrillTransitionError, match="already started"):
        started(drills, drill_id)


# --- recorded_drill: every way a drill ends, with stand-in steps ----------------------------


@pytest.fixture
def run(write_config):
    config = write_config({"postgres": [{"name": "app", "dsn": "postgresql://u@127.0.0.1:1/app"}]})
    runtime = open_runtime(config)
    return DrillRun(runtime.config, runtime.catalog, runtime.storage, runtime.config.target("app"))


def raising(exc: BaseException):
    def step(drill) -> None:
        raise exc

    return step


def cleaned(log: list[str]):
    def cleanup(drill) -> None:
        log.append("cleanup")
        drill.workdir.rmdir()  # all a stand-in drill made
        drill.results.timings["cleanup"] = 0.0

    return cleanup


def test_the_record_exists_with_its_scratch_before_the_first_step(run):
    seen = {}

    def pick(drill) -> None:
        seen["record"] = DrillLog(run.catalog).get(drill.id)
        seen["workdir"] = drill.workdir.is_dir()
        drill.results.add(DrillStep.PICK, [DrillCheck(name="backup integrity", ok=True)])

    calls: list[str] = []
    with recorded_drill(run, call_step, cleaned(calls)) as drill:
        drill.step(DrillStep.PICK, pick)

    record = seen["record"]
    assert record.status == DrillStatus.RUNNING
    place = ScratchPlace.parse(record.scratch)
    assert place.database.startswith("runbook_drill_app_") and place.workdir == drill.workdir
    assert place.server == f"embedded:{drill.workdir / 'pg'}"
    assert seen["workdir"] and calls == ["cleanup"]
    assert drill.record.passed and drill.record.scratch is None  # cleaned up, then passed


@pytest.mark.parametrize(
    ("raised", "step", "error"),
    [
        (StepFailed("corrupt"), DrillStep.PICK, None),  # its checks say why
        (RuntimeError("pg_restore failed"), DrillStep.RESTORE, "RuntimeError: pg_restore failed"),
    ],
)
def test_a_step_that_raises_fails_the_drill_in_that_step(run, raised, step, error):
    def fail(drill) -> None:
        if isinstance(raised, StepFailed):  # its reason is among the checks
            drill.results.add(step, [DrillCheck(name="backup integrity", ok=False)])
        raise raised

    calls: list[str] = []
    with recorded_drill(run, call_step, cleaned(calls)) as drill:
        drill.step(DrillStep.SWEEP, lambda d: None)
        drill.step(step, fail)
        drill.step(DrillStep.VALIDATE, lambda d: calls.append("validate"))

    record = drill.record
    assert record.status == DrillStatus.FAILED and record.failed_step == step
    assert record.error == error and calls == ["cleanup"]  # no step after the failing one
    if error:
        assert record.checks[-1].name == "drill" and record.checks[-1].detail == error


def test_a_cleanup_that_fails_fails_a_drill_that_passed(run):
    def cleanup(drill) -> None:
        raise OSError("drop database: connection refused")

    with recorded_drill(run, call_step, cleanup) as drill:
        drill.step(DrillStep.VALIDATE, lambda d: None)
    drill.workdir.rmdir()

    record = drill.record
    assert record.status == DrillStatus.FAILED and record.failed_step == DrillStep.CLEANUP
    assert record.error == "cleanup: OSError: drop database: connection refused"
    assert record.scratch is not None  # what is left to clean stays on record


def test_a_refusal_found_late_is_recorded_refused_and_raised(run):
    calls: list[str] = []
    with pytest.raises(DrillRefused), recorded_drill(run, call_step, cleaned(calls)) as drill:
        drill.step(DrillStep.RESTORE, raising(DrillRefused("source")))

    (record,) = DrillLog(run.catalog).list()
    assert record.status == DrillStatus.REFUSED and record.failed_step is None
    assert record.error == "source" and calls == ["cleanup"]


def test_an_interrupted_drill_is_cleaned_up_and_says_where_it_stopped(run):
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt), recorded_drill(run, call_step, cleaned(calls)) as d:
        d.step(DrillStep.RESTORE, raising(KeyboardInterrupt()))

    (record,) = DrillLog(run.catalog).list()
    assert record.status == DrillStatus.FAILED and record.failed_step == DrillStep.RESTORE
    assert record.error == INTERRUPTED and calls == ["cleanup"]


def test_keep_on_failure_keeps_what_the_restore_step_created(run):
    from dataclasses import replace

    def restore(drill) -> None:
        drill.scratch_created = True
        drill.results.add(DrillStep.RESTORE, [DrillCheck(name="restore", ok=False)])

    calls: list[str] = []
    with recorded_drill(replace(run, keep_on_failure=True), call_step, cleaned(calls)) as drill:
        drill.step(DrillStep.RESTORE, restore)

    assert drill.record.kept and drill.record.failed_step == DrillStep.RESTORE
    assert drill.record.scratch == str(drill.scratch) and calls == []
    assert drill.workdir.is_dir()  # left for a person to look at
    drill.workdir.rmdir()
