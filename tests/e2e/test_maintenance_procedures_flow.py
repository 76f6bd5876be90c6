"""The maintenance flow through Prefect with the procedures beyond PostgreSQL: a Redis target
(cache cleanup, backed up first through the backup flow), the host's rotated logs and a
team's script, in one window: the plan artifact, the ledger and the report artifact."""

from __future__ import annotations

import os
import sys
import time

import pytest

from flows.maintenance import maintenance
from runbook.catalog import BackupStatus, MaintenanceLog, MaintenanceStatus
from runbook.config import RedisTarget
from runbook.runtime import open_runtime
from runbook.systems.redis_commands import RedisClient
from tests.support.artifacts import artifact_markdown

pytestmark = pytest.mark.usefixtures("prefect_harness")

DB = 7  # this test's Redis database (tests/integration/test_maintenance_redis_cleanup.py too)


@pytest.fixture
def cache():
    target = RedisTarget(name="cache", url=f"redis://127.0.0.1:6379/{DB}")
    with RedisClient.open(target) as client:
        client.call("FLUSHDB")
        client.pipeline([("SET", f"cache:{i}", "v" * 50) for i in range(2000)])
        client.pipeline([("SET", f"keep:{i}", "v") for i in range(10)])
    yield target
    with RedisClient.open(target) as client:
        client.call("FLUSHDB")


def test_one_window_cleans_a_cache_archives_logs_and_runs_a_script(write_config, tmp_path, cache):
    logs = tmp_path / "logs"
    logs.mkdir()
    rotated = logs / "app.log.1"
    rotated.write_text("old line\n" * 1000)
    stamp = time.time() - 3 * 86400
    os.utime(rotated, (stamp, stamp))
    (logs / "app.log").write_text("active\n")
    config = write_config(
        {"redis": [{"name": "cache", "url": f"redis://127.0.0.1:6379/{DB}"}]},
        maintenance={
            "windows": {
                "weekly": {
                    "duration": "1h",
                    "procedures": ["redis_cleanup", "log_archive", "command"],
                }
            },
            "redis_cleanup": {"patterns": ["cache:*"], "batch": 200, "pause": "1ms"},
            "log_archive": {"paths": [str(logs)]},
            "command": {
                "steps": [{"name": "weekly-script", "run": [sys.executable, "-c", "print('ok')"]}]
            },
        },
    )

    state = maintenance(window="weekly", return_state=True)
    assert state.is_completed(), state.message
    planned = state.result().run
    assert planned.targets == ["cache", "@host"]
    assert {(a.procedure, a.object) for a in planned.actions} == {
        ("redis_cleanup", f"db{DB} cache:*"),
        ("log_archive", str(rotated)),
        ("command", "weekly-script"),
    }
    plan = artifact_markdown("maintenance-plan")
    assert "cache:*" in plan and "app.log.1" in plan and "weekly-script" in plan

    state = maintenance(window="weekly", dry_run=False, return_state=True)
    assert state.is_completed(), state.message
    run = state.result().run
    assert run.status == MaintenanceStatus.DONE
    assert {a.procedure: a.outcome.value for a in run.actions} == {
        "redis_cleanup": "done",
        "log_archive": "done",
        "command": "done",
    }
    by = {a.procedure: a for a in run.actions}
    assert by["redis_cleanup"].after["deleted"] == 2000
    assert by["redis_cleanup"].after["db_keys"] == 10
    assert not rotated.exists() and (logs / "app.log").exists()
    assert by["command"].after["output_tail"] == "ok"

    backup = open_runtime(config).catalog.latest_backup("cache")
    assert backup is not None and backup.status == BackupStatus.VERIFIED
    assert "pre-maintenance backup of cache: verified" in run.notes

    report = artifact_markdown("maintenance-report")
    assert "Maintenance window weekly: DONE" in report
    assert "cache:*" in report and "weekly-script" in report
    ledger = MaintenanceLog(open_runtime(config).catalog)
    assert [r.dry_run for r in ledger.list()] == [False, True]
