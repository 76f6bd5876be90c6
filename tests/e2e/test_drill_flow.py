"""The DR drill flow and `runbook drill` end to end through Prefect."""

from __future__ import annotations

import json

import pytest

from flows.backup import backup
from tests.support.artifacts import artifact_markdown
from tests.support.cli import cli

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_runbook_drill_json_list_and_exit_codes(pg15, make_database, write_config):
    dsn = make_database(pg15)
    config = write_config({"postgres": [{"name": "app", "dsn": dsn, "rto": "30m", "rpo": "1h"}]})
    assert backup().ok

    code, out, _ = cli("drill", "--target", "app", "--config", str(config), "--json")
    assert code == 0, out
    drill = json.loads(out)["drill"]
    assert drill["passed"] is True and drill["target"] == "app"
    assert drill["fell_back_from"] is None and drill["backup_id"]
    assert 0 < drill["rto_seconds"] < 1800 and 0 <= drill["rpo_seconds"] < 3600
    names = {c["name"] for c in drill["checks"]}
    assert {"backup integrity", "restore", "rows shop.orders", "rto", "rpo"} <= names
    assert all(set(c) >= {"name", "ok", "detail"} for c in drill["checks"])
    markdown = artifact_markdown("drill-report")
    assert "app: PASSED" in markdown and drill["id"] in markdown

    code, out, _ = cli("drills", "list", "--config", str(config), "--json")
    assert code == 0 and json.loads(out)["drills"][0]["id"] == drill["id"]

    code, out, _ = cli("drills", "show", drill["id"], "--config", str(config), "--json")
    shown = json.loads(out)["drill"]
    assert code == 0 and shown["id"] == drill["id"] and shown["checks"] == drill["checks"]
    assert shown["gx_result"]["success"] is True
    assert shown["gx_result"]["statistics"]["evaluated_expectations"] > 0
    code, out, _ = cli("drills", "show", drill["id"], "--config", str(config))
    assert code == 0 and "expectations met (success)" in out
    code, _, err = cli("drills", "show", "no-such-drill", "--config", str(config))
    assert code == 2 and "no-such-drill" in err and "Traceback" not in err

    # A plan pointing at the source database: refused, exit 2, one line.
    refused = write_config({"postgres": [{"name": "app", "dsn": dsn, "drill": {"dsn": dsn}}]})
    code, out, err = cli("drill", "--target", "app", "--config", str(refused))
    assert code == 2 and "source database" in err and "Traceback" not in err

    # Missing the RTO target fails the drill: exit 1.
    strict = write_config({"postgres": [{"name": "app", "dsn": dsn, "rto": "1ms"}]})
    code, out, _ = cli("drill", "--target", "app", "--config", str(strict), "--json")
    failed = json.loads(out)["drill"]
    assert code == 1 and failed["passed"] is False
    assert [c["ok"] for c in failed["checks"] if c["name"] == "rto"] == [False]
