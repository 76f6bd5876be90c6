"""Stored capacity reports and their scoring end to end through the CLI and the Prefect flow,
on a catalog in PostgreSQL 15: the first report says "no earlier report"; a report made ten
days ago (from the history as it was then) is scored by the next one (the disk kept its trend,
the table got a bulk load nobody forecast); `runbook capacity reports` lists the copies in
storage, plain and --json, keeps capacity.keep_reports of them, and exits 1 for a damaged
one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from runbook.catalog import MetricSamples, Sample
from runbook.runtime import open_runtime
from tasks.capacity.report import build_report
from tasks.capacity.stored import PREFIX, store_report
from tests.support.artifacts import artifact_markdown
from tests.support.cli import cli

pytestmark = pytest.mark.usefixtures("prefect_harness")

TB = 1e12


def samples(now: datetime, days: range) -> list[Sample]:
    found = []
    for day in days:
        at = now + timedelta(days=day)
        wobble = np.random.default_rng(day + 1000).normal(0, 0.0005 * TB)  # reproducible
        found.append(
            Sample(
                resource="here/disk/data",
                kind="host.disk",
                target="here",
                value=(0.50 + 0.002 * (day + 70)) * TB + wobble,
                limit=TB,
                unit="bytes",
                time=at,
            )
        )
        loaded = 800e6 if day > -5 else 0.0  # a bulk load 5 days ago
        found.append(
            Sample(
                resource="app/table/public.orders",
                kind="postgres.table",
                target="app",
                value=100e6 + 1e6 * (day + 70) + loaded,
                unit="bytes",
                time=at,
            )
        )
    return found


def test_reports_are_stored_listed_and_scored(pg15, write_config, tmp_path):
    name = pg15.create_database("rbtest_capacityreports")
    try:
        _run(pg15.url(name), write_config, tmp_path)
    finally:
        pg15.drop_database(name)


def _run(catalog_url, write_config, tmp_path):
    config = write_config(
        catalog=catalog_url,
        capacity={"min_samples": 14, "keep_reports": 2, "folder": str(tmp_path / "reports")},
    )
    runtime = open_runtime(config)
    store = MetricSamples(runtime.catalog)
    now = datetime.now(UTC)
    store.record(samples(now, range(-70, -9)))
    then = now - timedelta(days=10)
    earlier, earlier_charts = build_report(runtime.config, runtime.catalog, now=then)
    store.record(samples(now, range(-9, 1)))

    # 1. the first report: nothing earlier to score; its copy is stored
    code, out, err = cli("capacity", "report", "--json", "--config", str(config))
    assert code == 0, out + err
    first = json.loads(out)
    assert first["scoring"]["note"] == "no earlier report" and first["scoring"]["scored"] == 0
    assert first["stored"] and first["storage_error"] is None
    assert "band" not in first["resources"][0]  # the band is in storage, not in the output

    # 2. the report of ten days ago, as it was stored then; the next report scores it
    store_report(runtime.storage, earlier, "md", "html", earlier_charts)
    code, out, err = cli("capacity", "report", "--config", str(config))
    assert code == 0, out + err
    assert "Overall: 1 of 2 actual levels fell within the predicted P10-P90 band (50%" in out
    markdown = artifact_markdown("capacity-report")
    assert "## How earlier forecasts came true" in markdown
    rows = {line.split(" | ")[0]: line for line in markdown.splitlines() if line.startswith("| ")}
    assert "| 100% |" in rows["| here/disk/data"] and "| yes |" in rows["| here/disk/data"]
    assert "| 0% |" in rows["| app/table/public.orders"]
    assert "| no |" in rows["| app/table/public.orders"]
    assert f"{then:%Y%m%dT%H%M%SZ}-month | 2 | 1 | 50% |" in markdown

    # 3. the copies in storage: keep_reports 2, so the ten-day-old one is gone, newest first
    code, out, err = cli("capacity", "reports", "--json", "--config", str(config))
    assert code == 0, out + err
    listed = json.loads(out)["reports"]
    assert len(listed) == 2 and all(r["complete"] for r in listed)
    assert listed[1]["id"] == first["stored"] and listed[0]["id"] > listed[1]["id"]
    assert listed[0]["resources"] == 2 and listed[0]["files"] == 6
    newest = listed[0]["id"]
    stored_md = runtime.storage.get_bytes(f"{PREFIX}{newest}/report.md").decode()
    assert "How earlier forecasts came true" in stored_md and "Overall: 1 of 2" in stored_md
    code, out, err = cli("capacity", "reports", "--config", str(config))
    assert code == 0 and "2 capacity reports" in out and newest in out
    assert "2 resources, worst ok, 6 files" in out

    # 4. a damaged copy is named, and the command fails
    runtime.storage.delete(f"{PREFIX}{newest}/charts/here_disk_data.png")
    code, out, err = cli("capacity", "reports", "--config", str(config))
    assert code == 1 and "charts/here_disk_data.png: missing" in out
