"""HTTP checks with a method, headers and a request body against a real local server: runbook
000's smoke test (POST /api/v1/evaluate with a JSON body), PUT/PATCH/DELETE, text bodies, and
a secret body that the server echoes back and that still appears in no result."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from runbook.config import HttpExpect, HttpTarget
from runbook.health import CheckResult, Status
from tasks.health.http import check_http

HOST = "127.0.0.1"
SMOKE = {"model_name": "test-model", "input": {"features": [1.0, 2.5]}, "dry_run": True}
TOKEN = "evaluate-token-9f8e7d6c"
SECRET_PASSWORD = "body-pa55word-c0ffee"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, code: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _request(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        Handler.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "content_type": self.headers.get("Content-Type"),
                "authorization": self.headers.get("Authorization"),
                "body": raw.decode(),
            }
        )
        if self.path == "/api/v1/evaluate":
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._answer(401, {"detail": "missing token"})
            try:
                doc = json.loads(raw)
            except ValueError:
                return self._answer(400, {"detail": "body is not JSON"})
            if doc.get("model_name") != "test-model":
                return self._answer(422, {"detail": f"unknown model {doc.get('model_name')}"})
            return self._answer(200, {"status": "success", "model": doc["model_name"]})
        if self.path == "/login":  # echoes what it was sent, as validation errors often do
            return self._answer(422, {"status": f"rejected: {raw.decode()}", "error": raw.decode()})
        return self._answer(200, {"method": self.command, "body": raw.decode()})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _request  # noqa: N815


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    server = ThreadingHTTPServer((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def test_the_smoke_test_posts_its_json_body_with_headers(api: str) -> None:
    Handler.seen.clear()
    smoke = HttpTarget(
        name="evaluate",
        url=f"{api}/api/v1/evaluate",
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json=SMOKE,
        expect=HttpExpect(json={"status": "success"}),
    )
    checks = by_check(check_http([smoke]))
    assert checks["http.status"].status == Status.OK, checks["http.status"]
    assert checks["http.json"].status == Status.OK, checks["http.json"]
    assert checks["http.status"].message.startswith("POST http://")
    (seen,) = Handler.seen
    assert (seen["method"], seen["content_type"]) == ("POST", "application/json")
    assert json.loads(seen["body"]) == SMOKE


def test_a_wrong_body_fails_the_smoke_test(api: str) -> None:
    wrong = HttpTarget(
        name="evaluate",
        url=f"{api}/api/v1/evaluate",
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={**SMOKE, "model_name": "no-such-model"},
        expect=HttpExpect(json={"status": "success"}),
    )
    checks = by_check(check_http([wrong]))
    assert (checks["http.status"].status, checks["http.status"].value) == (Status.CRITICAL, 422)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_every_method_sends_its_text_body(api: str, method: str) -> None:
    Handler.seen.clear()
    target = HttpTarget(
        name="echo",
        url=f"{api}/echo",
        method=method,
        body="ping=1",
        expect=HttpExpect(json={"method": method, "body": "ping=1"}),
    )
    checks = by_check(check_http([target]))
    assert checks["http.json"].status == Status.OK, checks["http.json"]
    assert Handler.seen[-1]["content_type"] == "text/plain; charset=utf-8"


def test_a_content_type_header_wins_over_the_default(api: str) -> None:
    Handler.seen.clear()
    target = HttpTarget(
        name="form",
        url=f"{api}/echo",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body="a=1&b=2",
    )
    assert by_check(check_http([target]))["http.status"].status == Status.OK
    assert Handler.seen[-1]["content_type"] == "application/x-www-form-urlencoded"
    assert Handler.seen[-1]["body"] == "a=1&b=2"


def test_a_secret_body_echoed_back_appears_in_no_result(api: str) -> None:
    secret_json = HttpTarget(
        name="login-json",
        url=f"{api}/login",
        method="POST",
        json={"user": "ops", "password": SECRET_PASSWORD},
        body_secret=True,
        expect=HttpExpect(json={"status": "ok"}),
    )
    secret_text = HttpTarget(
        name="login-text",
        url=f"{api}/login",
        method="POST",
        body=f"password={SECRET_PASSWORD}",
        body_secret=True,
        expect=HttpExpect(json={"status": "ok"}),
    )
    results = check_http([secret_json, secret_text])
    json_checks = [r for r in results if r.check == "http.json"]
    assert [r.status for r in json_checks] == [Status.CRITICAL, Status.CRITICAL]
    assert "***" in json_checks[0].message and "***" in json_checks[1].message
    dumped = "\n".join(r.model_dump_json() for r in results)
    assert SECRET_PASSWORD not in dumped
    assert SECRET_PASSWORD not in repr(secret_json) and SECRET_PASSWORD not in repr(secret_text)
    # without body_secret the same echo is shown: the flag is what protects it
    shown = secret_text.model_copy(update={"body_secret": False})
    assert SECRET_PASSWORD in "\n".join(r.message for r in check_http([shown]))


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"method": "GET", "json": {"a": 1}}, "json is set but method is GET"),
        ({"method": "HEAD", "body": "x"}, "body is set but method is HEAD"),
        ({"method": "POST", "json": {"a": 1}, "body": "x"}, "json and body are both set"),
        ({"method": "TRACE"}, "method"),
    ],
)
def test_bad_bodies_and_methods_are_named(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        HttpTarget(name="x", url="http://127.0.0.1/", **fields)
