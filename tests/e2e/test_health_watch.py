"""`runbook health --watch 2s --every 1s` through real health flow runs: an endpoint that
fails once in the middle makes the verdict critical, names that run as the worst moment and
exits 1; plain output and --json."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runbook.catalog import HealthHistory
from runbook.runtime import open_runtime
from tests.support.cli import cli

pytestmark = pytest.mark.usefixtures("prefect_harness")


class Flaky:
    """Answers 200, except the requests whose number (from 1) is in `failing`: 500."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.count = 0
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                flaky.count += 1
                code = 500 if flaky.count in flaky.failing else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"


@pytest.fixture
def flaky() -> Iterator[Flaky]:
    server = Flaky({2})
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_watch_gives_one_verdict_and_the_worst_moment(write_config, flaky: Flaky) -> None:
    config = write_config({"http": [{"name": "api", "url": flaky.url}]})
    code, out, _err = cli(
        "health",
        "--only",
        "http",
        "--watch",
        "2s",
        "--every",
        "1s",
        "--json",
        "--config",
        str(config),
    )
    assert code == 1, out
    watch = json.loads(out)["watch"]
    assert [r["status"] for r in watch["runs"]] == ["ok", "critical", "ok"]
    assert watch["status"] == "critical" and watch["stable"] is False
    assert watch["worst"]["run_id"] == watch["runs"][1]["run_id"]
    assert watch["worst"]["failing"] == ["critical http.status on api"]
    assert watch["last"]["status"] == "ok"
    assert watch["counts"] == {"ok": 2, "unknown": 0, "warn": 0, "critical": 1}
    # every run of the watch is a recorded health run
    history = HealthHistory(open_runtime(config).catalog)
    recorded = history.runs_between(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
    assert [(r.id, r.status.value) for r in recorded] == [
        (r["run_id"], r["status"]) for r in watch["runs"]
    ]

    flaky.failing = set()
    code, out, _err = cli(
        "health", "--only", "http", "--watch", "1s", "--every", "1s", "--config", str(config)
    )
    assert code == 0, out
    lines = out.splitlines()
    assert "Watched 1s every 1s: 2 runs (2 ok)" in out
    assert "Verdict: ok: stable, every one of 2 runs ok" in out
    assert any(line.startswith("Worst moment: ") and "all 2 checks ok" in line for line in lines)


def test_watch_options_are_checked_before_any_run(write_config, flaky: Flaky) -> None:
    config = write_config({"http": [{"name": "api", "url": flaky.url}]})
    code, _out, err = cli("health", "--watch", "1m", "--every", "5m", "--config", str(config))
    assert code == 2 and "--every (0:05:00) is longer than --watch" in err
    code, _out, err = cli("health", "--watch", "soon", "--config", str(config))
    assert code == 2 and "--watch: expected a duration" in err
    assert flaky.count == 0
