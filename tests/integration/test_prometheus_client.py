"""runbook.systems.prometheus on its own (as the capacity report will use it): series from the
HTTP API, typed errors, and no header value or URL password in any error's text."""

from __future__ import annotations

import json
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from runbook.systems.prometheus import (
    NotAnAnswer,
    Prometheus,
    PrometheusUnreachable,
    QueryError,
    labels_text,
)
from tests.support.fake_apis import closed_port_url

TOKEN = "prom-client-bearer-5a4b3c2d1e"
PASSWORD = "prom-client-pw-0xBEEF"


class Echoing(BaseHTTPRequestHandler):
    """/api/v1/query: `up` answers a vector; `bad(` an error, `html` a page, each quoting the
    Authorization header received, as a badly behaved proxy might."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        query = parse_qs(urlsplit(self.path).query).get("query", [""])[0]
        auth = self.headers.get("Authorization", "")
        kind = "application/json"
        if query == "up":
            result = [{"metric": {"__name__": "up", "job": "api"}, "value": [1.0, "1"]}]
            data = {"resultType": "vector", "result": result}
            code, body = 200, {"status": "success", "data": data}
        elif query == "html":
            code, body, kind = 502, f"<html>Bad Gateway for {auth}</html>", "text/html"
        else:
            code, body = 400, {"status": "error", "errorType": "bad_data", "error": f"no: {auth}"}
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echoing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://ops:{PASSWORD}@127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def client(url: str) -> Prometheus:
    return Prometheus(url, {"Authorization": SecretStr(f"Bearer {TOKEN}")}, timeout=5)


def test_a_query_answers_series(url: str) -> None:
    with client(url) as prometheus:
        [(labels, value)] = prometheus.query("up")

    assert (labels_text(labels), value) == ('up{job="api"}', 1.0)


def test_errors_are_typed_and_quote_no_secret(url: str) -> None:
    with client(url) as prometheus:
        with pytest.raises(QueryError) as refused:
            prometheus.query("bad(")
        with pytest.raises(NotAnAnswer) as proxy:
            prometheus.query("html")

    assert refused.value.error_type == "bad_data"
    assert str(refused.value) == "Prometheus error (bad_data): no: ***"  # the header value
    assert str(proxy.value).startswith("HTTP 502 is not a Prometheus API answer: body '<html>")
    for error in (refused.value, proxy.value):
        shown = "".join(traceback.format_exception(error))
        assert TOKEN not in shown and PASSWORD not in shown


def test_a_refused_port_is_unreachable_without_the_password() -> None:
    down = closed_port_url("http").replace("http://", f"http://ops:{PASSWORD}@")

    with Prometheus(down, timeout=3) as prometheus, pytest.raises(PrometheusUnreachable) as raised:
        prometheus.query("up")

    assert raised.value.connection_failed
    assert str(raised.value).endswith("/api/v1/query: connection refused")
    assert PASSWORD not in "".join(traceback.format_exception(raised.value))
