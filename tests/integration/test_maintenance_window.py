"""The maintenance window's framework without Prefect (tasks.maintenance.window.run_window),
with small fake procedures behind the Procedure protocol on a real PostgreSQL 15: the plan and
the dry run, the budget, failed actions, maintenance mode (a local application and a local
Alertmanager v2), cancellation, the per-target lock, the pre-maintenance backup, the cleanup
of a crashed window, and operator mistakes refused before anything is recorded."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from prefect.exceptions import TerminationSignal

from runbook.catalog import (
    MaintenanceAction,
    MaintenanceLog,
    MaintenanceRun,
    MaintenanceStatus,
    Outcome,
    utcnow,
)
from runbook.errors import NotFoundError, RunbookError
from runbook.locks import backup_lock, named_lock
from runbook.runtime import open_runtime
from tasks.maintenance.report import plan_markdown, window_markdown
from tasks.maintenance.run import WindowRequest
from tasks.maintenance.window import choose_window, run_window
from tests.support.fake_apis import (
    FakeAlertmanager,
    FakeMaintenanceApp,
    fake_alertmanager,  # noqa: F401
    fake_app,  # noqa: F401
)

HEADER_SECRET = "Bearer t0ken-never-shown-4711"


class Housekeeping:
    """Stands in for invalid_indexes: in the registry but not a window's choice, so it always
    plans first."""

    name = "invalid_indexes"
    destructive = False

    def __init__(self) -> None:
        self.measured = 0

    def measure(self, context: Any) -> list[str]:
        self.measured += 1
        return [row[0] for row in context.session.query("SELECT 'nothing left behind'")]

    def plan(self, facts: Any, settings: Any, target: Any) -> list[MaintenanceAction]:
        return []

    def apply(self, session: Any, action: MaintenanceAction) -> dict[str, Any]:
        raise AssertionError("nothing was planned")


class Tables:
    """Stands in for vacuum: one action per table it is given (name -> estimated seconds),
    each applied with a real statement through the window's session; a table applied is no
    longer proposed. `failing` tables fail on the server; `interrupt_at` delivers what a
    cancelled flow run gets (Prefect's TerminationSignal) while that table is applied."""

    destructive = False

    def __init__(
        self,
        tables: dict[str, float],
        *,
        name: str = "vacuum",
        failing: tuple[str, ...] = (),
        interrupt_at: str | None = None,
        destructive: bool = False,
    ) -> None:
        self.name = name
        self.tables = tables
        self.failing = failing
        self.interrupt_at = interrupt_at
        self.destructive = destructive
        self.applied: list[str] = []

    def measure(self, context: Any) -> dict[str, float]:
        assert context.session.query("SHOW lock_timeout")[0][0] == "1500ms"
        return {t: e for t, e in self.tables.items() if t not in self.applied}

    def plan(self, facts: dict[str, float], settings: Any, target: Any) -> list[MaintenanceAction]:
        return [
            MaintenanceAction(
                procedure=self.name,
                target=target.name,
                object=table,
                statement=f"SELECT 1 -- {table}",
                reason=f"{table}: dead 40 % > 20 %",
                estimate_seconds=estimate,
                before={"table_bytes": 8_000_000, "dead_tuples": 400},
            )
            for table, estimate in facts.items()
        ]

    def apply(self, session: Any, action: MaintenanceAction) -> dict[str, Any]:
        self.applied.append(action.object)
        if action.object == self.interrupt_at:
            raise TerminationSignal(signal.SIGTERM)
        if action.object in self.failing:
            session.run("SELECT 1 / 0")
        session.run("SELECT 1")
        return {"table_bytes": 6_000_000, "dead_tuples": 0}


@pytest.fixture
def app(fake_app: FakeMaintenanceApp) -> FakeMaintenanceApp:  # noqa: F811
    return fake_app


@pytest.fixture
def alertmanager(fake_alertmanager: FakeAlertmanager) -> FakeAlertmanager:  # noqa: F811
    return fake_alertmanager


def verified(names: list[str]) -> dict[str, str | None]:
    return {name: None for name in names}


@pytest.fixture
def window_config(pg15, make_database, write_config, app, alertmanager):
    """write(**maintenance) -> config path: one PostgreSQL target `app`, maintenance mode
    through the local application and Alertmanager."""

    def write(**maintenance: Any) -> Any:
        dsn = make_database(pg15, seed=False)
        settings = {
            "lock_timeout": "1500ms",
            "wait_for_target": "1s",
            "windows": {"weekly": {"duration": "1h"}},
            "mode": {
                "enter": {
                    "method": "POST",
                    "url": f"{app.url}/admin/maintenance-mode",
                    "headers": {"Authorization": HEADER_SECRET},
                },
                "exit": {"method": "DELETE", "url": f"{app.url}/admin/maintenance-mode"},
                "alertmanager": {
                    "url": alertmanager.url,
                    "matchers": {"service": "app", "env": "prod"},
                    "margin": "10m",
                },
            },
            **maintenance,
        }
        return write_config({"postgres": [{"name": "app", "dsn": dsn}]}, maintenance=settings)

    return write


def window_request(
    config: Any,
    registry: dict[str, Any],
    *,
    procedures: tuple[str, ...] = ("vacuum",),
    dry_run: bool = False,
    **fields: Any,
) -> WindowRequest:
    runtime = open_runtime(config)
    choice = choose_window(runtime.config, "weekly", [], list(procedures), registry)
    fields.setdefault("back_up", verified)
    return WindowRequest(
        runtime=runtime,
        window=choice.window,
        settings=choice.settings,
        targets=choice.targets,
        procedures=choice.procedures,
        registry=registry,
        dry_run=dry_run,
        **fields,
    )


def outcomes(run: MaintenanceRun) -> dict[str, str]:
    return {f"{a.procedure} {a.object}".strip(): a.outcome.value for a in run.actions}


def ledger_text(config: Any) -> str:
    runs = MaintenanceLog(open_runtime(config).catalog).list(limit=None)
    return json.dumps([r.model_dump(mode="json") for r in runs])


def test_a_dry_run_plans_publishes_and_records_every_action_dry_run(
    window_config,
    app,
    alertmanager,
):
    config = window_config()
    housekeeping, tables = Housekeeping(), Tables({"public.orders": 5.0, "public.items": 2.0})
    published: dict[str, str] = {}
    request = window_request(
        config,
        {"invalid_indexes": housekeeping, "vacuum": tables},
        dry_run=True,
        publish=published.__setitem__,
        back_up=lambda names: pytest.fail("a dry run takes no backup"),
    )
    assert request.procedures == ("invalid_indexes", "vacuum")  # housekeeping first

    run = run_window(request)

    assert run.status == MaintenanceStatus.DONE and run.dry_run
    assert outcomes(run) == {"vacuum public.orders": "dry-run", "vacuum public.items": "dry-run"}
    assert housekeeping.measured == 1 and tables.applied == []  # nothing applied
    assert app.calls == [] and alertmanager.requests == []  # no maintenance mode
    plan = published["maintenance-plan"]
    assert "public.orders: dead 40 % > 20 %" in plan and "5.0 s" in plan
    assert "2 action(s) proposed, estimated 7.0 s in all" in plan
    assert MaintenanceLog(request.runtime.catalog).under_maintenance(utcnow()) == {}


def test_a_window_applies_in_maintenance_mode_under_an_alertmanager_silence(
    window_config,
    app,
    alertmanager,
):
    config = window_config()
    seen_during: list[Any] = []

    class Watching(Tables):
        def apply(self, session: Any, action: MaintenanceAction) -> dict[str, Any]:
            # while applying: the app is in maintenance mode, the silence active, the ledger
            # says the target is under maintenance
            ledger = MaintenanceLog(open_runtime(config).catalog)
            seen_during.append(
                (
                    app.in_maintenance,
                    len(alertmanager.active()),
                    set(ledger.under_maintenance(utcnow())),
                )
            )
            return super().apply(session, action)

    watching = Watching({"public.orders": 1.0})
    run = run_window(
        window_request(config, {"invalid_indexes": Housekeeping(), "vacuum": watching})
    )

    assert run.status == MaintenanceStatus.DONE, run.error
    assert outcomes(run) == {"vacuum public.orders": "done"}
    assert seen_during == [(True, 1, {"app"})]
    assert app.calls == ["POST /admin/maintenance-mode", "DELETE /admin/maintenance-mode"]
    assert app.requests[0].headers["authorization"] == HEADER_SECRET  # sent, never shown
    (silence,) = alertmanager.silences.values()
    assert silence["matchers"] == [
        {"name": "service", "value": "app", "isRegex": False, "isEqual": True},
        {"name": "env", "value": "prod", "isRegex": False, "isEqual": True},
    ]
    ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00"))
    assert ends == run.ends_at + timedelta(minutes=10)  # window end + margin
    assert abs((run.ends_at - run.started_at) - timedelta(hours=1)) < timedelta(seconds=1)
    assert silence["status"]["state"] == "expired"  # expired at exit
    assert run.silence_id is None
    (done,) = run.actions
    assert done.before["table_bytes"] == 8_000_000 and done.after["table_bytes"] == 6_000_000
    assert done.duration is not None and done.started_at and done.finished_at
    assert any(
        "re-measured, 1 of 1 treated object(s) now under the thresholds" in n for n in run.notes
    ), run.notes
    assert any("health after the window" in n for n in run.notes), run.notes
    report = window_markdown(run)
    assert "## Before and after" in report and "7.6 MiB" in report and "-1.9 MiB" in report
    assert HEADER_SECRET not in ledger_text(config) + report + plan_markdown(run)


def test_a_window_whose_end_is_near_defers_the_large_action_and_says_so(
    window_config,
    app,
):
    config = window_config(windows={"weekly": {"duration": "2m"}})
    tables = Tables({"public.huge": 3600.0, "public.small": 1.0})
    run = run_window(window_request(config, {"invalid_indexes": Housekeeping(), "vacuum": tables}))

    assert outcomes(run) == {"vacuum public.huge": "deferred", "vacuum public.small": "done"}
    assert tables.applied == ["public.small"]  # the large one was never started
    huge = next(a for a in run.actions if a.object == "public.huge")
    assert huge.started_at is None and huge.duration is None
    assert "deferred: estimated 1h but" in huge.error and "of the window left" in huge.error
    assert run.status == MaintenanceStatus.DONE  # deferring is the budget working, not a failure
    row = next(r for r in run.json_run()["actions"] if r["object"] == "public.huge")
    assert row["outcome"] == "deferred" and "deferred: estimated 1h" in row["reason"]
    assert "**deferred**" in window_markdown(run)


def test_a_failing_action_fails_and_the_window_goes_on_and_still_exits_maintenance_mode(
    window_config,
    app,
    alertmanager,
):
    config = window_config()
    tables = Tables({"public.a": 1.0, "public.b": 1.0, "public.c": 1.0}, failing=("public.b",))
    run = run_window(window_request(config, {"invalid_indexes": Housekeeping(), "vacuum": tables}))

    assert outcomes(run) == {
        "vacuum public.a": "done",
        "vacuum public.b": "failed",
        "vacuum public.c": "done",
    }
    failed = next(a for a in run.actions if a.outcome == Outcome.FAILED)
    assert "DivisionByZero" in failed.error and failed.duration is not None
    assert run.status == MaintenanceStatus.FAILED and run.error == "1 action(s) failed"
    assert app.calls[-1] == "DELETE /admin/maintenance-mode"
    assert alertmanager.active() == []


def test_maintenance_mode_that_cannot_be_entered_applies_nothing_and_still_exits(
    window_config,
    app,
    alertmanager,
):
    config = window_config()
    app.fail = {"POST": 503}
    tables = Tables({"public.a": 1.0})
    run = run_window(window_request(config, {"invalid_indexes": Housekeeping(), "vacuum": tables}))

    assert tables.applied == [] and outcomes(run) == {"vacuum public.a": "skipped"}
    assert run.status == MaintenanceStatus.FAILED
    assert "maintenance mode not entered: POST" in run.error and "HTTP 503" in run.error
    # exit is called even though enter failed half-way; no silence was ever created
    assert app.calls == ["POST /admin/maintenance-mode", "DELETE /admin/maintenance-mode"]
    assert alertmanager.silences == {}
    assert HEADER_SECRET not in ledger_text(config)


def test_a_cancelled_window_exits_maintenance_mode_and_says_where_it_stopped(
    window_config,
    app,
    alertmanager,
):
    config = window_config()
    tables = Tables({"public.a": 1.0, "public.b": 1.0, "public.c": 1.0}, interrupt_at="public.b")
    request = window_request(config, {"invalid_indexes": Housekeeping(), "vacuum": tables})

    with pytest.raises(TerminationSignal):
        run_window(request)

    assert app.calls == ["POST /admin/maintenance-mode", "DELETE /admin/maintenance-mode"]
    (silence,) = alertmanager.silences.values()
    assert silence["status"]["state"] == "expired"
    (run,) = MaintenanceLog(request.runtime.catalog).list()
    assert run.status == MaintenanceStatus.INTERRUPTED and "in step apply" in run.error
    assert outcomes(run) == {
        "vacuum public.a": "done",
        "vacuum public.b": "failed",  # in flight when the run was cancelled
        "vacuum public.c": "skipped",
    }
    assert run.silence_id is None and any("silence" in n and "expired" in n for n in run.notes)


def test_a_backup_holding_the_target_lock_leaves_the_window_locked(
    window_config,
    app,
):
    config = window_config(wait_for_target="1s")
    runtime = open_runtime(config)
    tables = Tables({"public.a": 1.0})
    with named_lock(runtime.config.catalog, backup_lock("app"), 5):  # a backup of app is running
        run = run_window(
            window_request(config, {"invalid_indexes": Housekeeping(), "vacuum": tables})
        )
    assert run.status == MaintenanceStatus.LOCKED
    assert outcomes(run) == {"vacuum public.a": "skipped"} and tables.applied == []
    (skipped,) = run.actions
    assert "locked: another run holds the lock 'backup-app'" in skipped.error
    assert "app: locked" in run.error
    assert app.calls == []  # nothing to apply: no maintenance mode

    # and with the lock free again, the next window runs
    again = run_window(
        window_request(config, {"invalid_indexes": Housekeeping(), "vacuum": tables})
    )
    assert again.status == MaintenanceStatus.DONE and tables.applied == ["public.a"]


def test_a_failed_pre_maintenance_backup_skips_the_destructive_actions(
    window_config,
    app,
):
    config = window_config()
    tables = Tables({"public.a": 1.0})
    sessions = Tables({"pid 4711": 0.1}, name="idle_connections", destructive=True)
    registry = {"invalid_indexes": Housekeeping(), "vacuum": tables, "idle_connections": sessions}
    request = window_request(
        config,
        registry,
        procedures=("vacuum", "idle_connections"),
        back_up=lambda names: {name: "failed at dump: pg_dump exited 1" for name in names},
    )
    run = run_window(request)

    assert outcomes(run) == {"vacuum public.a": "done", "idle_connections pid 4711": "skipped"}
    skipped = next(a for a in run.actions if a.outcome == Outcome.SKIPPED)
    assert skipped.error == "pre-maintenance backup failed: failed at dump: pg_dump exited 1"
    assert sessions.applied == [] and run.status == MaintenanceStatus.DONE
    assert "pre-maintenance backup of app failed: failed at dump" in " ".join(run.notes)

    # configurable per window: stop_on_backup_failure false goes on
    config = window_config(windows={"weekly": {"duration": "1h", "stop_on_backup_failure": False}})
    run = run_window(
        window_request(
            config,
            registry,
            procedures=("idle_connections",),
            back_up=lambda names: {n: "failed" for n in names},
        )
    )
    assert outcomes(run) == {"idle_connections pid 4711": "done"}


def test_the_next_window_closes_a_crashed_one_and_expires_its_silence(
    window_config,
    alertmanager,
):
    config = window_config()
    runtime = open_runtime(config)
    ledger = MaintenanceLog(runtime.catalog)
    dead = subprocess.Popen(["true"])
    dead.wait()
    started = utcnow() - timedelta(minutes=5)
    ledger.start(
        MaintenanceRun(
            id="crashed",
            window="weekly",
            dry_run=False,
            targets=["app"],
            procedures=["vacuum"],
            started_at=started,
            ends_at=started + timedelta(hours=1),
            quiet_until=started + timedelta(hours=1, minutes=10),
            host=socket.gethostname(),
            pid=dead.pid,
        )
    )
    left_open = httpx.post(
        f"{alertmanager.url}/api/v2/silences",
        json={
            "matchers": [{"name": "service", "value": "app", "isRegex": False}],
            "startsAt": "2026-01-01T00:00:00Z",
            "endsAt": "2099-01-01T00:00:00Z",
        },
    ).json()["silenceID"]
    ledger.record_silence("crashed", left_open)
    assert set(ledger.under_maintenance(utcnow())) == {"app"}  # until the next window looks

    run = run_window(
        window_request(config, {"invalid_indexes": Housekeeping(), "vacuum": Tables({})})
    )

    crashed = ledger.get("crashed")
    assert crashed.status == MaintenanceStatus.INTERRUPTED and crashed.silence_id is None
    assert "its process died" in crashed.error
    assert alertmanager.silences[left_open]["status"]["state"] == "expired"
    assert any(f"expired silence {left_open}" in n for n in run.notes), run.notes
    assert run.status == MaintenanceStatus.DONE and run.actions == []


@pytest.mark.parametrize(
    ("window", "targets", "procedures", "error", "message"),
    [
        ("nightly", [], [], NotFoundError, "unknown maintenance window 'nightly' (maintenance"),
        ("weekly", ["nope"], [], NotFoundError, "unknown target 'nope'"),
        ("weekly", ["cache"], [], RunbookError, "'cache' is a redis target"),
        ("weekly", [], ["defrag"], RunbookError, "unknown maintenance procedure 'defrag'"),
    ],
)
def test_operator_mistakes_are_refused_before_anything_is_recorded(
    pg15, write_config, window, targets, procedures, error, message
):
    config = write_config(
        {
            "postgres": [{"name": "app", "dsn": pg15.dsn("postgres")}],
            "redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/0"}],
        }
    )
    runtime = open_runtime(config)
    registry = {"invalid_indexes": Housekeeping(), "vacuum": Tables({})}
    with pytest.raises(error, match=message.replace("(", r"\(")):
        choose_window(runtime.config, window, targets, procedures, registry)
    assert MaintenanceLog(runtime.catalog).list() == []


