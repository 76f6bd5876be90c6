"""`runbook deploy` registers Runbook's deployments with a Prefect server: prefect.yaml's plus
one per `backup.schedules` entry, in the config's timezone, with parameter forms an operator
can fill in (descriptions, target names to pick, no internal parameters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import cli
from tests.support.fake_apis import closed_port_url

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def api_url(monkeypatch):
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    monkeypatch.setenv("PREFECT_API_URL", url)
    return url


def deployments_on_server() -> dict:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        return {f"{flows[d.flow_id]}/{d.name}": d for d in client.read_deployments()}


def test_deploy_registers_every_deployment_in_the_config_timezone(write_config, api_url):
    from deployments.spec import declared_deployments

    config = write_config(
        {
            "postgres": [
                {
                    "name": "app",
                    "dsn": "postgresql://u:${NOT_SET_HERE_PW}@db/app",
                    "schedule": "hourly",
                }
            ],
            "redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/0"}],
            "files": [{"name": "f", "paths": ["."], "schedule": "hourly"}],
        },
        timezone="Asia/Tokyo",
        backup={"schedules": {"hourly": "5 * * * *"}},
    )
    code, out, err = cli("deploy", "--config", str(config))
    assert code == 0, out + err

    # One summary, not Prefect's log: a row per deployment, the worker command once.
    declared = {d["name"] for d in declared_deployments()} | {"backup-hourly"}
    for name in declared:
        assert f"/{name}" in out
    assert out.count("prefect worker start --pool runbook-process") == 1
    assert "NOT_SET_HERE_PW is not set in this environment" in out
    assert len(out.splitlines()) < 60

    deployments = deployments_on_server()
    nightly = deployments["backup/backup-nightly"]
    assert nightly.schedules[0].schedule.timezone == "Asia/Tokyo"
    assert nightly.job_variables["env"]["RUNBOOK_CONFIG"] == str(config)
    assert nightly.parameters == {"schedule": "nightly", "verify": True}
    hourly = deployments["backup/backup-hourly"]
    assert hourly.schedules[0].schedule.cron == "5 * * * *"
    assert hourly.schedules[0].schedule.timezone == "Asia/Tokyo"
    assert hourly.parameters["schedule"] == "hourly"
    assert deployments["backup/backup-on-demand"].schedules == []
    assert "logs" not in deployments["health/health-hourly"].parameters["only"]
    assert {"postgres", "redis"} <= set(deployments["health/health-hourly"].parameters["only"])
    monthly = deployments["dr-drill/drill-monthly"].schedules[0].schedule
    assert "BYDAY=1SU" in monthly.rrule and monthly.timezone == "Asia/Tokyo"

    # The Custom run form: every parameter described, the config's names to pick from,
    # nothing internal (the config path is the worker's environment, not a parameter).
    for full_name, deployment in deployments.items():
        if full_name.split("/")[1] not in declared:
            continue
        props = deployment.parameter_openapi_schema["properties"]
        assert "config_path" not in props, full_name
        for name, prop in props.items():
            assert prop.get("description"), f"{full_name}: {name} has no description"
    backup_form = deployments["backup/backup-on-demand"].parameter_openapi_schema["properties"]
    assert backup_form["targets"]["type"] == "array"
    assert backup_form["targets"]["items"]["enum"] == ["app", "cache", "f"]
    assert backup_form["schedule"]["enum"] == ["", "nightly", "hourly"]
    drill_form = deployments["dr-drill/drill-on-demand"].parameter_openapi_schema["properties"]
    assert drill_form["targets"]["items"]["enum"] == ["app", "cache"]  # no files target
    health_form = deployments["health/health-on-demand"].parameter_openapi_schema["properties"]
    assert "backups" in health_form["only"]["items"]["enum"]
    maintenance = deployments["maintenance/maintenance-on-demand"]
    maintenance_form = maintenance.parameter_openapi_schema["properties"]
    assert maintenance_form["targets"]["items"]["enum"] == ["app"]  # PostgreSQL targets
    assert maintenance_form["window"]["enum"] == ["weekly", "monthly"]
    assert maintenance.parameters["dry_run"] is True  # a Quick run changes nothing
    weekly = deployments["maintenance/maintenance-weekly"].schedules[0].schedule
    assert "BYDAY=2SU,3SU,4SU,5SU" in weekly.rrule and weekly.timezone == "Asia/Tokyo"

    # --json: the same, for scripts.
    code, out, _ = cli("deploy", "--config", str(config), "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["work_pool"] == "runbook-process"
    by_name = {d["name"]: d for d in data["deployments"]}
    assert by_name["backup/backup-hourly"]["schedules"] == [
        {"cron": "5 * * * *", "timezone": "Asia/Tokyo"}
    ]
    assert by_name["backup/backup-hourly"]["next_run"].endswith("JST")
    assert by_name["backup/backup-on-demand"]["next_run"] is None


def test_deploy_says_in_one_line_when_the_server_is_down(write_config, monkeypatch):
    config = write_config({"files": [{"name": "f", "paths": ["."]}]})
    monkeypatch.setenv("PREFECT_API_URL", closed_port_url() + "/api")
    code, out, err = cli("deploy", "--config", str(config))
    assert code == 2
    assert "cannot reach the Prefect server at" in err and "server start" in err
    assert "Traceback" not in err + out and len(err.strip().splitlines()) == 1

    # The command as typed in a fresh shell, no server configured anywhere.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(config.parent / "prefect-home")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "runbook"), "deploy", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PREFECT_API_URL is not set" in done.stderr and "Traceback" not in done.stderr


def test_a_removed_schedule_is_reported_as_stale(write_config, api_url):
    with_hourly = write_config(
        {"files": [{"name": "f", "paths": ["."], "schedule": "weekly"}]},
        backup={"schedules": {"weekly": "0 3 * * 6"}},
    )
    code, out, err = cli("deploy", "--config", str(with_hourly))
    assert code == 0, out + err
    without = write_config({"files": [{"name": "f", "paths": ["."]}]})
    code, out, err = cli("deploy", "--config", str(without))
    assert code == 0, out + err
    assert "backup/backup-weekly is no longer declared" in out
    assert "prefect deployment delete backup/backup-weekly" in out
