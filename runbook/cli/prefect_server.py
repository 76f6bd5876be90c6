"""Prefect's temporary API server (ephemeral mode), started early and tied to this process.

With no PREFECT_API_URL, Prefect starts `python -m uvicorn ... create_app` as a child and
stops it at exit (atexit). Two things here:

- It dies with us. A `kill -9`, an OOM kill or a supervisor's SIGKILL skip atexit, and the
  server used to live on, reparented to init (~195 MB, still listening). So the command
  starts that server itself, from its main thread, with PR_SET_PDEATHSIG: the kernel kills
  the server when this process dies, however it dies. Prefect's own `get_client()` then finds
  the server already running (one instance per process) and uses it.
- It starts early. Booting the server (a Python process importing Prefect's server and
  opening its database) takes most of a flow command's fixed cost. `start_early()`, called by
  a command once the operator's input is checked and before it imports its flow, launches the
  child without importing Prefect, so the server boots on one core while this process imports
  Prefect and the flow on the other. `start_temporary_server()` then adopts that child, or
  stops it when Prefect's settings (a profile, prefect.toml) name a server after all.

This module imports Prefect only inside functions: `start_early()` must not pay for it.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

# Runs in the child before it becomes the server: ask the kernel for SIGKILL when the parent
# dies (the setting survives exec), and leave at once if the parent is already gone.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "PR_SET_PDEATHSIG = 1\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:\n"
    "    sys.exit('prctl(PR_SET_PDEATHSIG) failed: errno %d' % ctypes.get_errno())\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)

# A server launched by start_early() and not adopted yet: (port, process).
_early: tuple[int, subprocess.Popen[Any]] | None = None


def _may_start_here() -> bool:
    """The kernel's death signal follows the thread that started the child; Linux only."""
    return (
        sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
    )


def start_early() -> None:
    """Launch the temporary server now, without importing Prefect, so it boots while the
    command imports its flow. Nothing when the environment names a server (PREFECT_API_URL)
    or turns ephemeral mode off, when Prefect is already imported (a test harness, an earlier
    flow: `start_temporary_server` decides then), or where the child could not die with us."""
    global _early
    if _early is not None or "prefect" in sys.modules or not _may_start_here():
        return
    if os.environ.get("PREFECT_API_URL"):
        return
    if os.environ.get("PREFECT_SERVER_EPHEMERAL_ENABLED", "true").lower() in ("0", "false"):
        return
    port = _free_port()
    _early = (port, _launch(port, dict(os.environ)))
    atexit.register(_stop_early)  # a command that fails before its flow runs


def start_temporary_server() -> None:
    """Make sure Prefect's temporary server runs and dies with this process: adopt the one
    `start_early` launched, or start one now. Nothing (and an early one stopped) when the
    command talks to a running server (PREFECT_API_URL in any of Prefect's settings sources),
    when one is already started (the test harness, an earlier flow), off the main thread or
    off Linux."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        _stop_early()
        return
    if None in SubprocessASGIServer._instances or not _may_start_here():
        _stop_early()
        return
    _server_class()().start()


def _server_class() -> type:
    from prefect.server.api.server import SubprocessASGIServer

    class _ServerDyingWithUs(SubprocessASGIServer):
        """Prefect's SubprocessASGIServer with its child started through `_DIE_WITH_PARENT`,
        or the child `start_early` already launched.

        Registered as the process's default instance (`SubprocessASGIServer()` returns it),
        so Prefect's clients use it, and its atexit hook still stops it on a normal exit."""

        def find_available_port(self) -> int:
            return _early[0] if _early is not None else super().find_available_port()

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            global _early
            from prefect.settings import get_current_settings

            settings = get_current_settings().to_environment_variables(exclude_unset=True)
            if _early is not None:
                port, process = _early
                _early = None
                # The early child saw only the environment: a setting from a profile or
                # prefect.toml (the server's database, say) needs a server started with it.
                same = all(
                    os.environ.get(k, "").lower() == str(v).lower()
                    for k, v in settings.items()
                    if k != "PREFECT_SERVER_EPHEMERAL_ENABLED"  # on, or we were not here
                )
                if port == self.port and same:
                    return process
                _stop(process)
            return _launch(self.port, {**os.environ, **settings})

    return _ServerDyingWithUs


def _launch(port: int, env: dict[str, str]) -> subprocess.Popen[Any]:
    """The command and environment of Prefect 3.8's own _run_uvicorn_command, through
    `_DIE_WITH_PARENT`."""
    server = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(_prefect_dir().parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    env = {
        **env,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *server], env=env
    )


def _prefect_dir() -> Path:
    """prefect.__module_path__ without importing Prefect."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Prefect is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _free_port() -> int:
    """A port the kernel says is free now (Prefect's server picks again if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_early() -> None:
    global _early
    if _early is not None:
        _stop(_early[1])
        _early = None


def _stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
