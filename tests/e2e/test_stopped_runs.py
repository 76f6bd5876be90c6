"""A flow command stopped or killed mid-dump (issue 15, item 4): `runbook backup` in its own
process, in Prefect's ephemeral mode (no PREFECT_API_URL: it starts a temporary API server as
a child), compressing at zstd level 19. Whatever stops it, nothing of it keeps running; a
SIGTERM or SIGINT acts within seconds and the backup's row says why it failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from runbook.catalog import BackupStatus, BackupStep
from runbook.locks import backup_lock, named_lock
from runbook.runtime import open_runtime

RUNBOOK = str(Path(sys.executable).parent / "runbook")
SERVER_APP = "prefect.server.api.server:create_app"


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory) -> Path:
    """One PREFECT_HOME for the module's runs: its database is migrated once."""
    return tmp_path_factory.mktemp("prefect-home")


def fill(dsn: str, rows: int = 500_000) -> None:
    """About 45 MB of text: tens of seconds of zstd -19 on two cores."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE public.big (id bigint PRIMARY KEY, a text, b text)")
        conn.execute(
            "INSERT INTO public.big SELECT g, md5(g::text) || md5((g * 3)::text), "
            "md5((g * 7)::text) FROM generate_series(1, %s) g",
            (rows,),
        )


def descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize(
    "stop", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name
)
def test_a_stopped_backup_leaves_nothing_running(
    stop, prefect_home, pg15, make_database, write_config, tmp_path
):
    dsn = make_database(pg15, seed=False)
    fill(dsn)
    config = write_config(
        {"postgres": [{"name": "app", "dsn": dsn}]},
        backup={"compression_level": 19, "retries": 0},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    log = (tmp_path / "runbook.log").open("wb")
    child = subprocess.Popen(
        [RUNBOOK, "backup", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    run = psutil.Process(child.pid)
    try:
        servers: list[psutil.Process] = []
        dumps: list[psutil.Process] = []

        def dumping() -> bool:
            family = descendants(run)
            servers[:] = [p for p in family if SERVER_APP in cmdline(p)]
            dumps[:] = [p for p in family if p.name() == "pg_dump"]
            return bool(servers and dumps)

        wait_until(dumping, 120, "the backup never started its dump under a temporary server")
        time.sleep(3)  # well into compression
        assert child.poll() is None, "the dump ended before the test could stop it"
        watched = [p.pid for p in servers + dumps]

        stopped_at = time.monotonic()
        child.send_signal(stop)
        code = child.wait(timeout=60)
        took = time.monotonic() - stopped_at

        wait_until(
            lambda: not any(alive(pid) for pid in watched),
            15,
            f"still running after {stop.name}: "
            + "; ".join(cmdline(psutil.Process(p)) for p in watched if alive(p)),
        )
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()

    runtime = open_runtime(config)
    [record] = runtime.catalog.list_backups(target="app", statuses=None)
    with named_lock(runtime.config.catalog, backup_lock("app"), 0):
        pass  # the target's lock died with the run
    if stop == signal.SIGKILL:
        assert code == -signal.SIGKILL
        assert record.status == BackupStatus.RUNNING  # nobody could write; its lock is free
        return
    output = (tmp_path / "runbook.log").read_text(errors="replace")
    assert took < 10, f"{stop.name} took {took:.1f}s to act"
    assert code != 0
    assert record.status == BackupStatus.FAILED, output
    assert record.failed_step == BackupStep.DUMP
    assert record.error.startswith(f"stopped by {stop.name}"), record.error


def test_a_finished_backup_leaves_its_server_stopped_and_its_run_recorded(
    prefect_home, pg15, make_database, write_config, tmp_path
):
    """The normal exit: the temporary server handed to Prefect (PREFECT_API_URL) is stopped
    after Prefect's own exit hooks, so the flow run's final state and logs reached it first."""
    import sqlite3

    dsn = make_database(pg15)
    config = write_config({"postgres": [{"name": "app", "dsn": dsn}]})
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}

    done = subprocess.run(
        [RUNBOOK, "backup", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stdout + done.stderr

    def ours(process: psutil.Process) -> bool:
        try:
            return SERVER_APP in cmdline(process) and (
                process.environ().get("PREFECT_HOME") == str(home)
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    wait_until(
        lambda: not any(ours(p) for p in psutil.process_iter()),
        10,
        "the temporary server outlived the command",
    )
    with sqlite3.connect(home / "prefect.db") as db:
        states = db.execute("SELECT state_type FROM flow_run").fetchall()
        messages = [m for (m,) in db.execute("SELECT message FROM log")]
    assert states == [("COMPLETED",)]
    assert any(m.startswith("Finished in state Completed") for m in messages), messages[-5:]
