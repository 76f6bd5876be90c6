"""The health flow end to end: real PostgreSQL and Redis, local HTTP servers (one hung), a log
file, backup freshness, history with streaks, the webhook and the Pushgateway."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from flows.daily_health import daily_health
from runbook.catalog import HealthHistory
from runbook.cli import app
from runbook.errors import RunFailed
from runbook.health import Status
from runbook.runtime import open_runtime
from tests.support.artifacts import artifact_markdown

pytestmark = pytest.mark.usefixtures("prefect_harness")


class Receiver:
    """Local HTTP server: /health (toggle), /hung, and recorders for webhook and pushgateway."""

    def __init__(self) -> None:
        self.healthy = False
        self.posts: list[dict] = []
        self.pushes: list[tuple[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/hung":
                    time.sleep(30)
                    return
                if self.path == "/ok":
                    body, code = {"status": "healthy", "checks": {"db": True}}, 200
                else:
                    body = {"status": "healthy" if receiver.healthy else "degraded"}
                    code = 200 if receiver.healthy else 500
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> str:
                return self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()

            def do_POST(self) -> None:  # noqa: N802 - the webhook
                receiver.posts.append(json.loads(self._body()))
                self.send_response(200)
                self.end_headers()

            def do_PUT(self) -> None:  # noqa: N802 - the pushgateway
                receiver.pushes.append((self.path, self._body()))
                self.send_response(202)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def test_health_runs_notifies_once_keeps_history_and_recovers(
    pg15, make_database, write_config, receiver, tmp_path
):
    log = tmp_path / "app.log"
    log.write_text("INFO boot\n")
    config = write_config(
        {
            "postgres": [{"name": "db", "dsn": make_database(pg15)}],
            "redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/0"}],
            "http": [
                {
                    "name": "api",
                    "url": f"{receiver.url}/ok",
                    "expect": {"json": {"status": "healthy", "checks.*": True}},
                },
                {"name": "broken", "url": f"{receiver.url}/health"},
                {"name": "hung", "url": f"{receiver.url}/hung", "timeout": "1s"},
            ],
            "logs": [{"name": "app", "paths": [str(log)]}],
            "host": [{"name": "box", "mounts": ["/"]}],
        },
        health={"unreachable": "critical"},
        notifications={
            "webhook": {"url": f"{receiver.url}/hooks/T000/SECRET-TOKEN"},
            "pushgateway": {"url": receiver.url, "job": "runbook"},
        },
    )

    started = time.monotonic()
    first = daily_health(return_state=True)
    elapsed = time.monotonic() - started
    assert first.is_failed()  # something is critical
    report = RunFailed.summary_of(first.result(raise_on_failure=False))
    by_key = {(c.check, c.target): c for c in report.checks}
    assert elapsed < 60  # the hung endpoint could not stall the run
    assert by_key[("http.status", "hung")].status == Status.CRITICAL
    assert "1s" in by_key[("http.status", "hung")].message
    assert by_key[("http.status", "broken")].status == Status.CRITICAL
    assert by_key[("http.status", "api")].status == Status.OK
    assert by_key[("http.json", "api")].status == Status.OK
    assert by_key[("postgres.connect", "db")].status == Status.OK
    assert ("postgres.cache_hit_ratio", "db") in by_key
    assert by_key[("redis.ping", "cache")].status == Status.OK
    assert by_key[("backup.age", "db")].status == Status.CRITICAL  # never backed up
    assert by_key[("drill.age", "db")].status == Status.WARN
    assert "baseline" in by_key[("logs.errors", "app")].message
    assert ("host.disk[/]", "box") in by_key
    assert report.severity == "P2"

    # Notified once, without the webhook's secret anywhere in what was sent or stored.
    assert len(receiver.posts) == 1
    text = receiver.posts[0]["text"]
    assert "`http.status` on *broken*" in text and "`http.status` on *hung*" in text
    assert "`backup.age` on *db*" in text
    assert "SECRET-TOKEN" not in json.dumps(report.model_dump(mode="json"))
    path, metrics = receiver.pushes[0]
    assert path.startswith("/metrics/job/runbook/instance/")
    assert 'runbook_check_status{check="http.status",target="broken"} 3' in metrics
    assert 'runbook_check_status{check="http.status",target="api"} 0' in metrics
    assert "Health: critical (P2)" in artifact_markdown("health-report")

    # The log file grows: the next run counts exactly the new error lines.
    with log.open("a") as handle:
        handle.write("ERROR db timeout\nINFO ok\nFATAL out of memory\n")
    second = daily_health(return_state=True)
    report2 = RunFailed.summary_of(second.result(raise_on_failure=False))
    errors = next(c for c in report2.checks if c.check == "logs.errors")
    assert errors.value == 2 and errors.status == Status.WARN
    assert len(receiver.posts) == 1  # still failing: no repeated critical alerts

    # The endpoint recovers: reported once.
    receiver.healthy = True
    daily_health(return_state=True)
    daily_health(return_state=True)
    recoveries = [p["text"] for p in receiver.posts if "Recovered" in p["text"]]
    assert len(recoveries) == 1 and "`http.status` on *broken*" in recoveries[0]

    history = HealthHistory(open_runtime(config).catalog).history("http.status", "broken")
    assert [(h.status, h.streak) for h in history] == [
        ("ok", 0),
        ("ok", 0),
        ("critical", 2),
        ("critical", 1),
    ]


def test_runbook_health_cli_only_json_and_exit_codes(write_config, receiver):
    config = write_config(
        {
            "http": [
                {"name": "api", "url": f"{receiver.url}/ok"},
                {"name": "broken", "url": f"{receiver.url}/health"},
            ]
        }
    )
    result = CliRunner().invoke(
        app, ["health", "--only", "http", "--json", "--config", str(config)]
    )
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["status"] == "critical"
    assert {(c["check"], c["target"], c["status"]) for c in out["checks"]} >= {
        ("http.status", "api", "ok"),
        ("http.status", "broken", "critical"),
    }
    assert all(
        set(c) >= {"check", "target", "status", "value", "threshold", "message"}
        for c in out["checks"]
    )

    receiver.healthy = True
    result = CliRunner().invoke(app, ["health", "--only", "http", "--config", str(config)])
    assert result.exit_code == 0

    result = CliRunner().invoke(app, ["health", "--only", "bogus", "--config", str(config)])
    assert result.exit_code == 2 and "unknown check kind 'bogus'" in result.stderr


def test_a_target_under_maintenance_is_reported_but_does_not_notify(write_config, receiver, caplog):
    from datetime import timedelta

    from runbook.catalog import MaintenanceLog, MaintenanceRun, MaintenanceStatus, utcnow
    from tests.support.fake_apis import closed_port_url

    config = write_config(
        {
            "postgres": [{"name": "app", "dsn": closed_port_url("postgresql") + "/app"}],
            "http": [{"name": "broken", "url": f"{receiver.url}/health"}],
        },
        notifications={"webhook": {"url": f"{receiver.url}/hooks/T000/SECRET-TOKEN"}},
    )
    ledger = MaintenanceLog(open_runtime(config).catalog)
    started = utcnow() - timedelta(minutes=1)
    window = MaintenanceRun(
        id="w-now",
        window="weekly",
        dry_run=False,
        targets=["app"],
        procedures=["vacuum"],
        started_at=started,
        ends_at=started + timedelta(hours=2),
        quiet_until=started + timedelta(hours=2, minutes=15),
        host="elsewhere",
        pid=1,
    )
    ledger.start(window)
    # a dry run of another target is not maintenance: it changes nothing
    ledger.start(window.model_copy(update={"id": "w-dry", "dry_run": True, "targets": ["x"]}))

    state = daily_health(only=["postgres", "http"], return_state=True)
    report = RunFailed.summary_of(state.result(raise_on_failure=False))
    by_key = {(c.check, c.target): c for c in report.checks}
    assert by_key[("postgres.connect", "app")].status == Status.CRITICAL  # still reported
    assert state.is_failed()  # and still graded

    (post,) = receiver.posts  # the other target notifies; the one under maintenance does not
    assert "on *broken*" in post["text"] and "on *app*" not in post["text"]
    muted = [e for e in report.events if e.startswith("muted:")]
    assert muted == [
        "muted: postgres.connect on app (critical): under maintenance (window weekly, run "
        f"w-now, until {window.quiet_until:%Y-%m-%d %H:%M} UTC)"
    ]
    assert "not notifying for app: under maintenance (window weekly, run w-now" in caplog.text

    # The window ends: the next run notifies the failure that is still there.
    ledger.record_plan("w-now", [])
    ledger.finish("w-now", MaintenanceStatus.DONE)
    daily_health(only=["postgres", "http"], return_state=True)
    assert len(receiver.posts) == 2
    assert "`postgres.connect` on *app*" in receiver.posts[1]["text"]
    assert "on *broken*" not in receiver.posts[1]["text"]  # notified once already
