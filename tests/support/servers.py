"""Real servers from Debian packages (prometheus, prometheus-pushgateway,
prometheus-alertmanager) started by tests on free ports of 127.0.0.1: one way to start one,
wait until it is ready, and stop it. A missing binary fails the test with the package to
install (.ci/run installs them as root): a test that needs a real server never skips."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_server(
    binary: str, args: Callable[[int], list[str]], folder: Path, *, seconds: float = 60
) -> Iterator[str]:
    """Start `binary` with `args(port)` on a free port, its output in folder/<binary>.log;
    yields http://127.0.0.1:PORT once /-/ready answers; terminated (and waited for) after."""
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed (apt-get install -y {binary})")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = folder / f"{binary}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, *args(port)], stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{binary} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
