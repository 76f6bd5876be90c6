"""Monitoring end to end against real servers (Debian packages, started by the fixtures): the
backup, verify, drill and health flows push to a real Pushgateway; a real Prometheus scrapes
it (honor_labels) with infra/prometheus/runbook-rules.yml loaded, and the series, the
dashboard's queries and the alerts are read back from Prometheus. A Pushgateway that cannot be
reached leaves a backup verified."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest

from flows.backup import backup
from flows.daily_health import daily_health
from flows.dr_drill import dr_drill
from flows.verify_backups import verify_backups
from runbook import metrics
from runbook.catalog import BackupStatus
from runbook.config import PushgatewaySettings
from runbook.runtime import open_runtime
from tests.support.fake_apis import closed_port_url
from tests.unit.test_monitoring_files import OURS, queries

pytestmark = pytest.mark.usefixtures("prefect_harness")
DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "runbook-dashboard.json"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # targets of other tests push to the same gateway


def one(result: list[tuple[dict[str, str], float]]) -> tuple[dict[str, str], float]:
    assert len(result) == 1, result
    return result[0]


def firing(prometheus, alert: str, target: str) -> list[tuple[dict[str, str], float]]:
    return prometheus.wait_for(
        f'ALERTS{{alertname="{alert}",target="{target}",alertstate="firing"}}', bool
    )


def test_flows_push_and_prometheus_sees_series_and_alerts(
    pg15, make_database, write_config, real_pushgateway, real_prometheus
):
    app = unique("app")
    config = write_config(
        {"postgres": [{"name": app, "dsn": make_database(pg15), "rpo": "6h", "rto": "30m"}]},
        notifications={"pushgateway": {"url": real_pushgateway.url, "job": "runbook"}},
    )
    catalog = open_runtime(config).catalog

    # 1. A backup: its group on the gateway, then its series in Prometheus with the job and
    # target of the grouping key (honor_labels) and the catalog's values.
    summary = backup(targets=[app])
    record = summary.backups[0]
    assert record.status == BackupStatus.VERIFIED
    group = real_pushgateway.group(job="runbook_backup", target=app)
    assert group is not None and "runbook_backup_last_result" in group
    verification = catalog.latest_verification(app)
    expected = {
        "runbook_backup_last_result": 1,
        "runbook_backup_verification_last_result": 1,
        "runbook_backup_rpo_target_seconds": 6 * 3600,
        "runbook_backup_last_verified_timestamp_seconds": record.finished_at.timestamp(),
        "runbook_backup_last_timestamp_seconds": record.finished_at.timestamp(),
        "runbook_backup_verification_last_timestamp_seconds": verification.finished_at.timestamp(),
        "runbook_backup_last_verified_bytes": record.bytes_stored,
    }
    for name, value in expected.items():
        labels, seen = one(real_prometheus.wait_for(f'{name}{{target="{app}"}}', bool))
        assert labels["job"] == "runbook_backup" and labels["target"] == app, labels
        assert seen == pytest.approx(value, abs=1e-3), name

    # 2. A drill: its own group (job=runbook_drill), beside the backup group, not over it.
    drilled = dr_drill(targets=[app]).drills[0]
    assert drilled.passed
    expected = {
        "runbook_drill_last_result": 1,
        "runbook_drill_last_timestamp_seconds": drilled.finished_at.timestamp(),
        "runbook_drill_rto_seconds": drilled.rto_seconds,
        "runbook_drill_rpo_seconds": drilled.rpo_seconds,
        "runbook_drill_rto_target_seconds": 1800,
        "runbook_drill_max_age_seconds": 35 * 86400,
    }
    for name, value in expected.items():
        labels, seen = one(real_prometheus.wait_for(f'{name}{{target="{app}"}}', bool))
        assert labels["job"] == "runbook_drill" and labels["target"] == app, labels
        assert seen == pytest.approx(value, abs=1e-3), name
    assert real_pushgateway.group(job="runbook_backup", target=app) is not None

    # 3. Damage the archive in storage: the verify flow fails, pushes 0, and the
    # verification alert fires for this target in the real Prometheus.
    path = open_runtime(config).config.storage.path / record.artifacts[0].key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert verify_backups(targets=[app], return_state=True).is_failed()
    real_prometheus.wait_for(
        f'runbook_backup_verification_last_result{{target="{app}"}} == 0', bool
    )
    [(labels, _)] = firing(real_prometheus, "RunbookBackupVerificationFailed", app)
    assert labels["severity"] == "critical" and labels["job"] == "runbook_backup"
    # no verified backup is left: "never" is older than any RPO
    real_prometheus.wait_for(
        f'runbook_backup_last_verified_timestamp_seconds{{target="{app}"}} == 0', bool
    )
    firing(real_prometheus, "RunbookBackupOlderThanRPO", app)
    alert = next(
        a
        for a in real_prometheus.alerts()
        if a["labels"]["alertname"] == "RunbookBackupOlderThanRPO" and a["labels"]["target"] == app
    )
    assert alert["annotations"]["description"].startswith(f"{app} has no verified backup at all.")
    assert f"`runbook backup --target {app}`" in alert["annotations"]["description"]

    # 4. Three health runs with that backup critical: the failing streak is pushed, and the
    # health alert fires at the third run (health group: job=runbook, instance=this host).
    host = socket.gethostname()
    for run in (1, 2, 3):
        assert daily_health(only=["backups"], return_state=True).is_failed()
        real_prometheus.wait_for(
            f'runbook_check_failing_runs{{check="backup.age",target="{app}"}} == {run}', bool
        )
        if run < 3:
            assert not real_prometheus.query(
                f'ALERTS{{alertname="RunbookHealthCheckCritical",target="{app}"}}'
            )
    [(labels, _)] = firing(real_prometheus, "RunbookHealthCheckCritical", app)
    assert labels["check"] == "backup.age" and labels["instance"] == host
    assert labels["job"] == "runbook"
    _, status = one(
        real_prometheus.query(f'runbook_check_status{{check="backup.age",target="{app}"}}')
    )
    assert status == 3
    real_prometheus.wait_for(
        f'runbook_health_last_run_timestamp_seconds{{instance="{host}"}}', bool
    )

    # 5. Every backup, drill and health gauge Runbook declares was pushed and scraped during
    # this test (the size of a verified backup only until it was found corrupt), and every
    # dashboard query is valid PromQL that answers for this target.
    ours = {n for n in metrics.GAUGES if n.startswith(OURS)}
    scraped = {
        n
        for n in ours
        if real_prometheus.query(f'last_over_time({n}{{target="{app}"}}[10m])')
        or (n.startswith("runbook_health_") and real_prometheus.query(n))
    }
    assert ours - scraped == set()
    for where, expr in queries(json.loads(DASHBOARD.read_text())):
        if expr.startswith("label_values("):  # the $target variable's choices
            metric = expr.removeprefix("label_values(").split(",")[0]
            assert app in real_prometheus.label_values("target", metric), where
            continue
        answer = real_prometheus.query(expr.replace("$target", app))
        if "runbook_backup_last_verified_bytes" not in expr:
            assert answer, f"{where}: {expr} answered nothing"


def test_an_old_backup_timestamp_fires_the_rpo_alert_and_a_fresh_one_does_not(
    real_pushgateway, real_prometheus
):
    old, fresh = unique("old"), unique("fresh")
    now = time.time()
    for target, ended in ((old, now - 2 * 86400), (fresh, now - 600)):
        text = metrics.render(
            {
                metrics.BACKUP_LAST_VERIFIED: [({}, ended)],
                metrics.BACKUP_RPO_TARGET: [({}, 3600)],
            }
        )
        settings = PushgatewaySettings(url=real_pushgateway.url)
        metrics.push(settings, {"job": "runbook_backup", "target": target}, text)
    [(labels, _)] = firing(real_prometheus, "RunbookBackupOlderThanRPO", old)
    assert labels["severity"] == "critical" and labels["job"] == "runbook_backup"
    alert = next(
        a
        for a in real_prometheus.alerts()
        if a["labels"]["alertname"] == "RunbookBackupOlderThanRPO" and a["labels"]["target"] == old
    )
    assert alert["annotations"]["summary"] == (
        f"Backups of {old}: newest verified backup older than its RPO"
    )
    assert f"The newest verified backup of {old} ended 2d" in alert["annotations"]["description"]
    # the fresh target's series are scraped, and its rule evaluated without firing
    real_prometheus.wait_for(f'runbook_backup_rpo_target_seconds{{target="{fresh}"}}', bool)
    group = next(g for g in real_prometheus.rule_groups() if g["name"] == "runbook")
    assert {r["health"] for r in group["rules"]} == {"ok"}
    assert not real_prometheus.query(f'ALERTS{{target="{fresh}"}}')


def test_an_unreachable_pushgateway_leaves_the_backup_verified(
    pg15, make_database, write_config, caplog
):
    config = write_config(
        {"postgres": [{"name": "app", "dsn": make_database(pg15)}]},
        notifications={"pushgateway": {"url": closed_port_url(), "timeout": "2s"}},
    )
    with caplog.at_level("WARNING"):
        state = backup(return_state=True)
    assert state.is_completed(), state.message
    record = state.result().backups[0]
    assert record.status == BackupStatus.VERIFIED
    assert open_runtime(config).catalog.get_backup(record.id).status == BackupStatus.VERIFIED
    assert "metrics for job=runbook_backup,target=app not pushed" in caplog.text
    assert "ConnectError" in caplog.text
