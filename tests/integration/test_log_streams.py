"""Log patterns counted in container and pod logs (docker: and kubernetes: sources of a logs
target), through the registry as a health run does: fake Docker Engine and Kubernetes API
servers answer `since`/`sinceSeconds` and timestamps as dockerd and the kubelet do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from runbook.config import LogsTarget, load_config
from runbook.health import CheckResult, Status
from runbook.runtime import open_runtime
from tasks.health.log_streams import Stream, count_stream, stamp_ns
from tasks.health.registry import run_kind
from tests.support.fake_apis import (
    FakeDocker,
    FakeKubernetes,
    closed_port_url,
    docker_container,
    fake_docker,  # noqa: F401
    fake_kubernetes,  # noqa: F401
    pod,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.log-stream-token.c2lnbmF0dXJl"
NS = "cad-ml"


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def cluster(fake_kubernetes: FakeKubernetes) -> FakeKubernetes:  # noqa: F811
    fake_kubernetes.token = TOKEN
    fake_kubernetes.add(
        pod("cad-ml-platform-7d9f6-abcde", NS),
        pod("cad-ml-platform-7d9f6-fghij", NS),
        pod("batch-runner-5c4b3-zzzzz", NS),  # app=batch-runner: not selected
    )
    t = now()
    for name in ("cad-ml-platform-7d9f6-abcde", "cad-ml-platform-7d9f6-fghij"):
        fake_kubernetes.pod_log_lines[(NS, name, "app")] = [
            (t - timedelta(hours=10), "ERROR before the window"),
            (t - timedelta(hours=2), "ERROR model load failed"),
            (t - timedelta(hours=1), "WARN request SLOW 3.2s"),
            (t - timedelta(minutes=30), "INFO ok"),
        ]
    fake_kubernetes.pod_log_lines[(NS, "batch-runner-5c4b3-zzzzz", "app")] = [
        (t - timedelta(minutes=5), "ERROR in another app")
    ]
    return fake_kubernetes


def kubernetes_config(write_config, fake: FakeKubernetes, **logs: object):
    return write_config(
        {
            "kubernetes": [
                {"name": "prod", "api_url": fake.url, "token": TOKEN, "timeout": "5s"}
            ],
            "logs": [
                {
                    "name": "platform",
                    "kubernetes": [
                        {"target": "prod", "namespace": NS, "selector": "app=cad-ml-platform"}
                    ],
                    **logs,
                }
            ],
        }
    )


def test_pod_logs_of_the_selected_pods_are_counted_since_the_last_run(
    cluster: FakeKubernetes, write_config
) -> None:
    runtime = open_runtime(kubernetes_config(write_config, cluster, since="8h"))
    first = by_check(run_kind(runtime, "logs", "platform", now()))
    errors = first["logs.errors"]
    # the 2-hour-old ERROR of both selected pods; not the 10-hour-old one, not batch-runner's
    assert (errors.value, errors.status) == (2, Status.WARN), errors
    assert errors.message.startswith(
        "2 matching lines in the container and pod logs of the last 8 h ("
        f"{NS}/cad-ml-platform-7d9f6-abcde/app: 1, {NS}/cad-ml-platform-7d9f6-fghij/app: 1)"
    )
    assert first["logs.performance"].value == 2
    sources = first["logs.sources"]
    assert (sources.status, sources.value) == (Status.OK, 2)
    assert "logs.files" not in first
    asked = [r for r in cluster.requests if r.path.endswith("/pods")]
    assert asked and asked[-1].query["labelSelector"] == ["app=cad-ml-platform"]

    again = by_check(run_kind(runtime, "logs", "platform", now()))
    assert again["logs.errors"].value == 0, again["logs.errors"]
    assert again["logs.errors"].message.startswith("0 matching lines since the last run")

    cluster.pod_log_lines[(NS, "cad-ml-platform-7d9f6-abcde", "app")].append(
        (now(), "CRITICAL out of memory")
    )
    later = by_check(run_kind(runtime, "logs", "platform", now()))
    assert later["logs.errors"].value == 1
    assert "e.g. CRITICAL out of memory" in later["logs.errors"].message


def test_a_selector_matching_no_pod_is_critical(cluster: FakeKubernetes, write_config) -> None:
    config = write_config(
        {
            "kubernetes": [{"name": "prod", "api_url": cluster.url, "token": TOKEN}],
            "logs": [
                {
                    "name": "platform",
                    "kubernetes": [
                        {"target": "prod", "namespace": NS, "selector": "app=counterfactual-lab"}
                    ],
                }
            ],
        }
    )
    sources = by_check(run_kind(open_runtime(config), "logs", "platform", now()))["logs.sources"]
    assert sources.status == Status.CRITICAL
    assert sources.message == (
        "nothing to read: no container or pod matches kubernetes prod namespace cad-ml "
        "-l app=counterfactual-lab"
    )


def test_an_unreachable_cluster_makes_the_patterns_unknown(write_config) -> None:
    config = write_config(
        {
            "kubernetes": [
                {"name": "prod", "api_url": closed_port_url(), "token": TOKEN, "timeout": "2s"}
            ],
            "logs": [{"name": "platform", "kubernetes": [{"target": "prod", "namespace": NS}]}],
        }
    )
    checks = by_check(run_kind(open_runtime(config), "logs", "platform", now()))
    assert checks["logs.sources"].status == Status.UNKNOWN
    assert checks["logs.errors"].status == Status.UNKNOWN  # its count is incomplete
    assert TOKEN not in "".join(r.model_dump_json() for r in checks.values())


@pytest.fixture
def engine(fake_docker: FakeDocker) -> FakeDocker:  # noqa: F811
    fake_docker.add(
        docker_container("shop-web-1"),
        docker_container("shop-worker-1"),
        docker_container("billing-api-1", project="billing"),
    )
    t = now()
    fake_docker.logs["shop-web-1"] = [
        (1, "GET / 200", t - timedelta(hours=3)),
        (2, "ERROR upstream timed out", t - timedelta(minutes=20)),
        (2, "ERROR upstream timed out again", t - timedelta(minutes=10)),
    ]
    fake_docker.logs["shop-worker-1"] = [(2, "FATAL worker crashed", t - timedelta(minutes=5))]
    fake_docker.logs["billing-api-1"] = [(2, "ERROR other project", t - timedelta(minutes=5))]
    return fake_docker


def test_docker_logs_of_a_compose_service_are_counted(engine: FakeDocker, write_config) -> None:
    config = write_config(
        {
            "docker": [
                {"name": "local", "url": engine.url.replace("http://", "tcp://"), "timeout": "5s"}
            ],
            "logs": [
                {
                    "name": "shop",
                    "since": "1h",
                    "docker": [
                        {
                            "target": "local",
                            "project": "shop",
                            "labels": ["com.docker.compose.service=web"],
                        }
                    ],
                }
            ],
        }
    )
    runtime = open_runtime(config)
    first = by_check(run_kind(runtime, "logs", "shop", now()))
    assert first["logs.errors"].value == 2, first["logs.errors"]  # web only, shop only
    assert "last 1 h (shop-web-1: 2)" in first["logs.errors"].message
    assert first["logs.sources"].message == "1 container log(s) read: shop-web-1"

    engine.logs["shop-web-1"].append((2, "ERROR third", now()))
    second = by_check(run_kind(runtime, "logs", "shop", now()))
    assert second["logs.errors"].value == 1, second["logs.errors"]
    assert second["logs.errors"].message.startswith("1 matching line since the last run")


def test_lines_sharing_a_timestamp_are_counted_once() -> None:
    base = "2026-12-01T08:00:00.123456789Z"
    text = f"{base} ERROR a\n{base} ERROR b\n"
    fed: list[bytes] = []
    stream, count = count_stream(text, "c", None, 0, lambda _label, line: fed.append(line))
    assert count == 2 and stream.at_ns == 2
    text += f"{base} ERROR c\n2026-12-01T08:00:01Z ERROR d\n"
    fed.clear()
    stream, count = count_stream(text, "c", stream, 0, lambda _label, line: fed.append(line))
    assert fed == [b"ERROR c", b"ERROR d"]
    assert stream == Stream(ns=stamp_ns("2026-12-01T08:00:01Z x")[0], at_ns=1)
    assert stamp_ns("2026-12-01T08:00:00.5+01:00 x") == (
        int(datetime(2026, 12, 1, 7, 0, tzinfo=UTC).timestamp()) * 10**9 + 500_000_000,
        "x",
    )
    assert stamp_ns("no time here") is None


def test_sources_must_name_configured_targets(tmp_path) -> None:
    path = tmp_path / "runbook.yaml"
    path.write_text(
        "catalog: sqlite:///c.db\nstorage: {kind: local, path: b}\n"
        "targets:\n  logs:\n    - name: app\n      kubernetes: [{target: prod, namespace: x}]\n"
    )
    with pytest.raises(Exception, match=r"targets.logs\[0\].kubernetes\[0\].target"):
        load_config(path)
    with pytest.raises(ValidationError, match="give paths"):
        LogsTarget(name="empty")
