"""The daily report: one local day of health, backups and verifications, drills and
maintenance from the catalog; `runbook report daily --date D` writes the file, publishes the
artifact and sends it through the routes configured for it (a Slack-compatible receiver)."""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from runbook.catalog import BackupStep, DrillLog, HealthHistory, MaintenanceLog, MaintenanceRun
from runbook.catalog.maintenance import MaintenanceAction, MaintenanceStatus, Outcome
from runbook.cli import app
from runbook.health import CheckResult, Status, Tracked
from runbook.manifest import Manifest, ManifestArtifact
from runbook.runtime import open_runtime
from tasks.report.daily import build_daily_report, day_bounds
from tests.support.artifacts import artifact_markdown

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAY = date(2026, 11, 20)
ZONE = "Europe/Berlin"  # UTC+1 in November: the local day is 23:00 UTC the day before


def at(hour: int, minute: int = 0) -> datetime:
    """A local time of DAY, in UTC."""
    return day_bounds(DAY, ZONE)[0] + timedelta(hours=hour, minutes=minute)


def manifest(backup_id: str, when: datetime, size: int) -> Manifest:
    return Manifest(
        backup_id=backup_id,
        target="app",
        kind="postgres",
        started_at=when,
        finished_at=when,
        artifacts=[
            ManifestArtifact(
                name="database",
                key=f"app/{backup_id}/database.pgdump.zst",
                content="pg_dump-custom",
                bytes=size,
                logical_bytes=size * 4,
                sha256="ab" * 32,
                seconds=0.5,
            )
        ],
    )


def seed(runtime) -> None:
    catalog = runtime.catalog
    history = HealthHistory(catalog)
    # api: ok at 06:00, critical at 07:00 and 08:00, ok at 09:00 -> 2 h critical, 2 changes
    for hour, status in ((6, "ok"), (7, "critical"), (8, "critical"), (9, "ok")):
        run_id = f"run-{hour}"
        history.start(run_id, at(hour), [], None)
        result = CheckResult(
            check="http.status", target="api", status=Status(status), message=status
        )
        streak = 0 if status == "ok" else hour - 6
        history.record(run_id, at(hour), [Tracked(result=result, streak=streak, notified=False)])
        history.finish(run_id, Status(status), "P2" if status == "critical" else None)
    # a run the day before does not count
    history.start("run-before", at(-2), [], None)
    history.finish("run-before", Status.WARN, "P3")

    # backups: yesterday's 1000 bytes, today's 1500 verified (+50 %), one failed today
    for backup_id, when, size in (("b-old", at(-20), 1000), ("b-new", at(2), 1500)):
        catalog.start(backup_id, target="app", kind="postgres", storage="local:/x", started_at=when)
        catalog.mark_stored(backup_id, manifest(backup_id, when, size))
        catalog.mark_verified(
            backup_id,
            started_at=when,
            finished_at=when + timedelta(minutes=1),
            keys=[f"app/{backup_id}/database.pgdump.zst"],
        )
    catalog.start("b-bad", target="app", kind="postgres", storage="local:/x", started_at=at(3))
    catalog.mark_failed("b-bad", BackupStep.DUMP, "pg_dump died", at=at(3))

    drills = DrillLog(catalog)
    drills.start("d-1", "app", at(4), "host", 1, None)

    ledger = MaintenanceLog(catalog)
    ledger.start(
        MaintenanceRun(
            id="w-1",
            window="weekly",
            dry_run=False,
            targets=["app"],
            procedures=["vacuum"],
            started_at=at(1),
            ends_at=at(3),
            quiet_until=at(3),
            host="host",
            pid=1,
        )
    )
    (action,) = ledger.record_plan(
        "w-1",
        [
            MaintenanceAction(
                procedure="vacuum",
                target="app",
                object="public.orders",
                statement="VACUUM public.orders",
                reason="dead 40 %",
            )
        ],
    )
    ledger.start_action("w-1", action.id, at(1, 5))
    ledger.record_outcome(
        "w-1",
        action.model_copy(
            update={"outcome": Outcome.DONE, "finished_at": at(1, 6), "duration": 60}
        ),
    )
    ledger.finish("w-1", MaintenanceStatus.DONE)


