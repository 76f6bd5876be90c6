"""A real Prefect server (and process workers) started from this environment, for the tests
that need what `prefect_test_harness` never runs: the scheduler service and workers.

Every process gets its own session (process group), its output in a log file, and is
stopped with its whole group at teardown, so nothing outlives the tests.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

STARTUP_TIMEOUT = 120.0  # a fresh PREFECT_HOME migrates its database first: ~10-25 s here
STOP_TIMEOUT = 20.0

# Settings a developer's shell may export that must not leak into these processes.
LEAKY = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_PROFILE",
    "PREFECT_PROFILES_PATH",
    "RUNBOOK_CONFIG",
    "RUNBOOK_TIMEZONE",
    "RUNBOOK_HOME",
)

# The scheduler loop, shortened (3.8.8 default: 60 s; the "recent deployments" loop is 5 s).
FAST_SCHEDULER = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}


ACCESS = re.compile(r'"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) /')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        GX_ANALYTICS_ENABLED="false",
    )
    env.update(extra)
    return env


@dataclass
class Process:
    """A subprocess in its own session whose stdout and stderr go to `log_path`."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(
        cls, name: str, args: list[str], env: Mapping[str, str], log_path: Path, cwd: Path
    ) -> Process:
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                args,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one
            )
        return cls(name, popen, log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        """SIGTERM the whole group (and any descendant that left it), SIGKILL what remains."""
        if self._stopped:
            return
        self._stopped = True
        try:
            family = [
                psutil.Process(self.popen.pid),
                *psutil.Process(self.popen.pid).children(recursive=True),
            ]
        except psutil.NoSuchProcess:
            family = []
        pgid = self.popen.pid  # start_new_session: the group id is the leader's pid
        _signal_group(pgid, signal.SIGTERM)
        for proc in family:
            _signal(proc, signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=STOP_TIMEOUT)
        _signal_group(pgid, signal.SIGKILL)
        for proc in alive:
            _signal(proc, signal.SIGKILL)
        _, survivors = psutil.wait_procs(alive, timeout=5)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if survivors or _group_members(pgid):
            raise RuntimeError(f"{self.name}: processes survived SIGKILL: {survivors}")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def _group_members(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return members


@dataclass
class PrefectServer:
    """`python -m prefect server start` on a free port with its own PREFECT_HOME."""

    api_url: str
    home: Path
    process: Process
    workdir: Path
    processes: list[Process] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def log(self) -> str:
        """The server's output without its HTTP access lines."""
        return "\n".join(
            line for line in self.process.log().splitlines() if not ACCESS.search(line)
        )

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for a client process (CLI, worker, serve) talking to this server."""
        return clean_env(
            self.workdir / "client-home",
            PREFECT_API_URL=self.api_url,
            PREFECT_LOGGING_EXTRA_LOGGERS="runbook",
            **extra,
        )

    @contextmanager
    def settings(self) -> Iterator[None]:
        """Point this process's Prefect client (get_client, run_deployment) at the server."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            yield

    def spawn(self, name: str, args: list[str], cwd: Path, **env: str) -> Process:
        """A client process (its output in workdir/<name>.log), stopped with the server."""
        log = self.workdir / f"{name}.log"
        process = Process.start(name, args, self.client_env(**env), log, cwd)
        self.processes.append(process)
        return process

    def start_worker(self, pool: str = "runbook-process", cwd: Path | None = None) -> Process:
        """`prefect worker start --pool POOL` polling every second."""
        return self.spawn(
            f"worker-{pool}",
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
            cwd or Path.cwd(),
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_PREFETCH_SECONDS="1",
        )

    def stop(self) -> None:
        errors = []
        for process in [*reversed(self.processes), self.process]:
            try:
                process.stop()
            except RuntimeError as exc:
                errors.append(str(exc))
        if errors:
            raise RuntimeError("; ".join(errors))


def start_server(workdir: Path, ui: bool = False, **settings: str) -> PrefectServer:
    """Start a server (extra `settings` as environment variables) and wait for /api/health.
    With `ui`, it serves the UI too (at the server's root, V2 under /v2)."""
    home = workdir / "server-home"
    home.mkdir(parents=True)
    port = free_port()
    env = clean_env(
        home,
        PREFECT_UI_ENABLED="true" if ui else "false",  # without: no UI build to copy
        PREFECT_SERVER_LOGGING_LEVEL="INFO",  # the scheduler's "Scheduled N runs." lines
        **{**FAST_SCHEDULER, **settings},
    )
    if ui:
        env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"  # what the browser calls
    process = Process.start(
        "prefect-server",
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env,
        workdir / "server.log",
        workdir,
    )
    server = PrefectServer(f"http://127.0.0.1:{port}/api", home, process, workdir)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if not process.alive():
            server.stop()
            raise RuntimeError(f"Prefect server exited at start:\n{process.log()[-3000:]}")
        try:
            if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"Prefect server not healthy after {STARTUP_TIMEOUT:.0f} s:\n"
                f"{process.log()[-3000:]}"
            )
        time.sleep(0.5)


@pytest.fixture
def start_prefect_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrefectServer]]:
    """start_prefect_server(**settings) -> a fresh server, stopped at the test's end."""
    started: list[PrefectServer] = []

    def start(**settings: str) -> PrefectServer:
        server = start_server(tmp_path_factory.mktemp("prefect-server"), **settings)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One real server for the tests of a module."""
    server = start_server(tmp_path_factory.mktemp("prefect-server"))
    yield server
    server.stop()