def test_the_window_holds_its_lock_so_a_backup_waits(window_config):
    """The other way round: while a window applies, a backup of its target cannot start."""
    config = window_config()
    runtime = open_runtime(config)
    blocked: list[bool] = []

    class Probing(Tables):
        def apply(self, session: Any, action: MaintenanceAction) -> dict[str, Any]:
            def try_backup_lock() -> None:
                try:
                    with named_lock(runtime.config.catalog, backup_lock("app"), 0.3):
                        blocked.append(False)
                except Exception:  # noqa: BLE001 - LockTimeout: the window holds it
                    blocked.append(True)

            probe = threading.Thread(target=try_backup_lock)
            probe.start()
            probe.join()
            return super().apply(session, action)

    run = run_window(
        window_request(
            config, {"invalid_indexes": Housekeeping(), "vacuum": Probing({"public.a": 1.0})}
        )
    )
    assert run.status == MaintenanceStatus.DONE and blocked == [True]
    with named_lock(runtime.config.catalog, backup_lock("app"), 0.3):  # released afterwards
        pass


@pytest.mark.parametrize("server", ["pg15", "pg18"])
def test_with_the_real_vacuum_a_near_window_end_defers_the_large_table(
    request, server, make_database, write_config
):
    from tasks.maintenance.registry import PROCEDURES
    from tests.support.bloat import dead_tuples, fill_bloated

    pg = request.getfixturevalue(server)
    dsn = make_database(pg, seed=False)
    fill_bloated(dsn)
    config = write_config(
        {"postgres": [{"name": "app", "dsn": dsn}]},
        maintenance={"windows": {"weekly": {"duration": "10m", "pre_backup": False}}},
    )
    runtime = open_runtime(config)
    with psycopg.connect(dsn) as conn:
        table_bytes, index_bytes = conn.execute(
            "SELECT pg_table_size('big'), pg_indexes_size('big')"
        ).fetchone()
    # The ledger remembers that vacuuming public.big took two hours last time.
    ledger = MaintenanceLog(runtime.catalog)
    last_week = utcnow() - timedelta(days=7)
    ledger.start(
        MaintenanceRun(
            id="last-week",
            window="weekly",
            dry_run=False,
            targets=["app"],
            procedures=["vacuum"],
            started_at=last_week,
            ends_at=last_week + timedelta(hours=4),
            quiet_until=last_week + timedelta(hours=4),
            host="h",
            pid=1,
        )
    )
    (past,) = ledger.record_plan(
        "last-week",
        [
            MaintenanceAction(
                procedure="vacuum",
                target="app",
                object="public.big",
                statement="VACUUM (ANALYZE) public.big",
                reason="",
                before={"mode": "plain", "table_bytes": table_bytes, "index_bytes": index_bytes},
            )
        ],
    )
    ledger.record_outcome(
        "last-week",
        past.model_copy(
            update={"outcome": Outcome.DONE, "duration": 7200.0, "finished_at": last_week}
        ),
    )
    ledger.finish("last-week", MaintenanceStatus.DONE)
    before = dead_tuples(dsn)

    run = run_window(window_request(config, PROCEDURES, back_up=None))

    assert outcomes(run) == {"vacuum public.big": "deferred", "vacuum public.small": "done"}
    big = next(a for a in run.actions if a.object == "public.big")
    assert big.estimate_seconds > 3600 and "deferred: estimated" in big.error
    after = dead_tuples(dsn)
    assert after["public.big"] == before["public.big"]  # never started
    live, dead = after["public.small"]
    assert dead < 0.05 * live  # treated
    assert after["public.healthy"] == before["public.healthy"]  # untouched
    assert run.status == MaintenanceStatus.DONE


def test_a_target_that_cannot_be_measured_fails_the_plan_without_its_password(
    write_config,
    app,  # noqa: F811
):
    from tests.support.fake_apis import closed_port_url

    password = "pl4n-s3cret-Pa55"
    port = closed_port_url().rsplit(":", 1)[1]
    config = write_config(
        {"postgres": [{"name": "app", "dsn": f"postgresql://u:{password}@127.0.0.1:{port}/db"}]},
        maintenance={"windows": {"weekly": {"duration": "1h"}}},
    )
    published: dict[str, str] = {}
    run = run_window(
        window_request(
            config,
            {"invalid_indexes": Housekeeping(), "vacuum": Tables({})},
            dry_run=True,
            publish=published.__setitem__,
        )
    )
    (failed,) = run.actions
    assert (failed.procedure, failed.outcome) == ("connect", Outcome.FAILED)
    assert "127.0.0.1" in failed.error  # says where, not with what
    assert run.status == MaintenanceStatus.FAILED  # a plan that could not measure
    text = ledger_text(config) + window_markdown(run) + published["maintenance-plan"]
    assert password not in text and app.calls == []
