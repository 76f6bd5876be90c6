"""An operator cancels a running maintenance window (the UI's Cancel, through a real Prefect
server and process worker): the window leaves maintenance mode, expires its Alertmanager
silence and says in the ledger where it stopped, before its process is gone."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from runbook.catalog import Catalog, MaintenanceLog, MaintenanceStatus, Outcome
from runbook.config import load_config
from tests.e2e.test_schedules import deploy, flow_run_logs, start_run, wait_for_end
from tests.support.bloat import fill_bloated
from tests.support.fake_apis import (
    FakeAlertmanager,
    FakeMaintenanceApp,
    fake_alertmanager,  # noqa: F401
    fake_app,  # noqa: F401
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]  # the checkout
STARTED_TIMEOUT = 180.0  # the worker starts a process that imports Prefect and the flow


def applying(catalog: Catalog) -> bool:
    """Is a window's action under way (started, no outcome yet)?"""
    return any(
        a.started_at is not None and a.outcome == Outcome.PLANNED
        for run in MaintenanceLog(catalog).list(status=MaintenanceStatus.RUNNING)
        for a in run.actions
    )


def test_a_cancelled_window_leaves_maintenance_mode_and_says_where_it_stopped(
    prefect_server,
    pg15,
    make_database,
    write_config,
    fake_app: FakeMaintenanceApp,  # noqa: F811
    fake_alertmanager: FakeAlertmanager,  # noqa: F811
):
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    dsn = make_database(pg15, seed=False)
    fill_bloated(dsn)
    config = write_config(
        {"postgres": [{"name": "app", "dsn": dsn}]},
        maintenance={
            # VACUUM of a table a client keeps locked retries for minutes: cancel meanwhile
            "lock_timeout": "1s",
            "lock_retries": 40,
            "windows": {"weekly": {"duration": "1h", "pre_backup": False}},
            "mode": {
                "enter": {"method": "POST", "url": f"{fake_app.url}/admin/maintenance-mode"},
                "exit": {"method": "DELETE", "url": f"{fake_app.url}/admin/maintenance-mode"},
                "alertmanager": {"url": fake_alertmanager.url, "matchers": {"service": "app"}},
            },
        },
    )
    deploy(prefect_server, config)
    worker = prefect_server.start_worker("runbook-process", cwd=ROOT)
    catalog = Catalog(load_config(config).catalog)
    try:
        with psycopg.connect(dsn) as client:
            client.execute("LOCK TABLE small IN SHARE UPDATE EXCLUSIVE MODE")
            run_id = start_run(
                prefect_server,
                "maintenance/maintenance-on-demand",
                {"dry_run": False, "procedures": ["vacuum"]},
            )
            deadline = time.monotonic() + STARTED_TIMEOUT
            while not applying(catalog):
                assert worker.alive(), worker.log()[-3000:]
                assert time.monotonic() < deadline, (
                    f"the window never started applying:\n{worker.log()[-4000:]}"
                )
                time.sleep(0.5)
            assert fake_app.calls == ["POST /admin/maintenance-mode"]
            assert len(fake_alertmanager.active()) == 1

            with prefect_server.settings(), get_client(sync_client=True) as api:
                api.set_flow_run_state(run_id, Cancelling(message="cancelled by the operator"))
            state = wait_for_end(prefect_server, worker, [run_id])[run_id]
    finally:
        runs = MaintenanceLog(catalog).list()
        catalog.close()

    logs = flow_run_logs(prefect_server, run_id)
    assert state.is_cancelled(), (state, logs[-3000:])
    assert fake_app.calls == ["POST /admin/maintenance-mode", "DELETE /admin/maintenance-mode"]
    (silence,) = fake_alertmanager.silences.values()
    assert silence["status"]["state"] == "expired"
    (run,) = runs
    assert run.status == MaintenanceStatus.INTERRUPTED, run
    assert "in step apply" in run.error, (run.error, worker.log()[-6000:])
    assert run.silence_id is None
    outcomes = {a.object: a for a in run.actions}
    assert outcomes["public.small"].outcome == Outcome.FAILED  # in flight when cancelled
    assert outcomes["public.small"].error.startswith("interrupted while running")
    assert outcomes["public.big"].outcome == Outcome.SKIPPED  # never started
    assert "maintenance mode left" in " ".join(run.notes)
