"""`runbook restore` and the restore flow end to end through Prefect (issue 16): the JSON
shape and exit codes of the issue's Interface, the plain output, refusals before anything is
recorded, and a flow run without a destination that does nothing."""

from __future__ import annotations

import json
import os

import pytest

from flows.backup import backup
from flows.restore import restore as restore_flow
from runbook.catalog import RestoreLog
from runbook.runtime import open_runtime
from tests.support.artifacts import artifact_markdown
from tests.support.cli import cli

pytestmark = pytest.mark.usefixtures("prefect_harness")

INTERFACE = {
    "id", "target", "backup_id", "into", "status", "started_at", "finished_at",
    "rto_seconds", "checks", "hooks", "error",
}  # fmt: skip


def test_runbook_restore_json_plain_refusals_and_exit_codes(pg15, make_database, write_config):
    source = make_database(pg15)
    config = str(write_config({"postgres": [{"name": "app", "dsn": source}]}))
    assert backup().ok
    name = f"rbrestore_{os.urandom(4).hex()}"
    into = pg15.dsn(name)
    try:
        code, out, err = cli("restore", "-t", "app", "--into", into, "--config", config, "--json")
        assert code == 0, out + err
        shown = json.loads(out)["restore"]
        assert set(shown) >= INTERFACE
        assert shown["status"] == "restored" and shown["target"] == "app"
        assert shown["into"] == f"postgres@127.0.0.1:5432/{name}" and shown["error"] is None
        assert 0 < shown["rto_seconds"] < 600 and shown["hooks"] == []
        assert all(set(c) == {"name", "ok", "detail"} for c in shown["checks"])
        assert {"backup integrity", "restore", "rows shop.orders"} <= {
            c["name"] for c in shown["checks"]
        }
        markdown = artifact_markdown("restore-report")
        assert "RESTORED" in markdown and "## Plan" in markdown

        # Refusals: one line, exit 2, nothing recorded, before Prefect.
        code, _, err = cli("restore", "-t", "app", "--into", source, "--config", config)
        assert code == 2 and "source database" in err and len(err.strip().splitlines()) == 1
        code, _, err = cli("restore", "-t", "app", "--into", into, "--config", config)
        assert code == 2 and "not empty" in err and "--clean" in err
        code, _, err = cli("restore", "-t", "app", "--into", into, "--clean", "--config", config)
        assert code == 2 and "confirmation needed" in err and "--yes" in err  # no terminal
        assert len(RestoreLog(open_runtime(config).catalog).list()) == 1

        # --clean --yes, plain output.
        code, out, err = cli(
            "restore", "-t", "app", "--into", into, "--clean", "--yes", "--config", config
        )
        assert code == 0, out + err
        assert "RESTORED" in out and "checks passed" in out and "RTO" in out

        code, out, _ = cli("restores", "list", "--config", config, "--json")
        listed = json.loads(out)["restores"]
        assert code == 0 and [r["status"] for r in listed] == ["restored", "restored"]
        assert listed[1]["id"] == shown["id"]
    finally:
        pg15.drop_database(name)

    # A Quick run from the UI (no target, no destination) refuses and records nothing.
    state = restore_flow(return_state=True)
    assert state.is_failed() and "nothing was done" in state.message
    assert len(RestoreLog(open_runtime(config).catalog).list()) == 2
