"""`make demo` runs `runbook demo`: the whole cycle on an embedded PostgreSQL 18. Run here as
the command a newcomer types, with --keep-running, so that the next steps it suggests (health
against the demo database) are tried too."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from runbook.catalog import BackupStatus
from runbook.runtime import open_runtime

pytestmark = pytest.mark.usefixtures("prefect_harness")

RUNBOOK = str(Path(sys.executable).parent / "runbook")


def lines_of(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def drain(lines: queue.Queue) -> list[str]:
    """Every line a reader thread queued, up to the end of its stream."""
    collected = []
    while (line := lines.get(timeout=30)) is not None:
        collected.append(line)
    return collected


def test_demo_runs_the_whole_cycle_and_keeps_postgres_running(tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # the session's server
    env.pop("RUNBOOK_CONFIG", None)
    demo = subprocess.Popen(
        [RUNBOOK, "demo", "--workdir", str(tmp_path), "--json", "--keep-running"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    progress: queue.Queue = queue.Queue()
    output: queue.Queue = queue.Queue()
    threading.Thread(target=lines_of, args=(demo.stderr, progress), daemon=True).start()
    threading.Thread(target=lines_of, args=(demo.stdout, output), daemon=True).start()
    seen = []
    deadline = time.monotonic() + 400
    try:
        while not any("keeps running" in line for line in seen):
            assert time.monotonic() < deadline, "".join(seen)
            line = progress.get(timeout=max(1, deadline - time.monotonic()))
            assert line is not None, "demo ended early:\n" + "".join(seen)
            seen.append(line)
        config = tmp_path / "demo" / "runbook.yaml"

        # The suggested next step works while the demo keeps its PostgreSQL up.
        health = subprocess.run(
            [RUNBOOK, "health", "--only", "postgres", "--config", str(config), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        checks = {c["check"]: c for c in json.loads(health.stdout)["checks"]}
        assert checks["postgres.connect"]["status"] == "ok", health.stdout + health.stderr
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C
        demo.wait(timeout=120)
    seen += drain(progress)
    assert demo.returncode == 0, "".join(seen)
    assert any("stopping the demo's PostgreSQL" in line for line in seen), "".join(seen)

    summary = json.loads("".join(drain(output)))
    assert summary["ok"] and summary["verified"]
    by_target = {b["target"]: b for b in summary["backups"]}
    demo_backup = by_target["demo"]
    assert demo_backup["status"] == "verified"
    assert [a["name"] for a in demo_backup["artifacts"]] == ["database", "schema-shop"]
    assert by_target["demo-config"]["status"] == "verified"
    assert {d["action"] for d in summary["retention"]} == {"keep"}
    drills = {d["target"]: d for d in summary["drills"]}
    assert drills["demo"]["status"] == "passed"
    assert drills["demo"]["backup_id"] == demo_backup["id"]
    data_docs = tmp_path / "demo" / "data-docs" / drills["demo"]["id"] / "index.html"
    assert drills["demo"]["data_docs"] == str(data_docs) and data_docs.is_file()
    health = {(c["check"], c["target"]): c for c in summary["health"]["checks"]}
    assert health[("postgres.connect", "demo")]["status"] == "ok"
    assert health[("backup.age", "demo")]["status"] == "ok"
    assert health[("drill.age", "demo")]["status"] == "ok"
    assert health[("logs.errors", "demo-app")]["value"] == 1  # the line written after baseline

    runtime = open_runtime(tmp_path / "demo" / "runbook.yaml")
    record = runtime.catalog.get_backup(demo_backup["id"])
    assert record.status == BackupStatus.VERIFIED
    from runbook.manifest import read_manifest

    manifest = read_manifest(runtime.storage, "demo", demo_backup["id"])
    assert manifest.source["server_major"] == 18
    assert manifest.source["row_counts"]["shop.orders"] == 20000
    assert manifest.source["row_counts"]["public.pgbench_accounts"] == 200000

    # Ctrl-C stopped the embedded server: nothing listens on the socket it said it used.
    said = next(line for line in seen if "keeps running" in line)
    socket_dir = Path(re.search(r"socket in (\S+)\)", said).group(1))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=str(socket_dir), dbname="postgres", user="postgres", connect_timeout=3)
