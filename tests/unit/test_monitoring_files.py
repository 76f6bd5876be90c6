"""The monitoring files under infra/ against the code: every query of every Grafana dashboard and
every alert rule names only metrics Runbook declares and pushes (runbook/metrics.py), the
dashboard shows every backup, drill and health gauge, and each alert says what to do."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from runbook import metrics
from runbook.cli import app
from runbook.config import PushgatewaySettings
from runbook.health import CheckResult, Status
from tasks.health.notify import metrics_text
from tests.support.fake_apis import closed_port_url
from tests.support.promql import metric_names

INFRA = Path(__file__).resolve().parents[2] / "infra"
DASHBOARDS = sorted((INFRA / "grafana").glob("*.json"))
RULES = INFRA / "prometheus" / "runbook-rules.yml"
# The gauges of the backup, drill and health pushes (capacity has its own dashboard).
OURS = ("runbook_backup_", "runbook_drill_", "runbook_check_", "runbook_health_")


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from panels(panel)  # a collapsed row holds its panels


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            yield (
                f"variable {variable['name']}",
                query["query"] if isinstance(query, dict) else query,
            )


def test_the_metric_name_reader_tells_metrics_from_the_rest() -> None:
    expr = (
        'sum by (target) (rate(runbook_a_total{job=~"x|y",target="$target"}[5m] offset 1h))'
        " / on (target) group_left(instance) runbook_b > bool 1e9 and time() - runbook_c"
        " unless label_values(runbook_d, target) or vector(0) * ${factor}"
    )
    assert metric_names(expr) == {"runbook_a_total", "runbook_b", "runbook_c", "runbook_d"}
    assert metric_names("count(runbook_check_status == 3) or vector(0)") == {"runbook_check_status"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_names_only_pushed_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    found = list(queries(dashboard))
    assert found, f"{path.name}: no queries"
    for where, expr in found:
        names = metric_names(expr)
        assert names, f"{path.name}, {where}: names no metric: {expr}"
        unknown = names - set(metrics.GAUGES)
        assert not unknown, f"{path.name}, {where}: not pushed by Runbook: {sorted(unknown)}"
    for panel in panels(dashboard):
        if panel["type"] != "row":
            assert panel.get("targets"), f"{path.name}: panel {panel['title']!r} has no query"


def test_the_dashboard_shows_every_backup_drill_and_health_gauge() -> None:
    dashboard = json.loads((INFRA / "grafana" / "runbook-dashboard.json").read_text())
    shown = set().union(*(metric_names(expr) for _, expr in queries(dashboard)))
    ours = {name for name in metrics.GAUGES if name.startswith(OURS)}
    assert ours - shown == set()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Backups", "DR drills", "Health"]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_names_pushed_metrics_and_says_what_to_do() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == {
        "RunbookBackupOlderThanRPO",
        "RunbookBackupFailed",
        "RunbookBackupVerificationFailed",
        "RunbookDrillFailed",
        "RunbookDrillTooOld",
        "RunbookHealthCheckCritical",
    }
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= set(metrics.GAUGES), (rule["alert"], names)
        assert rule["labels"]["severity"] in ("critical", "warning")
        annotations = rule["annotations"]
        assert "{{ $labels.target }}" in annotations["summary"]
        assert "{{ $labels.target }}" in annotations["description"]
        assert (
            "Remedy: " in annotations["description"] and "`runbook " in annotations["description"]
        )


def test_the_commands_the_alerts_suggest_exist() -> None:
    commands = set()
    for rule in alert_rules():
        text = " ".join(rule["annotations"]["description"].split())
        commands |= set(re.findall(r"`(runbook [^`]+)`", text))
    assert len(commands) >= 6, commands
    for command in commands:
        command = command.replace("{{ $labels.target }}", "app")
        args = command.replace("<id>", "x").replace("<kind>", "backups").split()[1:]
        result = CliRunner().invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (command, result.output)


def test_render_escapes_labels_and_refuses_undeclared_ones() -> None:
    text = metrics.render(
        {
            metrics.CHECK_STATUS: [({"check": "http.status", "target": 'a"b\\c\nd'}, 3)],
            metrics.HEALTH_LAST_RUN: [({}, 1764626800.0)],
            metrics.DRILL_RTO: [],  # unknown: left out, not 0
        }
    )
    assert text.splitlines() == [
        "# HELP runbook_check_status Health check status (0 ok, 1 unknown, 2 warn, 3 critical).",
        "# TYPE runbook_check_status gauge",
        'runbook_check_status{check="http.status",target="a\\"b\\\\c\\nd"} 3',
        "# HELP runbook_health_last_run_timestamp_seconds When the health flow last finished.",
        "# TYPE runbook_health_last_run_timestamp_seconds gauge",
        "runbook_health_last_run_timestamp_seconds 1764626800",
    ]
    with pytest.raises(ValueError, match="runbook_check_status: labels"):
        metrics.render({metrics.CHECK_STATUS: [({"target": "x"}, 1)]})
    with pytest.raises(ValueError, match="declared twice"):
        metrics.gauge("runbook_check_status", "again")


def test_group_paths() -> None:
    assert metrics.group_path({"job": "runbook_backup", "target": "app"}) == (
        "/metrics/job/runbook_backup/target/app"
    )
    # a value with a slash, and an empty one, go in base64 (the Pushgateway's rule)
    assert metrics.group_path({"job": "runbook", "instance": "a/b"}) == (
        "/metrics/job/runbook/instance@base64/YS9i"
    )
    assert metrics.group_path({"job": "runbook", "instance": ""}).endswith("instance@base64/=")
    with pytest.raises(ValueError, match="needs a job"):
        metrics.group_path({"target": "app"})


def test_health_text_carries_each_checks_failing_runs() -> None:
    results = [
        CheckResult(check="backup.age", target="app", status=Status.CRITICAL),
        CheckResult(check="http.status", target="api", status=Status.OK),
    ]
    text = metrics_text(
        results, 1764626800.4, {("backup.age", "app"): 4, ("http.status", "api"): 0}
    )
    assert 'runbook_check_status{check="backup.age",target="app"} 3' in text
    assert 'runbook_check_failing_runs{check="backup.age",target="app"} 4' in text
    assert 'runbook_check_failing_runs{check="http.status",target="api"} 0' in text
    assert "runbook_health_last_run_timestamp_seconds 1764626800\n" in text


def test_a_push_that_cannot_connect_is_a_warning_without_the_password(caplog) -> None:
    url = closed_port_url().replace("http://", "http://ops:pg-pw-9f8e7d@")
    settings = PushgatewaySettings(url=url, timeout="2s")
    with pytest.raises(metrics.PushFailed) as raised:
        metrics.push(settings, {"job": "runbook_backup", "target": "app"}, "x 1\n")
    assert "pg-pw-9f8e7d" not in str(raised.value) and "ConnectError" in str(raised.value)
    with caplog.at_level("WARNING", logger="runbook.metrics"):
        assert (
            metrics.push_or_warn(settings, {"job": "runbook_backup", "target": "app"}, "") is False
        )
    assert "metrics for job=runbook_backup,target=app not pushed" in caplog.text
    assert "pg-pw-9f8e7d" not in caplog.text
