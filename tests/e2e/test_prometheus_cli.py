"""A Prometheus TSDB target from the command line: `runbook backup` (the backup flow) takes and
verifies a snapshot, `runbook restore --into DIR` restores it with the next steps printed,
`runbook drill` restores it into a work folder and serves it with a real prometheus."""

from __future__ import annotations

import json

import pytest

import flows.backup  # noqa: F401 - Prefect sets up its logging on import, outside CliRunner's
from tests.integration.test_prometheus_backup import scraping
from tests.support.cli import cli
from tests.support.prometheus_server import prometheus_server

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_prometheus_backup_and_restore_from_the_command_line(tmp_path, write_config):
    folder = tmp_path / "prom"
    with prometheus_server(folder, "--web.enable-admin-api", "--web.enable-lifecycle") as url:
        scraping(folder, url)
        config = str(
            write_config(
                {
                    "prometheus_tsdb": [
                        {"name": "metrics", "url": url, "data_dir": str(folder / "data")}
                    ]
                }
            )
        )
        code, out, err = cli("backup", "-t", "metrics", "--config", config, "--json")
        assert code == 0, out + err
        (made,) = json.loads(out)["backups"]
        assert made["kind"] == "prometheus" and made["status"] == "verified"

    into = tmp_path / "restored"
    code, out, err = cli("restore", "-t", "metrics", "--into", str(into), "--config", config)
    assert code == 0, out + err
    assert "RESTORED" in out and "Next steps:" in out
    assert f"--storage.tsdb.path={into}" in out.replace("\n", "")

    code, out, err = cli("drill", "-t", "metrics", "--config", config, "--json")
    assert code == 0, out + err
    drilled = json.loads(out)["drill"]
    assert drilled["passed"] and drilled["target"] == "metrics"
    checks = {c["name"]: c for c in drilled["checks"]}
    assert checks["file checksums"]["ok"] and checks["rto"]["ok"] and checks["rpo"]["ok"]
    served = checks["prometheus serves the snapshot"]
    assert served["ok"] and "series" in served["detail"] and "prometheus 2." in served["detail"]
    code, out, _ = cli("drills", "list", "-t", "metrics", "--config", config, "--json")
    assert code == 0 and json.loads(out)["drills"][0]["id"] == drilled["id"]
