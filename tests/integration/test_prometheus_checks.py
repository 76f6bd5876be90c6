"""tasks.health.prometheus against a fake Prometheus on 127.0.0.1 that implements /api/v1/query with
the real API's JSON: vectors of several series, scalar, matrix, empty, NaN/Inf and errors,
chosen by the query string (so the query's URL encoding is tested too)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from runbook.config import PrometheusTarget, PromQuery
from runbook.health import Status, grade
from tasks.health.prometheus import RUNBOOK_EXAMPLES, check_prometheus

HOST = "127.0.0.1"
TOKEN = "prom-bearer-9f8e7d6c5b"
URL_PASSWORD = "prom-pw-0xC0FFEE"
NOW = 1_760_000_000.123
EXAMPLES = {q.name: q for q in RUNBOOK_EXAMPLES}


def vector(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": labels, "value": [NOW, value]} for labels, value in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def error(kind: str, text: str) -> dict[str, Any]:
    return {"status": "error", "errorType": kind, "error": text}


ANSWERS: dict[str, tuple[int, Any]] = {
    "sum by (job) (rate(errors_total[5m]))": (
        200,
        vector(({"job": "api"}, "0.01"), ({"job": "batch"}, "0.3"), ({"job": "worker"}, "0.07")),
    ),
    "provider_health_score": (
        200,
        vector(
            ({"__name__": "provider_health_score", "provider": "openai"}, "97"),
            ({"__name__": "provider_health_score", "provider": "deepseek"}, "42"),
            ({"__name__": "provider_health_score", "provider": "claude"}, "60"),
        ),
    ),
    "scalar(sum(up))": (
        200,
        {"status": "success", "data": {"resultType": "scalar", "result": [NOW, "3"]}},
    ),
    "up[5m]": (
        200,
        {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [
                    {"metric": {"instance": "a"}, "values": [[NOW - 60, "1"], [NOW, "99"]]},
                    {"metric": {"instance": "b"}, "values": [[NOW - 60, "100"], [NOW, "5"]]},
                ],
            },
        },
    ),
    "absent_metric": (200, vector()),
    "rate(": (400, error("bad_data", "1:6: parse error: unclosed left parenthesis")),
    "slow_query": (503, error("timeout", "query timed out in expression evaluation")),
    "nan_ratio": (200, vector(({"job": "idle"}, "NaN"))),
    "mixed_ratio": (200, vector(({"job": "idle"}, "NaN"), ({"job": "busy"}, "0.5"))),
    "inf_ratio": (200, vector(({"job": "x"}, "+Inf"))),
    "proxy_error": (502, "<html>Bad Gateway</html>"),
    "echo_auth": (422, None),  # an error whose text repeats the request's credentials
    # Runbooks 000/001 examples, keyed by their exact PromQL
    EXAMPLES["error-ratio"].query: (200, vector(({}, "0.07"))),
    EXAMPLES["p95-latency"].query: (200, vector(({}, "2.5"))),
    EXAMPLES["provider-health"].query: (
        200,
        vector(({"provider": "openai"}, "97"), ({"provider": "deepseek"}, "42")),
    ),
    EXAMPLES["error-budget"].query: (200, vector(({"slo": "availability"}, "0.35"))),
    EXAMPLES["node-cpu"].query: (
        200,
        vector(({"instance": "db1:9100"}, "50"), ({"instance": "web1:9100"}, "90.5")),
    ),
    EXAMPLES["node-memory"].query: (200, vector(({"instance": "db1:9100"}, "93"))),
    EXAMPLES["node-disk"].query: (
        200,
        vector(({"instance": "db1:9100", "mountpoint": "/var/lib/postgresql"}, "97.2")),
    ),
}


class FakePrometheus(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen_headers: list[dict[str, str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = urlsplit(self.path)
        FakePrometheus.seen_headers.append(dict(self.headers))
        query = parse_qs(parts.query).get("query", [""])[0]
        if parts.path != "/api/v1/query":
            code, payload = 404, "404 page not found"
        elif query == "echo_auth":
            text = f"execution: denied for {self.headers.get('Authorization')}"
            code, payload = 422, error("execution", text)
        else:
            code, payload = ANSWERS.get(query, (400, error("bad_data", f"unknown {query!r}")))
        body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html" if isinstance(payload, str) else "json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer((HOST, 0), FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://{HOST}:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def run(url: str, *queries: PromQuery, **kwargs: Any) -> list:
    return check_prometheus(PrometheusTarget(name="prom", url=url, queries=list(queries)), **kwargs)


def test_the_worst_series_is_graded_and_named(prometheus: str) -> None:
    [result] = run(
        prometheus,
        PromQuery(name="errors", query="sum by (job) (rate(errors_total[5m]))", warn=0.05,
                  critical=0.2),
    )  # fmt: skip
    assert result.check == "prometheus.errors" and result.target == "prom"
    assert result.status == Status.CRITICAL and result.value == 0.3
    assert result.message == '0.3 for {job="batch"}; 2 of 3 series breach'
    assert result.threshold == "warn > 0.05, critical > 0.2"


def test_for_a_lower_bound_the_lowest_series_is_the_worst(prometheus: str) -> None:
    [result] = run(
        prometheus,
        PromQuery(name="providers", query="provider_health_score", warn=70, critical=50, op="<"),
    )
    assert result.status == Status.CRITICAL and result.value == 42
    assert (
        result.message == '42 for provider_health_score{provider="deepseek"}; 2 of 3 series breach'
    )


def test_scalar_matrix_and_no_data(prometheus: str) -> None:
    results = run(
        prometheus,
        PromQuery(name="targets-up", query="scalar(sum(up))", warn=3, critical=1, op="<"),
        PromQuery(name="last-sample", query="up[5m]", warn=90),
        PromQuery(name="absent", query="absent_metric", warn=1),
        PromQuery(name="absent-strict", query="absent_metric", warn=1, no_data="critical"),
    )
    assert [r.check for r in results] == [
        "prometheus.targets-up", "prometheus.last-sample",
        "prometheus.absent", "prometheus.absent-strict",
    ]  # fmt: skip
    scalar, matrix, absent, strict = results
    assert scalar.status == Status.OK and scalar.value == 3 and scalar.message == "3"
    assert matrix.status == Status.WARN and matrix.value == 99  # last samples: a=99, b=5
    assert matrix.message == '99 for {instance="a"}; 1 of 2 series breach'
    assert absent.status == Status.UNKNOWN and absent.message.startswith("no data")
    assert strict.status == Status.CRITICAL and strict.value is None


def test_api_errors_are_critical_and_named(prometheus: str) -> None:
    bad, slow = run(
        prometheus,
        PromQuery(name="broken", query="rate(", warn=1),
        PromQuery(name="slow", query="slow_query", warn=1),
        unreachable=Status.UNKNOWN,
    )
    assert bad.status == Status.CRITICAL
    assert bad.message == "Prometheus error (bad_data): 1:6: parse error: unclosed left parenthesis"
    assert slow.status == Status.CRITICAL and "(timeout)" in slow.message


def test_nan_inf_and_answers_that_are_not_the_api(prometheus: str) -> None:
    nan, mixed, inf, proxy = run(
        prometheus,
        PromQuery(name="nan", query="nan_ratio", warn=0.1),
        PromQuery(name="mixed", query="mixed_ratio", warn=0.1, critical=0.4),
        PromQuery(name="inf", query="inf_ratio", warn=0.1),
        PromQuery(name="proxy", query="proxy_error", warn=0.1),
        unreachable=Status.UNKNOWN,
    )
    assert nan.status == Status.UNKNOWN and "NaN for all 1 series" in nan.message
    assert mixed.status == Status.CRITICAL and mixed.value == 0.5
    assert mixed.message == '0.5 for {job="busy"}; 1 of 2 series breach; 1 series NaN'
    assert inf.status == Status.WARN and inf.value == "+Inf"
    assert proxy.status == Status.UNKNOWN
    assert proxy.message.startswith("HTTP 502 is not a Prometheus API answer")
    assert all(r.model_dump_json() for r in (nan, mixed, inf, proxy))  # all serialisable


def test_the_runbook_examples_grade_as_the_runbooks_say(prometheus: str) -> None:
    results = {r.check.removeprefix("prometheus."): r for r in run(prometheus, *RUNBOOK_EXAMPLES)}
    assert {name: r.status for name, r in results.items()} == {
        "error-ratio": Status.WARN,  # 7 % > 5 %
        "p95-latency": Status.CRITICAL,  # 2.5 s > 2 s
        "provider-health": Status.WARN,  # deepseek 42 < 50
        "error-budget": Status.OK,  # 35 % left
        "node-cpu": Status.WARN,  # web1 90.5 % > 85 %
        "node-memory": Status.WARN,  # 93 % > 90 %
        "node-disk": Status.CRITICAL,  # 97.2 % > 95 %
    }
    assert 'provider="deepseek"' in results["provider-health"].message
    assert results["node-cpu"].message == '90.5% for {instance="web1:9100"}; 1 of 2 series breach'
    assert results["node-disk"].threshold == "warn > 85%, critical > 95%"
    # thresholds at the runbooks' edges
    assert grade(0.2, EXAMPLES["error-budget"].threshold) == Status.OK
    assert grade(0.19, EXAMPLES["error-budget"].threshold) == Status.WARN
    assert grade(-0.01, EXAMPLES["error-budget"].threshold) == Status.CRITICAL
    assert grade(0.051, EXAMPLES["error-ratio"].threshold) == Status.WARN


@pytest.mark.parametrize("unreachable", [Status.UNKNOWN, Status.CRITICAL])
def test_an_unreachable_prometheus_fails_every_query_once(unreachable: Status) -> None:
    sock = socket.socket()
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    sock.close()
    started = time.monotonic()
    results = run(
        f"http://{HOST}:{port}",
        *RUNBOOK_EXAMPLES[:3],
        unreachable=unreachable,
    )
    assert time.monotonic() - started < 2
    assert [r.status for r in results] == [unreachable] * 3
    assert all(r.message.endswith("/api/v1/query: connection refused") for r in results)


def test_headers_are_sent_and_no_secret_appears(prometheus: str) -> None:
    FakePrometheus.seen_headers.clear()
    netloc = urlsplit(prometheus).netloc
    target = PrometheusTarget(
        name="prom",
        url=f"http://ops:{URL_PASSWORD}@{netloc}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        queries=[
            PromQuery(name="echo", query="echo_auth", warn=1),
            PromQuery(name="proxy", query="proxy_error", warn=1),
        ],
    )
    echo, proxy = check_prometheus(target)
    # the explicit header wins over the Basic credentials httpx would make from the userinfo
    assert FakePrometheus.seen_headers[0]["Authorization"] == f"Bearer {TOKEN}"
    assert echo.status == Status.CRITICAL
    assert echo.message == "Prometheus error (execution): execution: denied for ***"
    dumped = echo.model_dump_json() + proxy.model_dump_json()
    assert TOKEN not in dumped and URL_PASSWORD not in dumped and "Bearer" not in dumped
