"""command: a team's script as a window step, really run: exit status, duration and the tail
of its output recorded, its secret environment values never in the ledger or the report; a
non-zero exit or a timeout fails the action and the window goes on."""

from __future__ import annotations

import json
import sys

from runbook.catalog import MaintenanceLog, MaintenanceStatus, Outcome
from runbook.runtime import open_runtime
from tasks.maintenance.report import window_markdown
from tests.support.maintenance import run_procedures

TOKEN = "tok-3f9a1c-never-shown"


def config_for(write_config, tmp_path, steps):
    return write_config(
        maintenance={
            "windows": {"weekly": {"duration": "1h", "procedures": ["command"]}},
            "command": {"steps": steps},
        },
    )


def test_steps_run_in_order_and_record_status_duration_and_tail(write_config, tmp_path):
    script = tmp_path / "weekly_maintenance.py"
    script.write_text(
        "import os, sys\n"
        "for i in range(50): print('line', i)\n"
        "print('token is', os.environ['API_TOKEN'])\n"
        "print('cwd', os.getcwd())\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    steps = [
        {
            "name": "weekly-maintenance",
            "run": [sys.executable, str(script), "0"],
            "env": {"API_TOKEN": TOKEN},
            "cwd": str(tmp_path),
            "tail_lines": 5,
        },
        {
            "name": "verify-rollback",
            "run": [sys.executable, str(script), "3"],
            "env": {"API_TOKEN": TOKEN},
        },
        {
            "name": "too-slow",
            "run": [sys.executable, "-c", "import time; time.sleep(30)"],
            "timeout": "1s",
        },
        {"name": "after-failures", "run": ["true"]},
    ]
    config = config_for(write_config, tmp_path, steps)

    dry = run_procedures(config, ["command"], dry_run=True)
    assert [a.object for a in dry.actions] == [s["name"] for s in steps]
    assert {a.outcome for a in dry.actions} == {Outcome.DRY_RUN}

    run = run_procedures(config, ["command"], dry_run=False)
    assert run.status == MaintenanceStatus.FAILED
    ok, failed, slow, last = run.actions
    assert ok.outcome == Outcome.DONE and ok.after["exit_status"] == 0
    tail = str(ok.after["output_tail"]).splitlines()
    assert len(tail) == 5 and tail[-1] == f"cwd {tmp_path}" and tail[-2] == "token is ***"
    assert failed.outcome == Outcome.FAILED and "exit status 3" in failed.error
    assert slow.outcome == Outcome.FAILED and "timeout" in slow.error and slow.duration < 10
    assert last.outcome == Outcome.DONE, "the window goes on after a failed step"

    ledger = json.dumps(
        [r.model_dump(mode="json") for r in MaintenanceLog(open_runtime(config).catalog).list()]
    )
    assert TOKEN not in ledger and TOKEN not in window_markdown(run)
    assert "line 49" in ledger  # the tail is kept

    again = run_procedures(config, ["command"], dry_run=True)
    assert "took" in again.actions[0].reason  # the ledger's duration is the next estimate
