"""`make demo` runs `runbook demo`: the whole cycle on an embedded PostgreSQL 18."""

from __future__ import annotations

import json

import pytest

from flows.demo import run_demo
from runbook.catalog import BackupStatus
from runbook.runtime import open_runtime

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_demo_runs_the_whole_cycle(tmp_path, capsys):
    assert run_demo(tmp_path, as_json=True) is True
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["verified"]
    by_target = {b["target"]: b for b in out["backups"]}
    demo = by_target["demo"]
    assert demo["status"] == "verified"
    assert [a["name"] for a in demo["artifacts"]] == ["database", "schema-shop"]
    assert by_target["demo-config"]["status"] == "verified"
    assert {d["action"] for d in out["retention"]} == {"keep"}
    drills = {d["target"]: d for d in out["drills"]}
    assert drills["demo"]["status"] == "passed" and drills["demo"]["backup_id"] == demo["id"]
    data_docs = tmp_path / "demo" / "data-docs" / drills["demo"]["id"] / "index.html"
    assert drills["demo"]["data_docs"] == str(data_docs) and data_docs.is_file()
    health = {(c["check"], c["target"]): c for c in out["health"]["checks"]}
    assert health[("postgres.connect", "demo")]["status"] == "ok"
    assert health[("backup.age", "demo")]["status"] == "ok"
    assert health[("drill.age", "demo")]["status"] == "ok"
    assert health[("logs.errors", "demo-app")]["value"] == 1  # the line written after baseline

    runtime = open_runtime(tmp_path / "demo" / "runbook.yaml")
    record = runtime.catalog.get_backup(demo["id"])
    assert record.status == BackupStatus.VERIFIED
    from runbook.manifest import read_manifest

    manifest = read_manifest(runtime.storage, "demo", demo["id"])
    assert manifest.source["server_major"] == 18
    assert manifest.source["row_counts"]["shop.orders"] == 20000
    assert manifest.source["row_counts"]["public.pgbench_accounts"] == 200000