class Chat:
    def __init__(self) -> None:
        self.posts: list[dict] = []
        chat = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                chat.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/REPORT-TOKEN"


def test_the_daily_report_reads_one_local_day(write_config, tmp_path):
    config = write_config(timezone=ZONE)
    runtime = open_runtime(config)
    seed(runtime)
    report = build_daily_report(runtime.catalog, DAY, ZONE, now=at(23))
    assert report.health_runs == 4 and report.worst_status == "critical"
    (api,) = report.worst_checks
    assert (api.check, api.worst, api.failing_runs, api.critical_seconds) == (
        "http.status",
        "critical",
        2,
        7200.0,
    )
    assert [(c.before, c.after) for c in report.changes] == [("ok", "critical"), ("critical", "ok")]
    by_id = {b.id: b for b in report.backups}
    assert set(by_id) == {"b-new", "b-bad"}  # yesterday's is not today's
    assert by_id["b-new"].growth_percent == 50.0 and by_id["b-new"].status == "verified"
    assert by_id["b-bad"].status == "failed" and by_id["b-bad"].error == "pg_dump died"
    assert [v.backup_id for v in report.verifications] == ["b-new"]
    assert [d.id for d in report.drills] == ["d-1"]
    (window,) = report.maintenance
    assert window.applied == ["vacuum public.orders on app: done"]
    assert report.filename == "daily_20261120.md"


def test_runbook_report_daily_writes_publishes_and_sends(write_config, tmp_path):
    chat = Chat()
    config = write_config(
        timezone=ZONE,
        notifications={"routes": [{"name": "chat", "when": ["warn"], "slack": {"url": chat.url}}]},
        report={"daily": {"folder": "reports", "routes": ["chat"]}},
    )
    seed(open_runtime(config))
    try:
        result = CliRunner().invoke(
            app, ["report", "daily", "--date", DAY.isoformat(), "--json", "--config", str(config)]
        )
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        written = tmp_path / "reports" / "daily_20261120.md"
        assert out["file"] == str(written) and out["sent"] == ["chat"] and out["not_sent"] == []
        text = written.read_text()
        assert text.startswith("# Daily report 2026-11-20 (Europe/Berlin)")
        assert "| http.status | api | critical | 2 | 2h" in text
        assert "+50.0 %" in text and "**failed**" in text
        assert "vacuum public.orders on app: done" in text
        assert artifact_markdown("daily-report") == text
        (post,) = chat.posts
        assert post["text"].startswith("*Runbook daily report 2026-11-20*\n# Daily report")
        assert "REPORT-TOKEN" not in json.dumps(out) + text

        plain = CliRunner().invoke(
            app, ["report", "daily", "--date", "2026-13-01", "--config", str(config)]
        )
        assert plain.exit_code == 2 and "--date: expected YYYY-MM-DD" in plain.stderr
    finally:
        chat.server.shutdown()

    # A route that cannot be reached: the file is still written, the command says so, exit 1.
    write_config(
        timezone=ZONE,
        notifications={
            "routes": [
                {"name": "chat", "when": ["warn"], "slack": {"url": chat.url, "timeout": "1s"}}
            ]
        },
        report={"daily": {"routes": ["chat"]}},
    )
    result = CliRunner().invoke(
        app, ["report", "daily", "--date", DAY.isoformat(), "--config", str(config)]
    )
    assert result.exit_code == 1
    assert "not sent to route chat" in result.stderr
    assert (tmp_path / "reports" / "daily_20261120.md").exists()


def test_report_routes_must_exist():
    from pydantic import ValidationError

    from runbook.config import Config

    with pytest.raises(ValidationError, match=r"report.daily.routes\[0\]: no notification route"):
        Config.model_validate({"report": {"daily": {"routes": ["mail"]}}})
