"""How a flow command starts Prefect's temporary server (issue 14, item 2): launched early,
before Prefect is imported, so it boots while the command imports its flow; then adopted by
Prefect (one server, not two), or stopped when Prefect's settings name a server after all.
An operator's mistake is refused before any of it starts. Timings are in benchmarks/, not
here: these tests guard what the shorter start-up relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.cli import cli

ROOT = Path(__file__).resolve().parents[2]

ADOPT = """
import json, sys
import runbook.cli  # what the `runbook` command imports before its flow
from runbook.cli import prefect_server as ps
ps.start_early()
early = ps._early
imported_early = "prefect" in sys.modules
ps.start_temporary_server()
imported_server_code = "prefect.server.api.server" in sys.modules
from prefect.settings import PREFECT_API_URL
from prefect.client.orchestration import get_client
api_url = PREFECT_API_URL.value()
answered = None
if api_url:
    with get_client(sync_client=True) as client:  # what a flow run's client does
        answered = client.api_healthcheck() is None
from prefect.server.api.server import SubprocessASGIServer
server = SubprocessASGIServer._instances.get(None)
print(json.dumps({
    "imported_prefect_before_launch": imported_early,
    "imported_server_code": imported_server_code,
    "early": [early[0], early[1].pid] if early else None,
    "early_exit": early[1].poll() if early else None,
    "handed_over": ps._adopted.pid if ps._adopted else None,
    "used": [server.port, server.server_process.pid] if server else None,
    "api_url": api_url,
    "answered": answered,
}))
"""


def run_script(tmp_path: Path, env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        {
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "PYTHONPATH": str(ROOT),
            **env_extra,
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ADOPT)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_early_server_is_the_one_prefect_uses(tmp_path):
    found = run_script(tmp_path, {})

    assert found["imported_prefect_before_launch"] is False
    assert found["early"] is not None, "no server was launched early"
    port, pid = found["early"]
    # handed over: Prefect's client talks to the early child as to any server...
    assert found["handed_over"] == pid and found["early_exit"] is None
    assert found["api_url"] == f"http://127.0.0.1:{port}/api"
    assert found["answered"] is True
    # ...so this process never loads Prefect's server code, and starts no second server
    assert found["imported_server_code"] is False
    assert found["used"] is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_early_server_is_stopped_when_prefect_settings_name_a_server(tmp_path):
    # Not in the environment, so start_early cannot see it: Prefect reads prefect.toml.
    (tmp_path / "prefect.toml").write_text('[api]\nurl = "http://127.0.0.1:9/api"\n')

    found = run_script(tmp_path, {})

    assert found["early"] is not None
    assert found["early_exit"] is not None  # stopped, not left booting beside the real server
    assert found["used"] is None
    assert found["api_url"] == "http://127.0.0.1:9/api"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_early_server_is_replaced_when_prefect_toml_changes_a_setting(tmp_path):
    # The early child saw only the environment; a server must run with every setting.
    (tmp_path / "prefect.toml").write_text('[logging]\nlevel = "WARNING"\n')

    found = run_script(tmp_path, {})

    assert found["early"] is not None
    assert found["early_exit"] is not None  # the early one was stopped...
    assert found["used"] is not None and found["used"][1] != found["early"][1]  # ...and replaced
    assert found["api_url"] is None


def test_nothing_starts_early_when_the_environment_names_a_server(tmp_path):
    found = run_script(tmp_path, {"PREFECT_API_URL": "http://127.0.0.1:9/api"})

    assert found["early"] is None
    assert found["used"] is None


def test_an_operator_mistake_is_refused_before_prefect_starts(write_config, monkeypatch):
    from runbook.cli import prefect_server

    started: list[str] = []
    monkeypatch.setattr(prefect_server, "start_early", lambda: started.append("early"))
    monkeypatch.setattr(prefect_server, "start_temporary_server", lambda: started.append("server"))
    config = write_config({"postgres": [{"name": "app", "dsn": "postgresql://x@127.0.0.1:1/x"}]})

    code, _out, err = cli("backup", "-t", "nope", "--config", str(config))

    assert code == 2
    assert "nope" in err
    assert started == []
