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
  Prefect and the flow on the other. `start_temporary_server()` then hands that child to
  Prefect as PREFECT_API_URL (so this process never imports Prefect's server code), or stops
  it when Prefect's settings (a profile, prefect.toml) name a server or change a setting the
  child did not see.

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
import time
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

# A server launched by start_early() and not handed over yet: (port, process).
_early: tuple[int, subprocess.Popen[Any]] | None = None
# The early server once handed to Prefect as PREFECT_API_URL: stopped at exit.
_adopted: subprocess.Popen[Any] | None = None


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
    atexit.register(_at_exit)  # also a command that fails before its flow runs


def start_temporary_server() -> None:
    """Make sure Prefect's temporary server runs and dies with this process: hand Prefect the
    one `start_early` launched, or start one now. Nothing (and an early one stopped) when the
    command talks to a running server (PREFECT_API_URL in any of Prefect's settings sources),
    when one is already started (the test harness, an earlier flow), off the main thread or
    off Linux.

    The early server is handed over as PREFECT_API_URL, so that Prefect's client talks to it
    like to any server and never imports Prefect's server package (FastAPI, the ORM, ~60 MB
    and over a second of CPU in this process): the server's code runs only in the child."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        get_current_settings,
    )

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        _stop_early()
        return
    server_module = sys.modules.get("prefect.server.api.server")
    if (server_module is not None and None in server_module.SubprocessASGIServer._instances) or (
        not _may_start_here()
    ):
        _stop_early()
        return
    if _early is not None and _started_with(get_current_settings()):
        _hand_over_early(get_current_settings().server.ephemeral.startup_timeout_seconds)
        return
    _stop_early()
    _server_class()().start()


def _started_with(settings: Any) -> bool:
    """Whether the early child, which saw only the environment, runs with every setting
    Prefect has now (a profile or prefect.toml may set the server's database, say)."""
    wanted = settings.to_environment_variables(exclude_unset=True)
    return all(
        os.environ.get(key, "").lower() == str(value).lower()
        for key, value in wanted.items()
        if key != "PREFECT_SERVER_EPHEMERAL_ENABLED"  # on, or we were not here
    )


def _hand_over_early(timeout: float) -> None:
    """Wait until the early server answers, then point Prefect at it (environment and the
    global settings context, which Prefect built at import). It still dies with us: the
    kernel's death signal, and an atexit stop registered before Prefect's own hooks (atexit
    runs last-registered first, so Prefect flushes its logs and events before it stops)."""
    global _early, _adopted
    assert _early is not None
    port, process = _early
    _early = None
    _adopted = process  # from here on, whatever happens, stopped at exit
    port, _adopted = _wait_until_healthy(port, process, timeout)
    from prefect.context import refresh_global_settings_context

    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    refresh_global_settings_context()


def _wait_until_healthy(
    port: int, process: subprocess.Popen[Any], timeout: float
) -> tuple[int, subprocess.Popen[Any]]:
    """The port and process of the server once /api/health answers. Like Prefect's own
    wait: `timeout` seconds from now, and a server that lost its port to another process
    (uvicorn exits with 3) is started again on a free one."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() == 3:
            port = _free_port()
            process = _launch(port, dict(os.environ))
        elif process.poll() is not None:
            raise RuntimeError(
                f"Prefect's temporary server exited with code {process.returncode} while "
                "starting (run the command with PREFECT_LOGGING_LEVEL=DEBUG, or set "
                "PREFECT_API_URL to a running server)"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return port, process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(
                f"Prefect's temporary server did not answer on port {port} within {timeout:g} s "
                "(raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS on a busy machine: its "
                "first start also creates its database)"
            )
        time.sleep(0.1)


def _server_class() -> type:
    from prefect.server.api.server import SubprocessASGIServer

    class _ServerDyingWithUs(SubprocessASGIServer):
        """Prefect's SubprocessASGIServer with its child started through `_DIE_WITH_PARENT`.

        Registered as the process's default instance (`SubprocessASGIServer()` returns it),
        so Prefect's clients use it, and its atexit hook still stops it on a normal exit."""

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            from prefect.settings import get_current_settings

            settings = get_current_settings().to_environment_variables(exclude_unset=True)
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


def _at_exit() -> None:
    """Registered by start_early, before Prefect is imported: runs after Prefect's own exit
    hooks (last registered, first run), so its logs and events reach the server first."""
    global _adopted
    _stop_early()
    if _adopted is not None:
        _stop(_adopted)
        _adopted = None


def _stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
