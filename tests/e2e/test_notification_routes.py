"""Notification routes by severity, through the health flow: a local SMTP server (aiosmtpd,
STARTTLS required, AUTH) and local webhook receivers. A critical check reaches only the page
route (PagerDuty Events v2 shape), a warning only chat (Slack-compatible), a recovery the mail
route once; page repeats while failing, chat escalates to page after N runs, once."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from flows.daily_health import daily_health
from runbook.errors import RunFailed
from tests.support.certs import make_certificate

pytestmark = pytest.mark.usefixtures("prefect_harness")

SMTP_USER, SMTP_PASSWORD = "runbook", "Smtp-Route-Pw-913"
PAGE_KEY = "pd-routing-key-4471"


class Receivers:
    """/api (toggle healthy), /slow (ok), and recorders for /page/<token> and /chat/<token>."""

    def __init__(self) -> None:
        self.healthy = False
        self.page: list[dict] = []
        self.chat: list[dict] = []
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                code = 200 if self.path == "/slow" or receivers.healthy else 500
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                (receivers.page if self.path.startswith("/page/") else receivers.chat).append(body)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook
        self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp(tmp_path):
    cert, key = make_certificate(tmp_path, days=30)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
        if ok:
            mailbox.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 on failure

    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,  # nothing, not even AUTH, before STARTTLS
        authenticator=authenticate,
        auth_require_tls=True,
    )
    controller.start()
    yield mailbox, controller.port, cert
    controller.stop()


@pytest.fixture
def receivers():
    r = Receivers()
    yield r
    r.server.shutdown()
    r.server.server_close()


def run(**kwargs):
    state = daily_health(only=["http"], return_state=True)
    return RunFailed.summary_of(state.result(raise_on_failure=False))


def test_routes_by_severity_repeat_escalate_and_recover(write_config, receivers, smtp, monkeypatch):
    mailbox, smtp_port, ca = smtp
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("PAGER_URL", f"{receivers.url}/page/PAGE-TOKEN")
    write_config(
        {
            "http": [
                {"name": "api", "url": f"{receivers.url}/api"},  # 500 -> critical
                # any latency is over warn 0: a warning that never turns critical
                {
                    "name": "slow",
                    "url": f"{receivers.url}/slow",
                    "latency_seconds": {"warn": 0, "critical": 60},
                },
            ]
        },
        health={"notify_after": {"critical": 1, "warn": 1, "unknown": 1}},
        notifications={
            "routes": [
                {
                    "name": "page",
                    "when": ["critical"],
                    "webhook": {"url": "${PAGER_URL}", "routing_key": PAGE_KEY},
                    "repeat": "2s",
                },
                {
                    "name": "chat",
                    "when": ["warn"],
                    "slack": {"url": f"{receivers.url}/chat/CHAT-TOKEN"},
                    "escalate_after": 2,
                    "escalate_to": "page",
                },
                {
                    "name": "mail",
                    "when": ["unknown", "recovered"],
                    "email": {
                        "to": ["oncall@example.com"],
                        "smtp": f"smtp://127.0.0.1:{smtp_port}",
                        "from": "runbook@example.com",
                        "username": SMTP_USER,
                        "password": "${SMTP_PASSWORD}",
                        "ca_file": str(ca),
                    },
                },
            ]
        },
    )

    # Run 1: the critical check pages, the warning goes to chat, nothing is mailed.
    first = run()
    assert {(c.check, c.target, c.status.value) for c in first.checks if c.status != "ok"} == {
        ("http.status", "api", "critical"),
        ("http.latency", "slow", "warn"),
    }
    (event,) = receivers.page
    assert event["event_action"] == "trigger" and event["routing_key"] == PAGE_KEY
    assert event["dedup_key"] == "runbook:http.status:api"
    assert event["payload"]["severity"] == "critical" and event["payload"]["source"] == "api"
    assert event["payload"]["summary"].startswith("critical: http.status on api")
    (chat,) = receivers.chat
    assert "`http.latency` on *slow*" in chat["text"] and "api" not in chat["text"]
    assert mailbox.messages == []

    # Run 2: still failing within page's repeat: no repeat; chat's warning has failed two runs
    # in a row: escalated to page, once.
    second = run()
    assert len(receivers.chat) == 1
    (escalation,) = receivers.page[1:]
    assert escalation["dedup_key"] == "runbook:http.latency:slow"
    assert escalation["payload"]["severity"] == "warning"
    assert escalation["payload"]["custom_details"]["escalated_from"] == "chat"
    assert second.status == "critical"

    # Run 3, past page's repeat interval: page is told again about the critical check only
    # (the escalation is not repeated, the warning is not page's).
    time.sleep(2.2)
    run()
    repeats = receivers.page[2:]
    assert [e["dedup_key"] for e in repeats] == ["runbook:http.status:api"]
    assert repeats[0]["payload"]["custom_details"]["reason"] == "repeat"
    assert len(receivers.chat) == 1 and mailbox.messages == []

    # Run 4: the API recovers: mailed once (STARTTLS, AUTH), nothing paged or chatted.
    receivers.healthy = True
    run()
    run()
    assert len(mailbox.messages) == 1
    recipients, content = mailbox.messages[0]
    assert recipients == ["oncall@example.com"]
    assert "Subject: recovered: 1 check(s)" in content and "http.status on api" in content
    assert mailbox.logins == ["LOGIN"] or mailbox.logins == ["PLAIN"]
    assert len(receivers.page) == 3 and len(receivers.chat) == 1

    # No secret in anything sent.
    sent = json.dumps(receivers.page + receivers.chat) + content
    for secret in (SMTP_PASSWORD, "PAGE-TOKEN", "CHAT-TOKEN"):
        assert secret not in sent


def test_a_route_that_cannot_send_does_not_stop_the_others(write_config, receivers, smtp):
    mailbox, smtp_port, ca = smtp
    write_config(
        {"http": [{"name": "api", "url": f"{receivers.url}/api"}]},
        notifications={
            "routes": [
                {
                    "name": "mail",
                    "when": ["critical"],
                    "email": {
                        "to": ["oncall@example.com"],
                        "smtp": f"smtp://127.0.0.1:{smtp_port}",
                        "username": SMTP_USER,
                        "password": "wrong-password-1",
                        "ca_file": str(ca),
                    },
                },
                {
                    "name": "page",
                    "when": ["critical"],
                    "webhook": {"url": f"{receivers.url}/page/T"},
                },
            ],
        },
    )
    started = time.monotonic()
    report = run()
    assert report.status == "critical"
    assert len(receivers.page) == 1 and mailbox.messages == []  # refused login, page still sent
    assert time.monotonic() - started < 10  # a refused login is not retried
