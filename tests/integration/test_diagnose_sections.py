"""Diagnostics sections against real systems (PostgreSQL 15, Redis) and the API fakes (Docker
Engine, Kubernetes): what an operator would collect by hand during an incident, each section
bounded in time and size, a failing one recorded without stopping the others."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runbook.config import (
    Config,
    DiagnosticsSettings,
    DockerTarget,
    KubernetesTarget,
    PostgresTarget,
    RedisTarget,
)
from runbook.runtime import runtime_for
from tasks.diagnose.docker import collect_docker
from tasks.diagnose.kubernetes import collect_kubernetes
from tasks.diagnose.plan import PlannedSection, collect_section, plan_sections
from tasks.diagnose.postgres import collect_postgres
from tasks.diagnose.redis import collect_redis
from tests.support.fake_apis import (
    FakeDocker,
    FakeKubernetes,
    ago,
    container_status,
    docker_container,
    fake_docker,  # noqa: F401
    fake_kubernetes,  # noqa: F401
    pod,
)
from tests.support.maintenance import scratch_redis_server

SETTINGS = DiagnosticsSettings(long_query="1s", section_timeout="20s")


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


def test_a_blocked_query_and_its_blocker_appear_in_the_postgres_section(pg15, make_database):
    dsn = make_database(pg15, seed=False)
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
        setup.execute("INSERT INTO accounts VALUES (1, 100)")
    blocker = psycopg.connect(dsn)
    blocked = psycopg.connect(dsn, autocommit=True)
    blocker_pid, blocked_pid = blocker.info.backend_pid, blocked.info.backend_pid
    blocker.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1")  # holds the row
    waiter = threading.Thread(
        target=lambda: blocked.execute("UPDATE accounts SET balance = balance + 99 WHERE id = 1"),
        daemon=True,
    )
    waiter.start()
    try:
        with psycopg.connect(dsn, autocommit=True) as watch:
            wait_until(
                lambda: (
                    watch.execute(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                        (blocked_pid,),
                    ).fetchone()[0]
                    == "Lock"
                )
            )
        time.sleep(1.2)  # past long_query: the waiting UPDATE is a long query too
        collected = collect_postgres(PostgresTarget(name="app", dsn=dsn), SETTINGS)
    finally:
        blocker.rollback()
        waiter.join(10)
        blocker.close()
        blocked.close()

    rows = collected.data["blocking"]
    pair = [r for r in rows if r["blocked_pid"] == blocked_pid]
    assert len(pair) == 1, rows
    assert pair[0]["blocker_pid"] == blocker_pid
    assert pair[0]["blocker_state"] == "idle in transaction"
    assert "balance + 99" in pair[0]["blocked_query"]
    assert "balance - 10" in pair[0]["blocker_query"]  # the blocker's last statement
    assert "transactionid ShareLock" in pair[0]["waiting_lock"]
    assert pair[0]["wait_event_type"] == "Lock"
    assert any(r["pid"] == blocked_pid for r in collected.data["long_queries"])
    activity = {r["pid"]: r for r in collected.data["activity"]}
    assert activity[blocked_pid]["wait_event_type"] == "Lock"
    assert activity[blocked_pid]["wait_event"] == "transactionid"
    assert f"pid {blocked_pid} is blocked by pid {blocker_pid}" in collected.findings[0]
    assert "1 blocked" in collected.summary
    assert "replication" in collected.data and "top_statements" in collected.data
    assert collected.data["top_statements"] is None  # no pg_stat_statements in this database


def test_the_redis_section_has_info_slowlog_clients_and_memory_doctor(tmp_path: Path):
    # A throwaway server logging every command as slow: the shared service's slow log and
    # settings are nobody's to change in a test.
    with scratch_redis_server(tmp_path / "redis", "--slowlog-log-slower-than", "0") as port:
        with socket.create_connection(("127.0.0.1", port)) as sock:  # a client of ours
            sock.sendall(b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$15\r\ndiagnose-marker\r\n")
            assert sock.recv(100) == b"+OK\r\n"
            collected = collect_redis(
                RedisTarget(name="cache", url=f"redis://127.0.0.1:{port}/0"), SETTINGS
            )
    data = collected.data
    assert data["info"]["redis_version"] and "used_memory" in data["info"]
    assert data["slowlog"] and {"id", "duration_ms", "command"} <= set(data["slowlog"][0])
    assert any(e["command"].startswith("CLIENT SETNAME") for e in data["slowlog"])  # ours
    assert data["clients"]["count"] >= 2
    assert any(cmd.startswith("client") for cmd in data["clients"]["by_command"])  # ours
    assert data["clients"]["oldest"] and "idle" in data["clients"]["oldest"][0]
    assert isinstance(data["memory_doctor"], str) and data["memory_doctor"]
    assert "errors" not in data
    assert collected.summary.startswith("Redis ")


def test_the_docker_section_has_states_restarts_stats_and_log_tails(fake_docker: FakeDocker):  # noqa: F811
    fake_docker.add(
        docker_container("shop-web-1", health="healthy"),
        docker_container(
            "shop-worker-1", status="restarting", exit_code=137, restart_count=7, oom_killed=True
        ),
        docker_container("other-api-1", project="other"),
    )
    fake_docker.logs["shop-worker-1"] = [(1, f"line {i}") for i in range(300)] + [
        (2, "FATAL worker out of memory")
    ]
    settings = DiagnosticsSettings(log_lines=20)
    collected = collect_docker(
        DockerTarget(name="box", url=fake_docker.url.replace("http://", "tcp://"), project="shop"),
        settings,
    )
    containers = {c["name"]: c for c in collected.data["containers"]}
    assert set(containers) == {"shop-web-1", "shop-worker-1"}  # the project's only
    worker = containers["shop-worker-1"]
    assert worker["restarts"] == 7 and worker["oom_killed"] and worker["exit_code"] == 137
    assert len(worker["logs"]) == 20 and worker["logs"][-1].endswith("FATAL worker out of memory")
    assert worker["stats"]["cpu_percent"] == 25.0
    assert worker["stats"]["memory_bytes"] == 256 * 2**20
    assert worker["stats"]["memory_percent"] == 25.0
    assert "container shop-worker-1 was OOM-killed" in collected.findings
    assert "container shop-worker-1 restarted 7 times" in collected.findings
    assert not fake_docker.unhandled


def test_the_kubernetes_section_has_last_states_events_and_previous_logs(
    fake_kubernetes: FakeKubernetes,  # noqa: F811
):
    ns = "shop"
    crashing = container_status(
        "api",
        ready=False,
        restarts=12,
        waiting="CrashLoopBackOff",
        last_finished=timedelta(minutes=2),
        last_reason="OOMKilled",
        last_exit_code=137,
    )
    fake_kubernetes.add(
        pod("api-7c9-abcde", ns, containers=[crashing]),
        pod("web-5f4-fghij", ns),
        {
            "metadata": {"name": "api-7c9-abcde.181", "namespace": ns},
            "involvedObject": {"kind": "Pod", "name": "api-7c9-abcde", "namespace": ns},
            "reason": "BackOff",
            "message": "Back-off restarting failed container api",
            "type": "Warning",
            "count": 40,
            "lastTimestamp": ago(timedelta(minutes=1)),
        },
    )
    fake_kubernetes.pod_logs[(ns, "api-7c9-abcde", "api", True)] = (
        "starting\nloading model\nKilled: out of memory\n"
    )
    collected = collect_kubernetes(
        KubernetesTarget(name="prod", api_url=fake_kubernetes.url, namespaces=[ns]), SETTINGS
    )
    pods = {p["name"]: p for p in collected.data["pods"]}
    api = pods["api-7c9-abcde"]["containers"][0]
    assert api["restarts"] == 12 and api["state"] == "waiting"
    assert api["reason"] == "CrashLoopBackOff"
    assert api["last_state"]["reason"] == "OOMKilled" and api["last_state"]["exit_code"] == 137
    assert api["previous_log"][-1] == "Killed: out of memory"
    assert "previous_log" not in pods["web-5f4-fghij"]["containers"][0]  # never restarted
    (event,) = collected.data["events"]
    assert event["reason"] == "BackOff" and event["object"] == "Pod/api-7c9-abcde"
    assert any("12 restarts, last OOMKilled (exit 137)" in f for f in collected.findings)
    assert any("event BackOff on Pod/api-7c9-abcde" in f for f in collected.findings)
    asked = [r for r in fake_kubernetes.requests if r.path.endswith("/log")]
    assert asked[0].query["previous"] == ["true"] and asked[0].query["tailLines"] == ["100"]
    assert not fake_kubernetes.unhandled


class Endpoints:
    """/hung never answers in time; /big answers far more than a section may keep."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/hung":
                    time.sleep(8)
                    return
                data = json.dumps({"patterns": ["x" * 100] * 2000}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def endpoints():
    e = Endpoints()
    yield e
    e.server.shutdown()
    e.server.server_close()


def test_a_hung_section_fails_alone_and_a_big_one_is_cut_to_size(endpoints, tmp_path):
    config = Config.model_validate(
        {
            "catalog": f"sqlite:///{tmp_path}/catalog.db",
            "storage": {"kind": "local", "path": str(tmp_path / "backups")},
            "targets": {"redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/0"}]},
            "diagnostics": {
                "section_timeout": "2s",
                "section_bytes": 20_000,
                "endpoints": [
                    {"name": "hung", "url": f"{endpoints.url}/hung", "timeout": "30s"},
                    {"name": "patterns", "url": f"{endpoints.url}/big"},
                ],
            },
        }
    )
    runtime = runtime_for(config)
    planned = plan_sections(config)
    assert [(p.name, p.target) for p in planned] == [
        ("redis", "cache"),
        ("host", "localhost"),
        ("http", "hung"),
        ("http", "patterns"),
        ("health", "catalog"),
    ]
    started = time.monotonic()
    hung, _ = collect_section(runtime, PlannedSection("http", "hung"))
    assert time.monotonic() - started < 5
    assert not hung.ok and "no answer within 2s" in hung.detail
    big, data = collect_section(runtime, PlannedSection("http", "patterns"))
    assert big.ok and big.truncated and "(cut to size)" in big.detail
    assert big.bytes == len(data) and 20_000 <= len(data) < 20_100
    assert b"\n... [cut at 20000 bytes of " in data
    redis, _ = collect_section(runtime, PlannedSection("redis", "cache"))
    assert redis.ok  # the others are not affected


def test_planning_names_unknown_targets_and_keeps_host_and_health(tmp_path):
    from runbook.errors import NotFoundError

    config = Config.model_validate(
        {
            "targets": {
                "postgres": [{"name": "app", "dsn": "postgresql://u@h/db"}],
                "redis": [{"name": "cache", "url": "redis://h:6379/0"}],
            },
            "diagnostics": {"endpoints": [{"name": "perf", "url": "http://h/x"}]},
        }
    )
    chosen = plan_sections(config, ["cache"])
    assert [(p.name, p.target) for p in chosen] == [
        ("redis", "cache"),
        ("host", "localhost"),
        ("health", "catalog"),
    ]
    with pytest.raises(NotFoundError, match="unknown target 'nope' to diagnose.*app, cache, perf"):
        plan_sections(config, ["nope"])
