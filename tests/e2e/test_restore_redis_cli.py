"""`runbook restore` of a Redis target from the command line: into a folder (the RDB and the
next steps, plain and --json), into a server given with a password (never shown, never a
flow parameter), and the source server refused with exit 2."""

from __future__ import annotations

import json

import pytest

import flows.restore  # noqa: F401 - Prefect sets up its logging on import, outside CliRunner's
from runbook.runtime import open_runtime
from tests.integration.test_drill_core import take_backup
from tests.integration.test_restore_redis import FAST, Resp, fill
from tests.support.cli import cli
from tests.support.maintenance import scratch_redis_server

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_redis_restore_from_the_command_line(tmp_path, write_config):
    with (
        scratch_redis_server(tmp_path / "source", *FAST) as port,
        scratch_redis_server(tmp_path / "dest", "--requirepass", "pw-9d1e") as dest,
    ):
        fill(port)
        config = str(
            write_config({"redis": [{"name": "cache", "url": f"redis://127.0.0.1:{port}/0"}]})
        )
        backup_id = take_backup(open_runtime(config), "cache")

        folder = tmp_path / "rdb"
        code, out, err = cli("restore", "-t", "cache", "--into", str(folder), "--config", config)
        assert code == 0, out + err
        rdb = folder / f"cache-{backup_id}-dump.rdb"
        assert "RESTORED" in out and "Next steps:" in out and str(rdb) in out
        assert "db0: 47 keys, db3: 4 keys" in out and rdb.is_file()

        url = f"redis://:pw-9d1e@127.0.0.1:{dest}"
        code, out, err = cli("restore", "-t", "cache", "--into", url, "--config", config, "--json")
        assert code == 0, out + err
        shown = json.loads(out)["restore"]
        assert shown["status"] == "restored" and shown["kind"] == "redis"
        assert shown["into"] == f"redis://127.0.0.1:{dest}" and shown["next_steps"] == []
        assert {c["name"] for c in shown["checks"]} >= {"keys db0", "keys db3"}
        assert all(c["ok"] for c in shown["checks"])
        assert "pw-9d1e" not in out + err
        client = Resp(dest, "pw-9d1e")
        assert client.keys_per_db() == {"db0": 47, "db3": 4}
        client.close()

        code, out, err = cli(
            "restore", "-t", "cache", "--into", f"redis://127.0.0.1:{port}", "--config", config
        )
        assert code == 2 and "is the source server of target 'cache'" in err
        assert "--replace-source" in err
