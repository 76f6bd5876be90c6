"""tasks.health.http against real local servers on 127.0.0.1: plain HTTP (healthy, failing
check, slow, 500, bad JSON, secrets), a socket that accepts and never answers, a refused port,
and TLS servers with self-signed certificates that expire in -2, 3, 20 and 90 days (made with
`cryptography`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from runbook.config import HttpExpect, HttpTarget, Threshold
from runbook.health import CheckResult, Status
from runbook.systems.http import redact_url
from tasks.health.http import check_endpoint, check_http, json_failures
from tests.support.certs import make_certificate

HOST = "127.0.0.1"
HEALTHY = {"status": "healthy", "ready": True, "checks": {"db": True, "cache": True}}
CACHE_DOWN = {"status": "healthy", "ready": True, "checks": {"db": True, "cache": False}}
ALL_TRUE = {"status": "healthy", "ready": True, "checks.*": True}

API_KEY = "k3y-0f-the-api-5e1f9c"
BEARER = "tok-abcdef-0123456789-xyz"
URL_USER = "opsuser"
URL_PASSWORD = "pw-Sup3r-s3cret"
QUERY_TOKEN = "qtok-777-ABCDEF"
BASIC = base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()
SECRETS = [API_KEY, BEARER, URL_PASSWORD, QUERY_TOKEN, URL_USER, BASIC]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, doc: Any) -> None:
        self._send(code, json.dumps(doc).encode())

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = urlsplit(self.path).path
        if path in ("/health", "/ready", "/status"):
            self._json(200, HEALTHY)
        elif path == "/cache-down":
            self._json(200, CACHE_DOWN)
        elif path == "/items":
            self._json(200, {"items": [{"ok": True}, {"ok": False}, {"ok": 1}], "empty": {}})
        elif path == "/slow":
            time.sleep(1.5)
            self._json(200, HEALTHY)
        elif path == "/error":
            self._json(500, {"status": "error"})
        elif path == "/badjson":
            self._send(200, b"<html>oops</html>", "text/html")
        elif path == "/metrics":
            self._send(200, b"# TYPE up gauge\nup 1\n", "text/plain")
        elif path == "/private":
            allowed = (
                self.headers.get("X-Api-Key") == API_KEY
                and self.headers.get("Authorization") == f"Basic {BASIC}"
            )
            self._json(200 if allowed else 403, HEALTHY if allowed else {"status": "denied"})
        elif path == "/echo":  # a server that repeats the request's secrets in its body
            self._json(
                200,
                {
                    "status": self.headers.get("Authorization", ""),
                    "ready": self.headers.get("X-Api-Key", ""),
                    "token": self.headers.get("Authorization", "").split(" ")[-1],
                    "path": self.path,
                },
            )
        else:
            self._json(404, {"error": "not found"})


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    server = ThreadingHTTPServer((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def hung() -> Iterator[str]:
    """Completes TCP handshakes (the kernel's backlog) and never reads or answers."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(64)
    yield f"http://{HOST}:{sock.getsockname()[1]}/health"
    sock.close()


@pytest.fixture
def refused_port() -> int:
    sock = socket.socket()
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[float, tuple[str, Path]]]:
    """days left -> (https URL of /health, certificate file) for four TLS servers."""
    folder = tmp_path_factory.mktemp("certs")
    servers, found = [], {}
    for days in (-2, 3, 20, 90):
        cert_path, key_path = make_certificate(folder, days)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        server = ThreadingHTTPServer((HOST, 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        found[days] = (f"https://{HOST}:{server.server_address[1]}/health", cert_path)
    yield found
    for server in servers:
        server.shutdown()
        server.server_close()


def target(url: str, name: str = "api", **kwargs: Any) -> HttpTarget:
    return HttpTarget(name=name, url=url, **kwargs)


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


# --- plain HTTP ------------------------------------------------------------------------------


def test_healthy_endpoints_are_ok_with_every_check(web: str) -> None:
    targets = [
        target(f"{web}/health", "health", expect=HttpExpect(json=ALL_TRUE)),
        target(f"{web}/ready", "ready", expect=HttpExpect(json={"ready": True})),
        target(f"{web}/status", "status", expect=HttpExpect(body_contains='"healthy"')),
        target(f"{web}/metrics", "metrics", expect=HttpExpect(body_contains="up 1")),
    ]
    results = check_http(targets)
    assert [r.target for r in results] == [
        "health", "health", "health", "ready", "ready", "ready",
        "status", "status", "status", "metrics", "metrics", "metrics",
    ]  # fmt: skip
    assert [r.check for r in results[:3]] == ["http.status", "http.latency", "http.json"]
    assert all(r.status == Status.OK for r in results), [r.message for r in results]
    status = results[0]
    assert status.value == 200 and status.message == f"GET {web}/health returned 200"
    latency = results[1]
    assert 0 < latency.value < 1 and latency.threshold == "warn > 1s, critical > 2s"
    assert by_check(results[6:9])["http.body"].value is True


def test_a_false_check_fails_the_json_condition_naming_it(web: str) -> None:
    [status, _, body] = check_http([target(f"{web}/cache-down", expect=HttpExpect(json=ALL_TRUE))])
    assert status.status == Status.OK
    assert body.check == "http.json" and body.status == Status.CRITICAL
    assert body.message == "checks.cache is false, expected true"
    assert body.value == 1


def test_500_bad_json_and_missing_text_are_critical(web: str) -> None:
    results = check_http(
        [
            target(f"{web}/error", "error", expect=HttpExpect(status=[200, 204])),
            target(f"{web}/badjson", "badjson", expect=HttpExpect(json={"status": "healthy"})),
            target(f"{web}/metrics", "metrics", expect=HttpExpect(body_contains="up 0")),
        ]
    )
    error = [r for r in results if r.target == "error"]
    assert error[0].status == Status.CRITICAL and error[0].value == 500
    assert error[0].message == f"GET {web}/error returned 500 (expected 200 or 204)"
    assert error[1].check == "http.latency" and error[1].status == Status.OK
    bad = by_check([r for r in results if r.target == "badjson"])
    assert bad["http.status"].status == Status.OK
    assert bad["http.json"].status == Status.CRITICAL
    assert bad["http.json"].message == "body is not JSON"
    metrics = by_check([r for r in results if r.target == "metrics"])
    assert metrics["http.body"].status == Status.CRITICAL
    assert metrics["http.body"].message == "body does not contain 'up 0'"


def test_every_failing_json_condition_is_listed(web: str) -> None:
    expect = HttpExpect(json={"items.*.ok": True, "items.5.ok": True, "empty.*": 1, "nope": 2})
    [_, _, result] = check_http([target(f"{web}/items", expect=expect)])
    assert result.status == Status.CRITICAL and result.value == 5
    assert result.message.split("; ") == [
        "items.1.ok is false, expected true",
        "items.2.ok is 1, expected true",  # JSON 1 is not true
        "items.5.ok is missing",
        "empty.* matched nothing ({})",
        "nope is missing",
    ]


def test_json_paths_walk_lists_and_mappings() -> None:
    doc = {"checks": {"db": True, "cache": False}, "nodes": [{"up": True}, {"up": True}]}
    assert json_failures(doc, {"checks.db": True, "nodes.*.up": True, "nodes.-1.up": True}) == []
    assert json_failures(doc, {"checks.*": True}) == ["checks.cache is false, expected true"]
    assert json_failures(doc, {"checks.db.x": True}) == ["checks.db.x is missing"]
    assert json_failures(doc, {"nodes.*.up.*": True}) == [
        "nodes.0.up is true, not a list or mapping for nodes.*.up.*",
        "nodes.1.up is true, not a list or mapping for nodes.*.up.*",
    ]


def test_slow_answers_are_graded_by_latency(web: str) -> None:
    slow = target(f"{web}/slow", latency_seconds=Threshold(warn=0.5, critical=1.0))
    [status, latency] = check_http([slow])
    assert status.status == Status.OK
    assert latency.status == Status.CRITICAL and 1.4 < latency.value < 3
    assert latency.threshold == "warn > 0.5s, critical > 1s"


def test_a_hung_server_cannot_stall_the_run(web: str, hung: str) -> None:
    targets = [
        target(f"{web}/health", "health", expect=HttpExpect(json=ALL_TRUE)),
        target(hung, "hung", timeout=timedelta(seconds=1)),
        target(f"{web}/error", "error"),
        target(f"{web}/cache-down", "cache", expect=HttpExpect(json=ALL_TRUE)),
        target(f"{web}/slow", "slow", latency_seconds=Threshold(warn=0.5, critical=1.0)),
    ]
    started = time.monotonic()
    results = check_http(targets)
    assert time.monotonic() - started < 1 + 2
    assert [r.target for r in results] == [
        "health", "health", "health", "hung", "error", "error", "cache", "cache", "cache",
        "slow", "slow",
    ]  # fmt: skip
    [hung_result] = [r for r in results if r.target == "hung"]
    assert hung_result.check == "http.status" and hung_result.status == Status.CRITICAL
    assert hung_result.message.endswith("timed out after 1s")
    assert {r.status for r in results if r.target == "health"} == {Status.OK}
    assert results[4].status == Status.CRITICAL and results[4].value == 500
    assert results[8].status == Status.CRITICAL and "checks.cache" in results[8].message
    assert results[10].check == "http.latency" and results[10].status == Status.CRITICAL


def test_the_hard_deadline_bounds_each_endpoint(web: str, hung: str) -> None:
    targets = [target(hung, "hung", timeout=timedelta(seconds=30)), target(f"{web}/health")]
    started = time.monotonic()
    results = check_http(targets, unreachable=Status.UNKNOWN, deadline=0.5)
    assert time.monotonic() - started < 2
    assert results[0].status == Status.UNKNOWN
    assert results[0].message == f"GET {hung}: no answer within 0.5s"
    assert results[1].status == Status.OK and results[1].target == "api"


@pytest.mark.parametrize("unreachable", [Status.UNKNOWN, Status.CRITICAL])
def test_a_refused_connection_gets_the_unreachable_status(
    refused_port: int, unreachable: Status
) -> None:
    results = check_http(
        [
            target(f"http://{HOST}:{refused_port}/health", "down"),
            target(f"https://{HOST}:{refused_port}/health", "down-tls"),
        ],
        unreachable=unreachable,
    )
    assert [r.check for r in results] == ["http.status", "http.status"]  # nothing else
    for result in results:
        assert result.status == unreachable and result.value is None
        assert result.message.endswith(": connection refused")


def test_an_unknown_host_is_unreachable() -> None:
    [result] = check_http([target("http://no-such-host.invalid/health")])
    assert result.status == Status.CRITICAL
    assert "cannot resolve host no-such-host.invalid" in result.message


def test_unreachable_can_never_be_ok(web: str) -> None:
    with pytest.raises(ValueError, match="never ok"):
        check_http([target(f"{web}/health")], unreachable=Status.OK)


def test_safe_inside_a_running_event_loop_and_a_plain_thread(web: str) -> None:
    targets = [target(f"{web}/health", expect=HttpExpect(json=ALL_TRUE))]

    async def inside_a_loop() -> list[CheckResult]:
        return check_http(targets)  # as a sync task called from an async flow would

    in_loop = asyncio.run(inside_a_loop())
    from_thread: list[CheckResult] = []
    worker = threading.Thread(target=lambda: from_thread.extend(check_http(targets)))
    worker.start()
    worker.join(10)
    for results in (in_loop, from_thread):
        assert [r.status for r in results] == [Status.OK, Status.OK, Status.OK]


def test_check_endpoint_with_a_caller_supplied_client(web: str) -> None:
    async def run() -> list[CheckResult]:
        async with httpx.AsyncClient() as client:
            return await check_endpoint(target(f"{web}/error"), client, Status.UNKNOWN)

    [status, latency] = asyncio.run(run())
    assert status.status == Status.CRITICAL and status.value == 500
    assert latency.check == "http.latency"


# --- secrets ---------------------------------------------------------------------------------


def secret_target(base: str, path: str, **kwargs: Any) -> HttpTarget:
    netloc = urlsplit(base).netloc
    return HttpTarget(
        name=path.strip("/").replace("/", "-") or "root",
        url=f"http://{URL_USER}:{URL_PASSWORD}@{netloc}{path}?token={QUERY_TOKEN}&env=prod",
        headers={"X-Api-Key": API_KEY, "Authorization-Extra": f"Bearer {BEARER}"},
        **kwargs,
    )


def test_headers_and_url_credentials_are_sent(web: str) -> None:
    [status, _] = check_http([secret_target(web, "/private")])
    assert status.status == Status.OK, status.message  # 403 without both credentials


def test_no_secret_appears_in_any_result(web: str, refused_port: int) -> None:
    targets = [
        secret_target(web, "/error"),
        secret_target(web, "/echo", expect=HttpExpect(json={"status": "healthy", "ready": True})),
        secret_target(f"http://{HOST}:{refused_port}", "/refused"),
        HttpTarget(
            name="echo-bearer",
            url=f"{web}/echo",
            headers={"Authorization": f"Bearer {BEARER}"},
            expect=HttpExpect(json={"status": "healthy", "token": "none"}),
        ),
    ]
    results = check_http(targets)
    assert len(results) == 2 + 3 + 1 + 3
    netloc = urlsplit(web).netloc
    assert results[0].message == (
        f"GET http://{netloc}/error?token=***&env=*** returned 500 (expected 200)"
    )
    echo = results[4]
    assert echo.check == "http.json" and echo.status == Status.CRITICAL
    assert echo.message == (  # the server echoed both credentials
        'status is "Basic ***", expected "healthy"; ready is "***", expected true'
    )
    assert "connection refused" in results[5].message
    bearer = results[8]
    assert bearer.message == (  # the whole header, and the credential alone
        'status is "***", expected "healthy"; token is "***", expected "none"'
    )
    dumped = "\n".join(r.model_dump_json() for r in results)
    for secret in SECRETS:
        assert secret not in dumped


def test_redact_url_drops_userinfo_query_values_and_fragment() -> None:
    shown = redact_url("https://u:p%40ss@example.com:8443/health?api_key=abc&x=1#frag")
    assert shown == "https://example.com:8443/health?api_key=***&x=***"


# --- TLS -------------------------------------------------------------------------------------


def test_a_certificate_expiring_in_3_days_is_critical(tls: dict) -> None:
    url, _ = tls[3]
    results = by_check(check_http([target(url, verify_tls=False)]))
    assert results["http.status"].status == Status.OK  # not verified: the answer counts
    days = results["tls.days_left"]
    assert days.status == Status.CRITICAL and abs(days.value - 3) < 0.05
    assert days.threshold == "warn < 30d, critical < 7d"
    assert "CN=runbook-test expires in 3.0 days" in days.message


def test_verification_fails_without_the_ca_and_passes_with_it(tls: dict) -> None:
    url, cert_file = tls[3]
    results = check_http(
        [
            target(url, "unverified"),
            target(url, "with-ca", ca_file=cert_file),
            target(url, "missing-ca", ca_file=cert_file.with_name("missing.pem")),
        ],
        unreachable=Status.UNKNOWN,
    )
    unverified = by_check([r for r in results if r.target == "unverified"])
    assert set(unverified) == {"http.status", "tls.days_left"}  # still tells the expiry
    assert unverified["http.status"].status == Status.CRITICAL  # a finding, not "unknown"
    assert "TLS certificate verification failed: self-signed certificate" in (
        unverified["http.status"].message
    )
    assert unverified["tls.days_left"].status == Status.CRITICAL
    with_ca = by_check([r for r in results if r.target == "with-ca"])
    assert with_ca["http.status"].status == Status.OK, with_ca["http.status"].message
    assert with_ca["http.latency"].status == Status.OK
    [missing] = [r for r in results if r.target == "missing-ca"]
    assert missing.status == Status.CRITICAL and "cannot load ca_file" in missing.message


@pytest.mark.parametrize(
    ("days", "expected"), [(20, Status.WARN), (90, Status.OK), (-2, Status.CRITICAL)]
)
def test_days_left_is_graded(tls: dict, days: int, expected: Status) -> None:
    url, cert_file = tls[days]
    results = by_check(check_http([target(url, ca_file=cert_file)]))
    left = results["tls.days_left"]
    assert left.status == expected and abs(left.value - days) < 0.05
    if days < 0:
        assert "expired 2.0 days ago" in left.message
        assert results["http.status"].status == Status.CRITICAL
        assert "certificate has expired" in results["http.status"].message
    else:
        assert results["http.status"].status == Status.OK
