"""The DR drill flow and `runbook drill` end to end through Prefect."""

from __future__ import annotations

import json

import psycopg
import pytest

from flows.backup import backup
from runbook.catalog import DrillLog
from runbook.runtime import open_runtime
from tests.support.artifacts import artifact_markdown
from tests.support.cli import cli

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_runbook_drill_json_list_and_exit_codes(pg15, make_database, write_config):
    dsn = make_database(pg15)
    config = write_config({"postgres": [{"name": "app", "dsn": dsn, "rto": "30m", "rpo": "1h"}]})
    assert backup().ok

    code, out, _ = cli("drill", "--target", "app", "--config", str(config), "--json")
    assert code == 0, out
    drill = json.loads(out)["drill"]
    assert drill["passed"] is True and drill["target"] == "app"
    assert drill["fell_back_from"] is None and drill["backup_id"]
    assert 0 < drill["rto_seconds"] < 1800 and 0 <= drill["rpo_seconds"] < 3600
    names = {c["name"] for c in drill["checks"]}
    assert {"backup integrity", "restore", "rows shop.orders", "rto", "rpo"} <= names
    assert all(set(c) >= {"name", "ok", "detail"} for c in drill["checks"])
    markdown = artifact_markdown("drill-report")
    assert "app: PASSED" in markdown and drill["id"] in markdown

    code, out, _ = cli("drills", "list", "--config", str(config), "--json")
    assert code == 0 and json.loads(out)["drills"][0]["id"] == drill["id"]

    code, out, _ = cli("drills", "show", drill["id"], "--config", str(config), "--json")
    shown = json.loads(out)["drill"]
    assert code == 0 and shown["id"] == drill["id"] and shown["checks"] == drill["checks"]
    assert shown["gx_result"]["success"] is True
    assert shown["gx_result"]["statistics"]["evaluated_expectations"] > 0
    code, out, _ = cli("drills", "show", drill["id"], "--config", str(config))
    assert code == 0 and "expectations met (success)" in out
    code, _, err = cli("drills", "show", "no-such-drill", "--config", str(config))
    assert code == 2 and "no-such-drill" in err and "Traceback" not in err

    # A plan pointing at the source database: refused, exit 2, one line.
    refused = write_config({"postgres": [{"name": "app", "dsn": dsn, "drill": {"dsn": dsn}}]})
    code, out, err = cli("drill", "--target", "app", "--config", str(refused))
    assert code == 2 and "source database" in err and "Traceback" not in err

    # Missing the RTO target fails the drill: exit 1.
    strict = write_config({"postgres": [{"name": "app", "dsn": dsn, "rto": "1ms"}]})
    code, out, _ = cli("drill", "--target", "app", "--config", str(strict), "--json")
    failed = json.loads(out)["drill"]
    assert code == 1 and failed["passed"] is False
    assert [c["ok"] for c in failed["checks"] if c["name"] == "rto"] == [False]
    assert failed["failed_step"] == "objectives" and failed["error"] is None
    assert drill["failed_step"] is None and shown["failed_step"] is None
    code, out, _ = cli("drills", "list", "--config", str(strict), "--json")
    assert json.loads(out)["drills"][0]["failed_step"] == "objectives"
    markdown = artifact_markdown("drill-report")
    assert "app: FAILED" in markdown and "failed at step `objectives`" in markdown


def task_runs(flow_run_id: str) -> dict[str, str]:
    """Task run name -> state name, of one flow run, read back from the Prefect API."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[UUID(flow_run_id)])
            )
        )
    return {run.name: run.state.name for run in runs}


def test_each_drill_step_is_a_task_run_and_a_failed_step_shows_failed(
    pg15, make_database, write_config
):
    dsn = make_database(pg15)
    config = str(write_config({"postgres": [{"name": "app", "dsn": dsn}]}))
    assert backup().ok

    def drilled(*args: str) -> tuple[int, dict, dict[str, str]]:
        code, out, _ = cli("drill", "--target", "app", "--config", config, "--json", *args)
        record = json.loads(out)["drill"]
        flow_run_id = DrillLog(open_runtime(config).catalog).get(record["id"]).flow_run_id
        return code, record, task_runs(flow_run_id)

    code, record, steps = drilled()
    assert code == 0 and record["passed"]
    assert steps == {
        f"{step}-app": "Completed"
        for step in ("sweep", "pick", "restore", "validate", "objectives", "cleanup")
    }

    # A sequence behind its column: the validate task run fails, the drill goes on to measure
    # RTO and RPO, and cleans up.
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT setval('shop.invoice_no', 5)")
    assert backup().ok
    code, record, steps = drilled()
    assert code == 1 and record["failed_step"] == "validate" and record["rto_seconds"]
    assert steps["validate-app"] == "Failed" and steps["objectives-app"] == "Completed"
    assert steps["cleanup-app"] == "Completed" and steps["restore-app"] == "Completed"

    # A corrupt backup asked for by id: the pick task run fails; nothing is restored.
    newest = open_runtime(config).catalog.latest_backup("app")
    path = open_runtime(config).config.storage.path / newest.artifacts[0].key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    code, record, steps = drilled("--backup", newest.id)
    assert code == 1 and record["failed_step"] == "pick"
    assert steps == {"sweep-app": "Completed", "pick-app": "Failed", "cleanup-app": "Completed"}
    code, out, _ = cli("drills", "show", record["id"], "--config", config)
    assert code == 0 and "failed at step pick" in out
