"""`runbook deploy` registers prefect.yaml's deployments with a real Prefect server."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from runbook.cli import app

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_deploy_registers_every_deployment_in_the_config_timezone(write_config, monkeypatch):
    import yaml
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from deployments.serve import ROOT

    config = write_config({"files": [{"name": "f", "paths": ["."]}]}, timezone="Asia/Tokyo")
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    result = CliRunner().invoke(app, ["deploy", "--config", str(config)])
    assert result.exit_code == 0, result.output

    declared = {
        d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    }
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    assert declared <= set(deployments)
    nightly = deployments["backup-nightly"]
    assert nightly.schedules[0].schedule.timezone == "Asia/Tokyo"
    assert nightly.job_variables["env"]["RUNBOOK_CONFIG"] == str(config)
    assert deployments["backup-on-demand"].schedules == []
    assert deployments["health-hourly"].parameters == {"only": ["prometheus", "host"]}
    monthly = deployments["drill-monthly"].schedules[0].schedule
    assert "BYDAY=1SU" in monthly.rrule and monthly.timezone == "Asia/Tokyo"
