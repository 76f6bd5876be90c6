"""The maintenance flow end to end through Prefect on a real PostgreSQL 15: a dry run that
changes nothing, a window that backs up first (through the backup flow), enters maintenance
mode (a local application and a local Alertmanager v2), vacuums what is over the thresholds
and proves it; a failed action fails the run and still leaves maintenance mode; operator
mistakes record nothing; and `runbook maintenance plan|run|list|show` in plain text and JSON
with their exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.maintenance import maintenance
from runbook.catalog import BackupStatus, MaintenanceLog, MaintenanceStatus
from runbook.errors import NotFoundError, RunFailed
from runbook.runtime import open_runtime
from tests.support.artifacts import artifact_markdown
from tests.support.bloat import OVER_THRESHOLDS, dead_tuples, fill_bloated
from tests.support.cli import cli
from tests.support.fake_apis import (
    FakeAlertmanager,
    FakeMaintenanceApp,
    fake_alertmanager,  # noqa: F401
    fake_app,  # noqa: F401
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROOT = Path(__file__).resolve().parents[2]  # the checkout
HEADER_SECRET = "Bearer sekrit-header-value-0815"


@pytest.fixture
def app(fake_app: FakeMaintenanceApp) -> FakeMaintenanceApp:  # noqa: F811
    return fake_app


@pytest.fixture
def alertmanager(fake_alertmanager: FakeAlertmanager) -> FakeAlertmanager:  # noqa: F811
    return fake_alertmanager


@pytest.fixture
def bloated(pg15, make_database, write_config, app, alertmanager):
    """(config path, dsn): a bloated database as target `app`, maintenance mode configured."""

    def write(**maintenance: Any) -> tuple[Path, str]:
        dsn = make_database(pg15, seed=False)
        fill_bloated(dsn)
        settings = {
            "lock_timeout": "1s",
            "lock_retries": 0,
            "mode": {
                "enter": {
                    "method": "POST",
                    "url": f"{app.url}/admin/maintenance-mode",
                    "headers": {"Authorization": HEADER_SECRET},
                },
                "exit": {"method": "DELETE", "url": f"{app.url}/admin/maintenance-mode"},
                "alertmanager": {"url": alertmanager.url, "matchers": {"service": "app"}},
            },
            **maintenance,
        }
        config = write_config({"postgres": [{"name": "app", "dsn": dsn}]}, maintenance=settings)
        return config, dsn

    return write


def task_run_names(flow_run_id: Any) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted(r.name for r in runs)


def subflow_names(flow_run_id: Any) -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        flows = {f.id: f.name for f in client.read_flows()}
        parents = {r.id: r.parent_task_run_id for r in runs if r.parent_task_run_id is not None}
        mine = {t.id for t in client.read_task_runs() if t.flow_run_id == flow_run_id}
    return [flows[r.flow_id] for r in runs if parents.get(r.id) in mine]


def test_the_flow_plans_then_applies_a_window_with_a_backup_first(bloated, app, alertmanager):
    config, dsn = bloated()
    before = dead_tuples(dsn)

    # 1. The default is a dry run: the plan is published, nothing changes.
    state = maintenance(window="weekly", return_state=True)
    assert state.is_completed(), state.message
    planned = state.result().run
    assert planned.dry_run and planned.status == MaintenanceStatus.DONE
    vacuum = {a.object: a for a in planned.actions if a.procedure == "vacuum"}
    assert set(vacuum) == OVER_THRESHOLDS  # exactly the tables over the thresholds
    assert {a.outcome.value for a in planned.actions} <= {"dry-run", "skipped"}
    assert all(a.reason for a in planned.actions)
    assert dead_tuples(dsn) == before  # nothing vacuumed
    assert app.calls == [] and alertmanager.requests == []
    assert open_runtime(config).catalog.list_backups() == []  # no backup in a dry run
    plan = artifact_markdown("maintenance-plan")
    assert "public.big" in plan and "public.small" in plan and "estimate" in plan

    # 2. Applied: backup first, maintenance mode, vacuum, verify.
    state = maintenance(window="weekly", dry_run=False, return_state=True)
    assert state.is_completed(), state.message
    run = state.result().run
    assert run.status == MaintenanceStatus.DONE and not run.dry_run
    done = {a.object: a for a in run.actions if a.procedure == "vacuum"}
    assert {o: a.outcome.value for o, a in done.items()} == dict.fromkeys(OVER_THRESHOLDS, "done")
    after = dead_tuples(dsn)
    for table in OVER_THRESHOLDS:
        live, dead = after[table]
        assert dead < 0.05 * live, (table, after[table])
        assert done[table].after["dead_tuples"] < done[table].before["dead_tuples"]
    assert after["public.healthy"] == before["public.healthy"]  # untouched

    backup = open_runtime(config).catalog.latest_backup("app")
    assert backup is not None and backup.status == BackupStatus.VERIFIED
    first_action = min(a.started_at for a in done.values())
    assert backup.finished_at < first_action  # the backup came first
    assert app.calls == ["POST /admin/maintenance-mode", "DELETE /admin/maintenance-mode"]
    (silence,) = alertmanager.silences.values()
    assert silence["matchers"] == [
        {"name": "service", "value": "app", "isRegex": False, "isEqual": True}
    ]
    assert silence["status"]["state"] == "expired"
    assert "pre-maintenance backup of app: verified" in run.notes

    report = artifact_markdown("maintenance-report")
    assert "Maintenance window weekly: DONE" in report and "## Before and after" in report
    assert "dead_tuples" in report
    names = task_run_names(state.state_details.flow_run_id)
    for step in ("plan-app", "lock", "enter", "apply-app", "exit", "verify-app"):
        assert step in names, names
    assert "backup" in subflow_names(state.state_details.flow_run_id)

    ledger = MaintenanceLog(open_runtime(config).catalog)
    assert [r.dry_run for r in ledger.list()] == [False, True]
    text = json.dumps([r.model_dump(mode="json") for r in ledger.list()]) + report + plan
    assert HEADER_SECRET not in text and "sekrit" not in text


def test_a_failed_action_fails_the_run_and_maintenance_mode_is_still_left(
    bloated, app, alertmanager
):
    config, dsn = bloated(windows={"weekly": {"duration": "1h", "pre_backup": False}})
    # A client holds a lock VACUUM needs on public.small, longer than lock_timeout (no retries).
    with psycopg.connect(dsn) as client:
        client.execute("LOCK TABLE small IN SHARE UPDATE EXCLUSIVE MODE")
        state = maintenance(
            window="weekly", procedures=["vacuum"], dry_run=False, return_state=True
        )
    assert state.is_failed()
    assert state.message == "maintenance weekly failed: 1 action(s) failed"
    failed = state.result(raise_on_failure=False)
    assert isinstance(failed, RunFailed)
    run = failed.summary.run
    outcomes = {a.object: (a.outcome.value, a.error) for a in run.actions}
    assert outcomes["public.big"][0] == "done"  # the window went on
    assert outcomes["public.small"][0] == "failed"
    assert (
        "LockNotGranted" in outcomes["public.small"][1]
        and "no lock within 1s" in (outcomes["public.small"][1])
    )
    assert app.calls == ["POST /admin/maintenance-mode", "DELETE /admin/maintenance-mode"]
    assert alertmanager.active() == []
    assert "**failed**" in artifact_markdown("maintenance-report")


def test_operator_mistakes_fail_the_flow_run_and_record_nothing(bloated):
    config, _ = bloated()
    state = maintenance(window="nightly", return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, NotFoundError) and "unknown maintenance window 'nightly'" in str(error)
    assert MaintenanceLog(open_runtime(config).catalog).list() == []


def test_runbook_maintenance_commands_print_json_and_plain_text_with_exit_codes(bloated, app):
    config, dsn = bloated(windows={"weekly": {"duration": "1h", "pre_backup": False}})
    path = str(config)

    code, out, err = cli("maintenance", "plan", "--config", path, "--json")
    assert code == 0, err
    planned = json.loads(out)["run"]
    assert set(planned) >= {
        "id",
        "window",
        "dry_run",
        "status",
        "started_at",
        "finished_at",
        "actions",
    }
    assert planned["dry_run"] is True and planned["window"] == "weekly"
    assert planned["actions"] and all(
        set(a)
        == {
            "procedure",
            "target",
            "object",
            "statement",
            "outcome",
            "reason",
            "before",
            "after",
            "duration",
        }
        for a in planned["actions"]
    )
    assert {a["outcome"] for a in planned["actions"]} <= {"dry-run", "skipped"}
    assert app.calls == []

    # `run` without --apply is a dry run too
    code, out, _ = cli("maintenance", "run", "-t", "app", "--config", path, "--json")
    assert code == 0 and json.loads(out)["run"]["dry_run"] is True
    assert dead_tuples(dsn)["public.big"][1] > 0

    code, out, err = cli("maintenance", "run", "--apply", "--procedure", "vacuum", "--config", path)
    assert code == 0, out + err
    assert "maintenance weekly (applied)" in out and "DONE" in out
    assert "public.big" in out and "dead_tuples" in out and "->" in out
    assert "maintenance mode entered" in out

    runs = MaintenanceLog(open_runtime(config).catalog).list()
    code, out, _ = cli("maintenance", "list", "--config", path)
    assert code == 0 and all(r.id in out for r in runs)
    assert "dry run" in out and "applied" in out
    code, out, _ = cli("maintenance", "list", "--config", path, "--json", "--limit", "1")
    assert code == 0 and [r["id"] for r in json.loads(out)["runs"]] == [runs[0].id]
    code, out, _ = cli("maintenance", "show", runs[0].id, "--config", path, "--json")
    assert code == 0 and json.loads(out)["run"]["actions"][0]["outcome"] == "done"
    code, out, _ = cli("maintenance", "show", runs[0].id, "--config", path)
    assert code == 0 and runs[0].id in out and "public.small" in out

    # exit 1: an action failed (a client holds the lock VACUUM needs)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM big WHERE id % 10 = 7")  # over the thresholds again
        conn.execute("SELECT pg_stat_force_next_flush()")
    with psycopg.connect(dsn) as client:
        client.execute("LOCK TABLE big IN SHARE UPDATE EXCLUSIVE MODE")
        code, out, _ = cli(
            "maintenance", "run", "--apply", "-p", "vacuum", "--config", path, "--json"
        )
    assert code == 1
    assert json.loads(out)["run"]["status"] == "failed"

    # exit 2: the operator's mistakes, one line, nothing recorded
    count = len(MaintenanceLog(open_runtime(config).catalog).list())
    for args, message in [
        (["run", "--window", "nightly"], "unknown maintenance window 'nightly'"),
        (["plan", "-t", "nope"], "unknown target 'nope'"),
        (["run", "-p", "defrag"], "unknown maintenance procedure 'defrag'"),
        (["show", "no-such-run"], "unknown maintenance run id 'no-such-run'"),
    ]:
        code, out, err = cli("maintenance", *args, "--config", path)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert len(MaintenanceLog(open_runtime(config).catalog).list()) == count


def test_list_and_show_read_the_ledger_without_prefect(bloated):
    config, _ = bloated()
    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from runbook.cli import app\n"
        "runner = CliRunner()\n"
        "listed = runner.invoke(app, ['maintenance', 'list', '--config', sys.argv[1], '--json'])\n"
        "shown = runner.invoke(app, ['maintenance', 'show', 'x', '--config', sys.argv[1]])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'prefect')\n"
        "print(json.dumps({'list': listed.exit_code, 'show': shown.exit_code,\n"
        "                  'runs': json.loads(listed.stdout)['runs'], 'loaded': loaded}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert json.loads(out.stdout.splitlines()[-1]) == {
        "list": 0,
        "show": 2,
        "runs": [],
        "loaded": [],
    }
