"""check_http on many endpoints: 200 distinct paths, each answering after 100 ms.

    python -m benchmarks.health_http [--endpoints 200] [--delay 0.1] [--concurrency 32]

A local asyncio HTTP/1.1 server (keep-alive, in a background thread) answers every path with
{"status": "healthy"} after the delay; check_http checks all endpoints (status, latency, JSON
condition) and the wall time is printed. Target: 200 endpoints under 5 s. Sequentially it
would take endpoints x delay (20 s); with concurrency 32 the floor is ceil(200/32) x 0.1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from collections import Counter

from runbook.config import HttpExpect, HttpTarget
from runbook.errors import RunFailed
from tasks.health.http import check_http

TARGET_SECONDS = 5.0


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            await asyncio.sleep(delay)
            body = json.dumps({"status": "healthy", "path": path}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


class DelayedServer:
    """An asyncio HTTP server on 127.0.0.1 in its own thread and loop."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> asyncio.Server:
            return await asyncio.start_server(
                lambda r, w: _serve_connection(r, w, self.delay), "127.0.0.1", 0, backlog=1024
            )

        server = self._loop.run_until_complete(start())
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        pending = asyncio.all_tasks(self._loop)  # keep-alive connections still waiting
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def __enter__(self) -> DelayedServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--flow",
        action="store_true",
        help="time the whole health flow (Prefect, catalog, artifacts) too",
    )
    args = parser.parse_args(argv)
    with DelayedServer(args.delay) as server:
        targets = [
            HttpTarget(
                name=f"endpoint-{i}",
                url=f"http://127.0.0.1:{server.port}/service/{i}/health",
                expect=HttpExpect(json={"status": "healthy", "path": f"/service/{i}/health"}),
            )
            for i in range(args.endpoints)
        ]
        started = time.perf_counter()
        results = check_http(targets, concurrency=args.concurrency)
        wall = time.perf_counter() - started
        flow_wall = _time_flow(targets, args.concurrency) if args.flow else None
    statuses = Counter(r.status.value for r in results)
    verdict = "PASS" if wall < TARGET_SECONDS and set(statuses) == {"ok"} else "FAIL"
    print(
        f"check_http: {args.endpoints} endpoints x {args.delay * 1000:g} ms delay, "
        f"concurrency {args.concurrency}: wall {wall:.2f} s (target < {TARGET_SECONDS:g} s), "
        f"{len(results)} results {dict(statuses)} -> {verdict}"
    )
    if flow_wall is not None:
        verdict = "PASS" if flow_wall < TARGET_SECONDS else "FAIL"
        print(
            f"health flow (only http), same {args.endpoints} endpoints: wall {flow_wall:.2f} s "
            f"(second run; Prefect's ephemeral server already up) -> {verdict}"
        )
    return wall


def _time_flow(targets: list[HttpTarget], concurrency: int) -> float:
    """The health flow over the same endpoints: a warm-up run, then a timed one."""
    import tempfile
    from pathlib import Path

    import yaml

    from flows.daily_health import daily_health

    folder = Path(tempfile.mkdtemp(prefix="runbook-bench-health-"))
    config = folder / "runbook.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": "sqlite:///catalog.db",
                "health": {"concurrency": concurrency},
                "targets": {
                    "http": [
                        {"name": t.name, "url": t.url, "expect": {"json": dict(t.expect.json_)}}
                        for t in targets
                    ]
                },
            }
        )
    )
    os.environ["RUNBOOK_CONFIG"] = str(config)  # where flows read their config
    daily_health(only=["http"], return_state=True)
    started = time.perf_counter()
    state = daily_health(only=["http"], return_state=True)
    wall = time.perf_counter() - started
    report = RunFailed.summary_of(state.result(raise_on_failure=False))
    if len(report.checks) != 3 * len(targets):
        raise SystemExit(f"expected {3 * len(targets)} results, got {len(report.checks)}")
    return wall


if __name__ == "__main__":
    main()
