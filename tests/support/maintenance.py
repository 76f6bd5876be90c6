"""Running maintenance windows in tests with the real procedure registry (no Prefect)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runbook.catalog import MaintenanceRun
from runbook.runtime import open_runtime
from tasks.maintenance.registry import PROCEDURES
from tasks.maintenance.run import WindowRequest
from tasks.maintenance.window import choose_window, run_window


class BackUps:
    """Stands in for the backup flow: records which targets it was asked to back up."""

    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        self.asked: list[list[str]] = []
        self.failing = failing

    def __call__(self, names: list[str]) -> dict[str, str | None]:
        self.asked.append(list(names))
        return {n: ("disk full" if n in self.failing else None) for n in names}


def run_procedures(
    config: Path,
    procedures: list[str],
    *,
    dry_run: bool,
    targets: list[str] | None = None,
    back_up: Any = None,
    published: dict[str, str] | None = None,
) -> MaintenanceRun:
    runtime = open_runtime(config)
    choice = choose_window(runtime.config, "weekly", targets or [], procedures, PROCEDURES)
    request = WindowRequest(
        runtime=runtime,
        window=choice.window,
        settings=choice.settings,
        targets=choice.targets,
        procedures=choice.procedures,
        registry=PROCEDURES,
        dry_run=dry_run,
        back_up=back_up if back_up is not None else BackUps(),
        publish=(lambda key, text: published.__setitem__(key, text))
        if published is not None
        else None,
    )
    return run_window(request)


@contextmanager
def scratch_redis_server(folder: Path, *options: str) -> Iterator[int]:
    """A throwaway redis-server on a free port (no persistence); yields the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the scratch redis-server did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
