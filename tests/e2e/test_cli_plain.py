"""Every command's plain output, as a person types it (the JSON forms are tested beside their
flows). A value with square brackets (a check named `host.disk[/]`, an error quoting `[x]`)
must print as text, never be read as rich markup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook.catalog import DrillLog
from runbook.runtime import open_runtime
from tests.support.cli import cli

ROOT = Path(__file__).resolve().parents[2]  # the checkout

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_every_command_prints_plain_text(pg15, make_database, write_config, tmp_path):
    etc = tmp_path / "etc[prod]"  # brackets in a path reach messages and tables
    etc.mkdir()
    (etc / "app.conf").write_text("x = 1\n")
    log = tmp_path / "app.log"
    log.write_text("INFO start\n")
    config = str(
        write_config(
            {
                "postgres": [{"name": "app", "dsn": make_database(pg15), "rto": "1h", "rpo": "2h"}],
                "files": [{"name": "conf", "paths": [str(etc)]}],
                "host": [{"name": "box", "mounts": ["/"]}],
                "logs": [{"name": "applog", "paths": [str(log)]}],
            }
        )
    )

    code, out, err = cli("check-config", "--config", config)
    assert code == 0 and "4 target(s)" in out, err

    code, out, err = cli("backup", "--config", config)
    assert code == 0, out + err
    assert "app" in out and "conf" in out and "verified" in out

    code, out, _ = cli("backups", "list", "--config", config)
    assert code == 0 and out.count("verified") >= 2
    backup_id = open_runtime(config).catalog.latest_backup("conf").id
    code, out, _ = cli("backups", "show", backup_id, "--config", config)
    assert code == 0 and "sha256" in out and "verification" in out

    code, out, _ = cli("verify", backup_id, "--config", config)
    assert code == 0 and backup_id in out and " ok " in out

    code, out, _ = cli("retention", "--config", config)
    assert code == 0 and "Retention (dry run)" in out and "keep" in out

    code, out, _ = cli("health", "--config", config)
    assert code in (0, 1)
    assert "host.disk[/]" in out  # the check name, brackets and all
    assert "drill.age" in out and "backup.age" in out
    rows = [line for line in out.splitlines() if "│" in line and "host.disk" in line]
    assert rows and "%" in rows[0]  # the value has its unit
    statuses = [
        s
        for line in out.splitlines()
        for s in ("critical", "warn", "unknown", "ok")
        if line.startswith(f"│ {s}")
    ]
    rank = {"critical": 0, "warn": 1, "unknown": 2, "ok": 3}
    assert statuses == sorted(statuses, key=rank.__getitem__)  # worst first

    code, out, _ = cli("drill", "--target", "app", "--config", config)
    assert code == 0, out
    assert "PASSED" in out and "(target 1h)" in out and "(target 2h)" in out
    drill = DrillLog(open_runtime(config).catalog).list(target="app")[0]
    assert f"{len(drill.checks)} of {len(drill.checks)} checks passed" in out

    code, out, _ = cli("drills", "list", "--config", config)
    assert code == 0
    assert out.splitlines()[1].split("┃")[1].strip() == "drill"  # a header row
    assert drill.id in out

    code, out, _ = cli("drills", "show", drill.id, "--config", config)
    assert code == 0 and "expectations met" in out


def test_drills_list_says_why_a_drill_failed(pg15, make_database, write_config):
    config = str(write_config({"postgres": [{"name": "app", "dsn": make_database(pg15)}]}))
    code, out, _ = cli("drill", "--target", "app", "--config", config)  # nothing backed up
    assert code == 1
    code, out, _ = cli("drills", "list", "--config", config)
    assert code == 0 and "FAILED" in out and "no verified backup" in out
    assert "failed at pick:" in " ".join(out.split())  # the step it failed at, first


def test_check_config_ships_an_example_that_checks(monkeypatch):

    for name in ("APP_DB_PASSWORD", "REDIS_PASSWORD", "SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    code, out, err = cli("check-config", "--config", str(ROOT / "runbook.example.yaml"))
    assert code == 0, err
    assert "APP_DB_PASSWORD" in out and "where the flows run" in out

    code, out, _ = cli("check-config", "--config", str(ROOT / "runbook.example.yaml"), "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["unset_env"] == ["APP_DB_PASSWORD"]
    # Consistent with itself: every target's schedule meets its RPO (runbook 001's hourly
    # database and configuration snapshots), so the morning health run is not critical.
    assert data["warnings"] == []


def test_check_config_warns_when_a_schedule_cannot_meet_the_rpo(write_config):
    config = write_config(
        {"postgres": [{"name": "app", "dsn": "postgresql://u@db/app", "rpo": "1h"}]}
    )
    code, out, _ = cli("check-config", "--config", str(config))
    assert code == 0
    assert "warning: target app: backed up every 1d (schedule nightly: 0 2 * * *)" in out
    assert "rpo is 1h" in out


def test_check_config_json_reports_errors_as_json(tmp_path):
    bad = tmp_path / "runbook.yaml"
    bad.write_text("targets:\n  postgres:\n    - {name: app}\n")
    code, out, err = cli("check-config", "--config", str(bad), "--json")
    data = json.loads(out)
    assert code == 2 and data["ok"] is False
    assert "targets.postgres[0].dsn: field required" in data["error"]
    code, out, err = cli("check-config", "--config", str(bad))
    assert code == 2 and "targets.postgres[0].dsn: field required" in err and out == ""
