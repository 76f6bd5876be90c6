"""Capacity through Prefect and the CLI, after the report: `runbook capacity report` pushes the
days-until gauges to a real Pushgateway (a report of chosen resources does not: it would drop
the others from the group), and `runbook health --only capacity` runs the `capacity` health
check from the registry on the same seeded history (a disk 12.5 % from full that fills 0.5 %
a day: critical, exit 1)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.test_capacity_flow import seed_history
from tests.support.cli import cli
from tests.support.pushgateway import pushgateway_stack

pytestmark = pytest.mark.usefixtures("prefect_harness")


def pushed(gateway: str) -> list[str]:
    text = httpx.get(f"{gateway}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith("runbook_capacity_")]


def test_report_pushes_and_health_check_alerts(write_config, tmp_path):
    with pushgateway_stack(tmp_path, prometheus=False) as stack:
        config = write_config(
            capacity={"min_samples": 14, "folder": "reports"},
            notifications={"pushgateway": {"url": stack.gateway, "job": "runbook"}},
        )
        seed_history(config)

        # a report of one resource: not pushed
        code, out, err = cli(
            "capacity", "report", "--resource", "here/disk/data", "--config", str(config)
        )
        assert code == 1, out + err
        assert pushed(stack.gateway) == []

        # the whole report: every resource's gauges in group job=runbook_capacity
        code, out, err = cli("capacity", "report", "--json", "--config", str(config))
        assert code == 1, out + err
        rows = {r["resource"]: r for r in json.loads(out)["resources"]}
        lines = pushed(stack.gateway)
        p10 = rows["here/disk/data"]["days_until"]["90"]["p10"]
        wanted = (
            'runbook_capacity_days_until{instance="",job="runbook_capacity",quantile="p10",'
            f'resource="here/disk/data",threshold="90"}} {p10:g}'
        )
        assert wanted in lines, lines
        assert any(
            line.startswith(
                'runbook_capacity_status{instance="",job="runbook_capacity",'
                'resource="app/table/public.orders"}'
            )
            for line in lines
        ), lines
        # the table has no limit: no days until, no share used
        assert not any(
            "public.orders" in line
            for line in lines
            if line.startswith(("runbook_capacity_days_until", "runbook_capacity_used_ratio"))
        )

    # the daily health run: the capacity check from the registry, through Prefect
    code, out, err = cli("health", "--only", "capacity", "--json", "--config", str(config))
    assert code == 1, out + err
    checks = json.loads(out)["checks"]
    (disk,) = [c for c in checks if c["target"] == "here"]
    assert disk["check"] == "capacity.days_until_90" and disk["status"] == "critical"
    assert disk["value"] == p10 and "here/disk/data: P10" in disk["message"]
