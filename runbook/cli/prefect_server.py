"""Prefect's temporary API server (ephemeral mode), tied to the life of this process.

With no PREFECT_API_URL, Prefect starts `python -m uvicorn ... create_app` as a child and
stops it at exit (atexit). A `kill -9`, an OOM kill or a supervisor's SIGKILL skip atexit,
and the server used to live on, reparented to init (~195 MB, still listening). So the command
starts that server itself, from its main thread, with PR_SET_PDEATHSIG: the kernel kills the
server when this process dies, however it dies. Prefect's own `get_client()` then finds the
server already running (one instance per process) and uses it.

Imported only by commands that run a flow: importing Prefect's server costs seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import prefect
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_ENABLED,
    get_current_settings,
)

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


def start_temporary_server() -> None:
    """Start Prefect's temporary server now, so that it dies with this process; nothing when
    the command talks to a running server (PREFECT_API_URL), when one is already started (the
    test harness, an earlier flow), off the main thread (the kernel's death signal follows the
    thread that started the child) or off Linux."""
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    if not sys.platform.startswith("linux"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if None in SubprocessASGIServer._instances:
        return
    _ServerDyingWithUs().start()


class _ServerDyingWithUs(SubprocessASGIServer):
    """Prefect's SubprocessASGIServer with its child started through `_DIE_WITH_PARENT`.

    Registered as the process's default instance (`SubprocessASGIServer()` returns it), so
    Prefect's clients use it, and its atexit hook still stops it on a normal exit."""

    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        # The command and environment of Prefect 3.8's own _run_uvicorn_command.
        server = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(prefect.__module_path__.parent),
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ]
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            **get_current_settings().to_environment_variables(exclude_unset=True),
        }
        return subprocess.Popen(
            [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *server], env=env
        )
