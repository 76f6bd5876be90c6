"""Capacity end to end through Prefect: `runbook capacity collect` measures a real PostgreSQL
15 target into the catalog; `runbook capacity report` forecasts a seeded history (a table that
grows 1 MB a day with a VACUUM FULL in the maintenance ledger, a disk close to full), ranks
it, publishes the artifact and writes the HTML with its charts embedded; plain and --json
output and the exit codes (1: a resource is critical, 2: the operator's mistake)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from datetime import UTC, datetime, timedelta

import pytest

from runbook.catalog import (
    MaintenanceAction,
    MaintenanceLog,
    MaintenanceRun,
    MaintenanceStatus,
    MetricSamples,
    Outcome,
    Sample,
)
from runbook.runtime import open_runtime
from tests.support.artifacts import artifact_markdown
from tests.support.cli import cli

pytestmark = pytest.mark.usefixtures("prefect_harness")

MB = 1 << 20


def seed_history(config_path) -> datetime:
    """60 days: public.orders grows 1 MB a day and a VACUUM FULL took 20 MB back on day 40
    (in the ledger); a disk at 87.5 % of 1 TB that fills 0.5 % a day. Returns the vacuum's
    time."""
    catalog = open_runtime(config_path).catalog
    now = datetime.now(UTC)
    vacuum_at = now - timedelta(days=20, hours=3)
    samples = []
    for day in range(60):
        at = now - timedelta(days=60 - day)
        orders = 100 * MB + day * MB - (20 * MB if at > vacuum_at else 0)
        samples.append(
            Sample(
                resource="app/table/public.orders",
                kind="postgres.table",
                target="app",
                value=orders,
                unit="bytes",
                time=at,
            )
        )
        disk = (0.58 + 0.005 * day) * 1e12
        samples.append(
            Sample(
                resource="here/disk/data",
                kind="host.disk",
                target="here",
                value=disk,
                limit=1e12,
                unit="bytes",
                time=at,
            )
        )
    MetricSamples(catalog).record(samples)

    log = MaintenanceLog(catalog)
    run = MaintenanceRun(
        id="m1",
        window="monthly",
        dry_run=False,
        targets=["app"],
        procedures=["vacuum"],
        started_at=vacuum_at - timedelta(minutes=5),
        ends_at=vacuum_at + timedelta(hours=4),
        quiet_until=vacuum_at + timedelta(hours=4),
        host="h",
        pid=1,
    )
    log.start(run)
    (action,) = log.record_plan(
        "m1",
        [
            MaintenanceAction(
                procedure="vacuum",
                target="app",
                object="public.orders",
                statement="VACUUM FULL public.orders",
                reason="dead 40 %",
                before={"table_bytes": 140 * MB},
            )
        ],
    )
    log.record_outcome(
        "m1",
        action.model_copy(
            update={
                "outcome": Outcome.DONE,
                "after": {"table_bytes": 120 * MB},
                "started_at": vacuum_at - timedelta(minutes=1),
                "finished_at": vacuum_at,
            }
        ),
    )
    log.finish("m1", MaintenanceStatus.DONE)
    return vacuum_at


def test_collect_then_report_through_prefect(pg15, make_database, write_config, tmp_path):
    dsn = make_database(pg15)
    config = write_config(
        {"postgres": [{"name": "app", "dsn": dsn}]},
        capacity={
            "min_samples": 14,
            "lead_time": "30d",
            "plan": {"monthly_growth": 0.2},
            "folder": "reports",
        },
    )
    vacuum_at = seed_history(config)

    # 1. collect: the real target measured into the catalog
    code, out, err = cli("capacity", "collect", "--config", str(config))
    assert code == 0, out + err
    assert "postgres app:" in out and "new samples" in out
    kept = {r.latest.resource for r in MetricSamples(open_runtime(config).catalog).resources()}
    assert {"app/database", "app/connections", "app/table/public.orders"} <= kept

    # 2. report --json --html: ranked, the disk first and critical (exit 1)
    page = tmp_path / "out" / "capacity.html"
    code, out, err = cli(
        "capacity", "report", "--json", "--html", str(page), "--config", str(config)
    )
    assert code == 1, out + err  # the disk is critical
    data = json.loads(out)
    assert set(data) >= {"generated_at", "resources", "calibration"}
    assert set(data["calibration"]) >= {"nominal", "observed", "cutoffs"}
    assert data["calibration"]["cutoffs"] > 0
    rows = {r["resource"]: r for r in data["resources"]}
    first = data["resources"][0]
    assert first["resource"] == "here/disk/data" and first["status"] == "critical"
    for key in (
        "resource",
        "kind",
        "target",
        "current",
        "limit",
        "unit",
        "samples",
        "status",
        "days_until",
        "act_by",
        "events",
    ):
        assert key in first
    assert set(first["days_until"]) == {"80", "90", "100"}
    assert first["days_until"]["80"]["p50"] == 0.0  # already over 80 %
    p10 = first["days_until"]["100"]["p10"]
    assert 20 <= p10 <= 30  # 12.5 % of 1 TB at 0.5 % a day: 25 days
    assert first["act_by"] == datetime.now(UTC).date().isoformat()  # act now

    orders = rows["app/table/public.orders"]
    (event,) = [e for e in orders["events"] if e["kind"] == "maintenance"]
    assert "VACUUM" not in event["description"] and "vacuum public.orders" in event["description"]
    assert abs(datetime.fromisoformat(event["time"]) - vacuum_at) < timedelta(seconds=1)
    assert orders["growth_per_day"] == pytest.approx(MB, rel=0.1)  # the drop is not trend
    assert orders["status"] == "ok" and orders["limit"] is None
    assert rows["app/database"]["status"] == "not-enough-history"
    assert orders["plan"]["monthly_growth_planned"] == 0.2

    # the HTML: self-contained, each chart an embedded PNG of 900 x 400
    from matplotlib.image import imread

    html = page.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == len(data["resources"])
    assert imread(io.BytesIO(base64.b64decode(images[0])), format="png").shape[:2] == (400, 900)
    assert "here/disk/data" in html and "nominal 80%" in html
    pngs = os.listdir(tmp_path / "reports")
    assert "here_disk_data.png" in pngs and any(p.endswith(".html") for p in pngs)

    markdown = artifact_markdown("capacity-report")
    table = [line for line in markdown.splitlines() if line.startswith("| 1 |")]
    assert table and "here/disk/data" in table[0] and "critical" in table[0]
    assert "Growth against the plan" in markdown

    # 3. plain output, and an operator's mistake
    code, out, err = cli("capacity", "report", "--config", str(config))
    assert code == 1 and "here/disk/data" in out and "critical" in out
    assert "Calibration of the P10-P90 band" in out
    code, out, err = cli("capacity", "report", "--resource", "nope", "--config", str(config))
    assert code == 2 and "no samples of resource nope" in err
