"""The flow reports as an operator reads them: the Prefect UI in headless Chromium at 1400x900.

Prefect 3.8 serves two front ends: V2 (the default, under /v2) and V1 (under /). Both are
checked. `prefect_test_harness` never serves the UI (its server runs with
PREFECT_UI_ENABLED=0), so this module starts `prefect server start` with the UI on a free
port and runs the real flows against it: a backup with one failing target, a DR drill, and a
health run with critical, warn, unknown and ok checks. Screenshots of every page go to
$RUNBOOK_UI_SCREENSHOTS (default: the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from runbook.errors import RunFailed
from tests.support.artifacts import latest_artifact
from tests.support.browser import Browser

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 1400, 900
UIS = {"v2": "/v2", "v1": ""}  # V2 is what a browser without a saved preference gets
SEVERITY = ["critical", "warn", "unknown", "ok"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start --no-services` serving the UI; yields its base URL."""
    workdir = tmp_path_factory.mktemp("prefect-ui")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_API_", "PREFECT_UI_", "PREFECT_SERVER_UI_", "RUNBOOK_"))
        and k not in ("PREFECT_PROFILE", "PREFECT_HOME")
    }
    env.update(
        PREFECT_HOME=str(workdir / "home"),
        PREFECT_SERVER_UI_ENABLED="true",
        PREFECT_UI_API_URL=f"{base}/api",  # what the browser calls
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(port), "--no-services"],
        env=env,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as one
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (workdir / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/ui-settings", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prefect server with UI did not start in 120 s"
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


class Endpoints:
    """Local HTTP: /ok, /health (503), and a Prometheus API with one disk at 91.2 % and one
    query without data."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                code, body = 200, {"status": "healthy"}
                if url.path == "/health":
                    code, body = 503, {"status": "degraded"}
                elif url.path == "/api/v1/query":
                    query = parse_qs(url.query).get("query", [""])[0]
                    result = []
                    if "filesystem" in query:
                        metric = {"instance": "db-1:9100", "mountpoint": "/var/lib/postgresql"}
                        result = [{"metric": metric, "value": [time.time(), "91.2"]}]
                    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def endpoints() -> Iterator[Endpoints]:
    e = Endpoints()
    yield e
    e.server.shutdown()


# Where the column headed `name` is, for every table that has one: scrolled into view, its
# right edge, the right edge of its table and of the box the UI puts the table in, and whether
# the header is what a person sees at its own right edge (not clipped, not under a side panel).
COLUMN_JS = r"""
((name) => {
  const found = [...document.querySelectorAll('th')].filter(h => h.innerText.trim() === name);
  if (!found.length) return null;
  return JSON.stringify(found.map(th => {
    th.scrollIntoView({block: 'center'});  // vertically: it may also scroll a box sideways,
    for (let e = th.parentElement; e; e = e.parentElement) e.scrollLeft = 0;  // so undo that
    const table = th.closest('table');
    const r = th.getBoundingClientRect();
    const x = Math.min(r.right - 4, innerWidth - 1), y = r.top + r.height / 2;
    const hit = document.elementFromPoint(x, y);
    return {
      right: r.right,
      table: table.getBoundingClientRect().right,
      box: table.parentElement.getBoundingClientRect().right,
      seen: th.contains(hit),
    };
  }));
})
"""

# Header texts and cell texts of every table on the page (null until a row is there).
TABLES_JS = r"""
(() => {
  const cell = document.querySelector('table tbody tr td');
  if (!cell || !cell.innerText.trim()) return null;  // V1 renders cells after the rows
  const text = e => e.innerText.trim();
  return JSON.stringify([...document.querySelectorAll('table')].map(table => ({
    header: [...table.querySelectorAll('thead th')].map(text),
    rows: [...table.querySelectorAll('tbody tr')]
      .map(tr => [...tr.querySelectorAll('td')].map(text)),
  })));
})()
"""

KEYS = ("health-report", "health-checks", "drill-report", "backup-report")


def _latest_artifact_id(key: str) -> str:
    return str(latest_artifact(key).id)


def _run_flows(api_url: str) -> tuple[Any, dict[str, str]]:
    """backup -> drill -> health against the UI's server: the health report, and the id of
    the newest artifact of each key."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.backup import backup
    from flows.daily_health import daily_health
    from flows.dr_drill import dr_drill

    with temporary_settings({PREFECT_API_URL: api_url}):
        backed_up = backup(return_state=True)
        assert backed_up.is_failed()  # billing-config's paths do not exist
        drilled = dr_drill(return_state=True)
        assert drilled.is_completed(), drilled.message
        checked = daily_health(return_state=True)
        report = RunFailed.summary_of(checked.result(raise_on_failure=False))
        ids = {key: _latest_artifact_id(key) for key in KEYS}
        APILogWorker.drain_all()
        EventsWorker.drain_all()
    return report, ids


def test_reports_read_well_in_the_prefect_ui(
    ui_server, pg15, make_database, write_config, endpoints, monkeypatch, tmp_path
):
    started = time.monotonic()
    shots = Path(os.environ.get("RUNBOOK_UI_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "app.log"
    log.write_text("INFO boot\n")
    config = write_config(
        {
            "postgres": [
                {"name": "shop-db", "dsn": make_database(pg15), "rto": "1h", "rpo": "26h"}
            ],
            "files": [{"name": "billing-config", "paths": [str(tmp_path / "no" / "such" / "etc")]}],
            "http": [
                {"name": "api", "url": f"{endpoints.url}/ok"},
                {"name": "payments-gateway-eu1", "url": f"{endpoints.url}/health"},
                {"name": "gone", "url": "http://127.0.0.1:9/ready", "timeout": "1s"},
            ],
            "prometheus": [
                {
                    "name": "prom",
                    "url": endpoints.url,
                    "queries": [
                        {
                            "name": "node-disk",
                            "query": "100 * (1 - node_filesystem_avail_bytes"
                            " / node_filesystem_size_bytes)",
                            "warn": 85,
                            "critical": 95,
                            "unit": "%",
                        },
                        {"name": "queue-depth", "query": "max(queue_depth)", "warn": 100},
                    ],
                }
            ],
            "host": [{"name": "this-machine", "mounts": ["/"]}],
            "logs": [{"name": "app", "paths": [str(log)]}],
        },
    )
    monkeypatch.setenv("RUNBOOK_CONFIG", str(config))  # where the flows read their config
    report, ids = _run_flows(f"{ui_server}/api")
    statuses = [c.status.value for c in report.checks]
    assert {"critical", "warn", "unknown", "ok"} <= set(statuses), statuses
    units = {(c.check, c.target): c.unit for c in report.checks}
    assert units[("prometheus.node-disk", "prom")] == "%"
    assert units[("http.latency", "api")] == "s"
    assert units[("host.disk[/]", "this-machine")] == "%"
    assert units[("postgres.connect", "shop-db")] == "ms"
    assert units[("postgres.connections", "shop-db")] == "%"
    assert units[("postgres.database_size", "shop-db")] == "GB"
    assert units[("backup.age", "shop-db")] == "h"
    assert units[("drill.age", "shop-db")] == "d"
    flows_took = time.monotonic() - started

    failures: list[str] = []
    with Browser(WIDTH, HEIGHT) as browser:
        for ui, prefix in UIS.items():
            for key in KEYS:
                # The Artifacts page of a key lists its versions, newest first.
                browser.open(f"{ui_server}{prefix}/artifacts/key/{key}")
                href = browser.wait_for(
                    "(document.querySelector('a[href*=\"/artifacts/artifact/\"]') || {}).href || ''"
                )
                assert href.endswith(f"{prefix}/artifacts/artifact/{ids[key]}"), (ui, key, href)
                browser.open(href)
                check = CHECKS[key]
                problems = check(browser, shots / f"{ui}-{key}.png", statuses)
                failures += [f"{ui} {key}: {problem}" for problem in problems]
    assert not failures, "\n".join(failures)
    browser_took = time.monotonic() - started - flows_took
    print(f"flows {flows_took:.1f} s, browser {browser_took:.1f} s, screenshots in {shots}")


def _words_only(tables: list[dict[str, Any]], words: set[str]) -> list[str]:
    """The first column says a word (an emoji may go with it, never alone: without an emoji
    font it is an empty box)."""
    cells = {row[0] for table in tables for row in table["rows"]}
    alone = {c for c in cells if re.sub(r"[^\w ]", "", c).strip() not in words}
    return [f"first column is not one of {sorted(words)}: {sorted(alone)}"] if alone else []


def _columns_in_view(browser: Browser, header: str, shot: Path) -> list[str]:
    """Every `header` column ends inside the 1400 px window, inside the box the UI gives its
    table (V1 scrolls a wider table, V2 runs it under the side panel), and is what one sees
    at its own right edge."""
    browser.wait_for(TABLES_JS)  # rendered
    browser.screenshot(shot)  # the top of the page, as it opens
    columns = json.loads(browser.wait_for(f"({COLUMN_JS})({header!r})"))
    return [
        f"{header} column cut off: {column} ({shot})"
        for column in columns
        if not (
            column["right"] <= WIDTH and column["table"] <= column["box"] + 1 and column["seen"]
        )
    ]


def _health_report(browser: Browser, shot: Path, statuses: list[str]) -> list[str]:
    problems = _columns_in_view(browser, "message", shot)
    tables = json.loads(browser.wait_for(TABLES_JS))
    problems += _words_only(tables, set(SEVERITY))
    header, rows = tables[0]["header"], tables[0]["rows"]
    if header[:4] != ["status", "check", "target", "value"]:
        problems.append(f"columns {header} ({shot})")
    if "critical" not in rows[0][0]:
        problems.append(f"first row is not critical: {rows[0]} ({shot})")
    disk = [row for row in rows if "prometheus.node-disk" in row]
    if not disk or "91.2 %" not in disk[0]:
        problems.append(f"no value with its unit: {disk} ({shot})")
    return problems


def _health_checks(browser: Browser, shot: Path, statuses: list[str]) -> list[str]:
    table = json.loads(browser.wait_for(TABLES_JS))[0]
    browser.screenshot(shot)
    problems = []
    if table["header"][:4] != ["status", "check", "target", "message"]:
        problems.append(f"columns {table['header']} ({shot})")
    shown = [row[0] for row in table["rows"]]  # the first page of the table
    expected = sorted(statuses, key=SEVERITY.index)[: len(shown)]
    if shown != expected:  # worst first: the critical ones, then warn, unknown, ok
        problems.append(f"rows not worst first: {shown}, expected {expected} ({shot})")
    return problems


def _drill_report(browser: Browser, shot: Path, statuses: list[str]) -> list[str]:
    problems = _columns_in_view(browser, "detail", shot)
    problems += _words_only(json.loads(browser.wait_for(TABLES_JS)), {"ok", "FAIL"})
    items = browser.evaluate("[...document.querySelectorAll('li')].map(li => li.innerText)")
    rto = [item for item in items if item.startswith("RTO")]
    if not rto or "(target 1h)" not in rto[0] or "(target 1d2h)" not in rto[0]:
        problems.append(f"RTO/RPO targets not as configured (1h, 26h): {rto} ({shot})")
    return problems


def _backup_report(browser: Browser, shot: Path, statuses: list[str]) -> list[str]:
    problems = _columns_in_view(browser, "verified", shot)
    table = json.loads(browser.wait_for(TABLES_JS))[0]
    verified = table["header"].index("verified")
    failed = next(row for row in table["rows"] if row[0] == "billing-config")
    if failed[verified] != "failed":  # the error has its own place
        problems.append(f"verified column of the failed backup: {failed[verified]!r} ({shot})")
    items = browser.evaluate("[...document.querySelectorAll('li')].map(li => li.innerText)")
    if not any("billing-config" in item and "does not exist" in item for item in items):
        problems.append(f"the failed backup's error is not listed under the table ({shot})")
    return problems


CHECKS = {
    "health-report": _health_report,
    "health-checks": _health_checks,
    "drill-report": _drill_report,
    "backup-report": _backup_report,
}
