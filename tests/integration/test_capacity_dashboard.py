"""infra/grafana/runbook-capacity.json against what Runbook pushes: every panel's query (and the
resource variable's) names only gauges declared in runbook/metrics.py and every capacity gauge
is charted; then, for real, the capacity gauges of a report are pushed to a Pushgateway
(prometheus-pushgateway 1.5), scraped by Prometheus (2.42), and every panel's query answers
with data there: valid PromQL over the series as they arrive."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from runbook import metrics as m
from runbook.config import PushgatewaySettings
from tasks.capacity.metrics import capacity_metrics
from tasks.capacity.report import CapacityReport, ResourceReport
from tests.support.pushgateway import Stack, pushgateway_stack

DASHBOARD = Path(__file__).parents[2] / "infra" / "grafana" / "runbook-capacity.json"
METRIC = re.compile(r"\b(runbook_[a-z0-9_]+)\b")
CAPACITY = {g.name for g in m.GAUGES.values() if g.name.startswith("runbook_capacity_")}


def panels(items: list[dict]) -> Iterator[dict]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels") or [])


def queries() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in panels(data["panels"]) for t in p.get("targets") or []]
    found += [v["definition"] for v in data["templating"]["list"] if v.get("type") == "query"]
    return found


def test_every_query_names_a_metric_runbook_pushes():
    data = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in panels(data["panels"])]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    charted = [p for p in panels(data["panels"]) if p["type"] != "row"]
    assert charted and all(p.get("targets") for p in charted), "every panel has a query"
    named: set[str] = set()
    for expr in queries():
        names = set(METRIC.findall(expr))
        assert names, f"no Runbook metric in {expr!r}"
        unknown = names - set(m.GAUGES)
        assert not unknown, f"{expr!r} names {unknown}, which Runbook does not push"
        named |= names
    assert CAPACITY == {
        "runbook_capacity_days_until",
        "runbook_capacity_used_ratio",
        "runbook_capacity_status",
        "runbook_capacity_report_timestamp_seconds",
    }
    assert named == CAPACITY, "every capacity gauge is charted, and nothing else"


def report() -> CapacityReport:
    def quantiles(p10, p50, p90):
        return {"p10": p10, "p50": p50, "p90": p90}

    return CapacityReport(
        generated_at=datetime.now(UTC),
        period="month",
        calibration={},
        resources=[
            ResourceReport(
                resource="db1/disk/data",
                kind="host.disk",
                target="db1",
                current=875.0,
                limit=1000.0,
                unit="bytes",
                samples=60,
                status="critical",
                days_until={
                    "80": quantiles(0.0, 0.0, 0.0),
                    "90": quantiles(5.0, 6.0, 7.0),
                    "100": quantiles(23.0, 25.0, 28.0),
                },
            ),
            ResourceReport(
                resource="app/connections",
                kind="postgres.connections",
                target="app",
                current=20.0,
                limit=100.0,
                unit="connections",
                samples=60,
                status="not-growing",
                days_until={t: quantiles(None, None, None) for t in ("80", "90", "100")},
            ),
        ],
    )


def test_pushed_text_has_no_made_up_days():
    text = capacity_metrics(report())
    assert (
        'runbook_capacity_days_until{resource="db1/disk/data",threshold="90",quantile="p10"} 5'
        in text
    )
    assert 'runbook_capacity_days_until{resource="app/connections"' not in text  # null: absent
    assert 'runbook_capacity_used_ratio{resource="app/connections"} 0.2' in text
    assert 'runbook_capacity_status{resource="db1/disk/data"} 4' in text
    assert 'runbook_capacity_status{resource="app/connections"} 1' in text


@pytest.fixture
def prometheus_stack(tmp_path) -> Iterator[Stack]:
    with pushgateway_stack(tmp_path, prometheus=True) as stack:
        yield stack


def query(prometheus: str, expr: str) -> dict:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]


def test_every_panel_answers_from_a_real_pushgateway_and_prometheus(prometheus_stack):
    gateway, prometheus = prometheus_stack.gateway, prometheus_stack.prometheus
    settings = PushgatewaySettings(url=gateway, job="runbook")
    m.push(settings, {"job": "runbook_capacity"}, capacity_metrics(report()))
    deadline = time.monotonic() + 30
    while not query(prometheus, "runbook_capacity_report_timestamp_seconds")["result"]:
        assert time.monotonic() < deadline, "Prometheus never scraped the pushed gauges"
        time.sleep(0.5)

    for expr in queries():
        if expr.startswith("label_values("):
            metric = expr.removeprefix("label_values(").split(",")[0]
            values = httpx.get(
                f"{prometheus}/api/v1/label/resource/values",
                params={"match[]": metric},
                timeout=10,
            ).json()["data"]
            assert values == ["app/connections", "db1/disk/data"], values
            continue
        data = query(prometheus, expr.replace("$resource", ".*"))
        assert data["result"], f"no data for {expr!r}"

    p10 = query(prometheus, 'runbook_capacity_days_until{threshold="90",quantile="p10"}')
    (series,) = p10["result"]
    assert series["metric"]["resource"] == "db1/disk/data" and series["value"][1] == "5"
    assert series["metric"]["job"] == "runbook_capacity"
