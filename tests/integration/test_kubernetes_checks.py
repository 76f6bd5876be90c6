"""check_kubernetes through the official client against a fake API server speaking real JSON."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client as k8s

import runbook.systems.kubernetes as kubernetes_client
from runbook.config import KubernetesTarget
from runbook.health import CheckResult, Status
from tasks.health.kubernetes import check_kubernetes
from tests.support.certs import make_certificate
from tests.support.fake_apis import (
    FakeKubernetes,
    closed_port_url,
    container_status,
    deployment,
    fake_kubernetes,  # noqa: F401
    hpa,
    node,
    pod,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.runbook-test-token.c2lnbmF0dXJl"
NS = "platform-v2-stable"
NAMESPACED = ("pods_not_ready", "crashloop", "restarts", "deployments", "hpa_at_max")


@pytest.fixture
def cluster(fake_kubernetes: FakeKubernetes) -> FakeKubernetes:  # noqa: F811
    """A cluster that wants TOKEN, with one healthy workload in NS."""
    fake_kubernetes.token = TOKEN
    fake_kubernetes.add(
        pod("api-6d9f7-abcde", NS),
        pod("api-6d9f7-fghij", NS),
        deployment("api", NS, replicas=2),
        hpa("api", NS, current=2, max_replicas=10),
        node("node-2"),
    )
    return fake_kubernetes


def target(fake: FakeKubernetes, **overrides: Any) -> KubernetesTarget:
    values: dict[str, Any] = {
        "name": "prod",
        "api_url": fake.url,
        "token": TOKEN,
        "namespaces": [NS],
        "timeout": "5s",
    }
    return KubernetesTarget(**{**values, **overrides})


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    checks = {r.check: r for r in results}
    assert len(checks) == len(results), "check names must be unique per target"
    return checks


def in_ns(short: str, namespace: str = NS) -> str:
    return f"kubernetes.{short}[{namespace}]"


def test_healthy_namespace_is_all_ok(cluster: FakeKubernetes) -> None:
    results = check_kubernetes(target(cluster))

    checks = by_check(results)
    expected = {"kubernetes.api", "kubernetes.nodes", *(in_ns(short) for short in NAMESPACED)}
    assert set(checks) == expected
    assert {r.target for r in results} == {"prod"}
    assert all(r.status == Status.OK for r in results), [(r.check, r.message) for r in results]
    api = checks["kubernetes.api"]
    assert "v1.31.2" in api.message and isinstance(api.value, float) and api.value < 5
    assert checks["kubernetes.nodes"].message == "2 nodes Ready, no pressure"
    assert checks[in_ns("restarts")].value == 0


def test_the_fake_answers_every_request_with_json_the_official_models_accept(
    cluster: FakeKubernetes,
) -> None:
    cluster.add(
        pod(
            "worker-1",
            NS,
            containers=[
                container_status("app", restarts=4, last_finished=timedelta(hours=2)),
                container_status("sidecar", ready=False, waiting="CrashLoopBackOff", restarts=9),
            ],
        ),
        pod("migrate-x1", NS, phase="Succeeded"),
        pod("queued-1", NS, phase="Pending", unschedulable=True, age=timedelta(minutes=9)),
        deployment("down", NS, replicas=3, available=0),
        hpa("busy", NS, current=5, max_replicas=5),
        node("node-3", ready=False, pressure=("DiskPressure", "MemoryPressure")),
    )

    check_kubernetes(target(cluster))
    check_kubernetes(target(cluster, namespaces=[]))

    assert cluster.unhandled == []
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in cluster.requests)
    asked = set(cluster.paths())
    hpa_list = "V2HorizontalPodAutoscalerList"
    models = {
        "/version/": "VersionInfo",
        f"/api/v1/namespaces/{NS}": "V1Namespace",
        f"/api/v1/namespaces/{NS}/pods": "V1PodList",
        "/api/v1/pods": "V1PodList",
        "/api/v1/nodes": "V1NodeList",
        f"/apis/apps/v1/namespaces/{NS}/deployments": "V1DeploymentList",
        "/apis/apps/v1/deployments": "V1DeploymentList",
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers": hpa_list,
        "/apis/autoscaling/v2/horizontalpodautoscalers": hpa_list,
    }
    assert asked == set(models)
    # The official client's pydantic models validate required fields and types strictly.
    decoder = k8s.ApiClient()
    for path, model in models.items():
        request = urllib.request.Request(
            cluster.url + path, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request) as response:
            text = response.read().decode()
        parsed = decoder.deserialize(text, model, "application/json")
        assert type(parsed).__name__ == model
    pods = decoder.deserialize(json.dumps({"items": cluster.pods}), "V1PodList", None)
    worker = next(p for p in pods.items if p.metadata.name == "worker-1")
    assert worker.status.container_statuses[1].state.waiting.reason == "CrashLoopBackOff"


def test_crashloop_is_critical_naming_pod_container_and_reason(cluster: FakeKubernetes) -> None:
    cluster.add(
        pod(
            "worker-7c4b9-x2x2x",
            NS,
            containers=[
                container_status("app"),
                container_status("sidecar", ready=False, waiting="CrashLoopBackOff", restarts=12),
            ],
        ),
        pod(
            "web-55d-q8q8q",
            NS,
            containers=[
                container_status(
                    "web",
                    ready=False,
                    waiting="ImagePullBackOff",
                    waiting_message='Back-off pulling image "registry/web:nope"',
                ),
            ],
        ),
    )

    checks = by_check(check_kubernetes(target(cluster)))

    crash = checks[in_ns("crashloop")]
    assert crash.status == Status.CRITICAL
    assert crash.value == 2
    assert f"{NS}/worker-7c4b9-x2x2x/sidecar: CrashLoopBackOff (12 restarts)" in crash.message
    assert f"{NS}/web-55d-q8q8q/web: ImagePullBackOff" in crash.message
    assert "/app:" not in crash.message  # the healthy container of the same pod is not named


def test_not_ready_and_stuck_pending_pods_warn_but_jobs_and_fresh_pods_do_not(
    cluster: FakeKubernetes,
) -> None:
    cluster.add(
        pod("api-6d9f7-zzzzz", NS, containers=[container_status("app", ready=False)]),
        pod("batch-stuck", NS, phase="Pending", unschedulable=True, age=timedelta(minutes=12)),
        pod("batch-new", NS, phase="Pending", unschedulable=True, age=timedelta(minutes=1)),
        pod("report-28903-abcde", NS, phase="Succeeded", age=timedelta(hours=3)),
    )

    result = by_check(check_kubernetes(target(cluster)))[in_ns("pods_not_ready")]

    assert result.status == Status.WARN
    assert result.value == 2
    assert f"{NS}/api-6d9f7-zzzzz Running but not Ready (app not ready)" in result.message
    assert f"{NS}/batch-stuck Pending for 12m (Unschedulable" in result.message
    assert "batch-new" not in result.message and "report-" not in result.message


def test_not_ready_message_names_at_most_five_pods(cluster: FakeKubernetes) -> None:
    cluster.add(*(pod(f"w-{i}", NS, ready=False) for i in range(7)))

    result = by_check(check_kubernetes(target(cluster)))[in_ns("pods_not_ready")]

    assert result.value == 7
    assert result.message.count("Running but not Ready") == 5
    assert result.message.endswith("and 2 more")


def test_only_restarts_within_the_window_count(cluster: FakeKubernetes) -> None:
    cluster.add(
        pod(
            "old-1",  # listed first: it would be named worst on a tie if it counted
            NS,
            age=timedelta(days=5),
            containers=[
                container_status("app", restarts=40, last_finished=timedelta(days=3)),
            ],
        ),
        pod(
            "recent-1",
            NS,
            age=timedelta(days=5),
            containers=[
                container_status(
                    "app",
                    restarts=3,
                    last_finished=timedelta(hours=2),
                    last_reason="OOMKilled",
                    last_exit_code=137,
                ),
            ],
        ),
    )

    result = by_check(check_kubernetes(target(cluster, restart_window="24h")))[in_ns("restarts")]

    # recent-1 is 5 days old: of its 3 restarts only the last is known to be within 24 h.
    assert result.status == Status.WARN
    assert result.value == 1
    assert result.message.startswith("1 containers restarted within 24h; worst: ")
    assert f"{NS}/recent-1/app: 1 restarts within 24h (3 in total), last 2h ago" in result.message
    assert "OOMKilled, exit 137" in result.message
    assert "old-1" not in result.message  # 40 restarts, but the last one 3 days ago
    assert result.threshold == "warn > 0 restarts, critical > 5 restarts"

    wider = by_check(check_kubernetes(target(cluster, restart_window="4d")))[in_ns("restarts")]
    assert wider.message.startswith("2 containers restarted within 4d; worst: ")
    assert wider.value == 1  # old-1 started before the window too: its last restart counts 1


def test_restarts_of_a_pod_started_within_the_window_all_count(cluster: FakeKubernetes) -> None:
    cluster.add(
        pod(
            "flappy-1",
            NS,
            age=timedelta(hours=6),
            containers=[
                container_status("app", restarts=7, last_finished=timedelta(minutes=30)),
            ],
        ),
        pod(
            "calm-1",
            NS,
            age=timedelta(hours=6),
            containers=[
                container_status("app", restarts=1, last_finished=timedelta(hours=5)),
            ],
        ),
    )

    result = by_check(check_kubernetes(target(cluster)))[in_ns("restarts")]

    assert result.status == Status.CRITICAL  # 7 > critical 5
    assert result.value == 7
    assert (
        f"2 containers restarted within 24h; worst: {NS}/flappy-1/app: 7 restarts" in result.message
    )


def test_deployments_with_none_available_are_critical_and_partial_ones_warn(
    cluster: FakeKubernetes,
) -> None:
    cluster.add(deployment("checkout", NS, replicas=3, available=0))
    checks = by_check(check_kubernetes(target(cluster)))
    result = checks[in_ns("deployments")]
    assert result.status == Status.CRITICAL
    assert result.message == f"1 deployments degraded: {NS}/checkout 0/3 available"

    cluster.deployments[-1] = deployment("checkout", NS, replicas=3, available=2)
    cluster.add(deployment("paused-job", NS, replicas=0, available=0))
    result = by_check(check_kubernetes(target(cluster)))[in_ns("deployments")]
    assert result.status == Status.WARN
    assert result.message == f"1 deployments degraded: {NS}/checkout 2/3 available"


def test_hpa_at_max_warns_naming_it(cluster: FakeKubernetes) -> None:
    cluster.add(
        hpa("platform-v2-hpa", NS, current=10, max_replicas=10),
        hpa("pinned", NS, current=3, max_replicas=3, min_replicas=3),
    )

    result = by_check(check_kubernetes(target(cluster)))[in_ns("hpa_at_max")]

    assert result.status == Status.WARN
    assert result.value == 1
    assert result.message == f"1 autoscalers at maxReplicas: {NS}/platform-v2-hpa 10/10 replicas"


def test_node_pressure_warns_and_a_node_not_ready_is_critical(cluster: FakeKubernetes) -> None:
    cluster.add(node("node-3", pressure=("DiskPressure",)))
    result = by_check(check_kubernetes(target(cluster)))["kubernetes.nodes"]
    assert result.status == Status.WARN
    assert result.message == "pressure: node-3 DiskPressure"

    cluster.add(node("node-4", ready=False))
    result = by_check(check_kubernetes(target(cluster)))["kubernetes.nodes"]
    assert result.status == Status.CRITICAL
    assert "1 of 4 nodes not Ready: node-4 not Ready (Unknown: NodeStatusUnknown)" in result.message
    assert "node-3 DiskPressure" in result.message


def test_a_namespace_that_does_not_exist_is_critical_for_its_checks_only(
    cluster: FakeKubernetes,
) -> None:
    checks = by_check(check_kubernetes(target(cluster, namespaces=[NS, "platform-v1-exp"])))

    for short in NAMESPACED:
        missing = checks[in_ns(short, "platform-v1-exp")]
        assert missing.status == Status.CRITICAL
        assert missing.message.startswith("namespace platform-v1-exp not found")
        assert checks[in_ns(short)].status == Status.OK
    assert "/api/v1/namespaces/platform-v1-exp/pods" not in cluster.paths()


def test_no_namespaces_means_one_result_per_check_over_all_namespaces(
    cluster: FakeKubernetes,
) -> None:
    cluster.add(
        pod(
            "v1-api-1",
            "platform-v1-exp",
            containers=[
                container_status(
                    "app",
                    ready=False,
                    waiting="CreateContainerConfigError",
                    waiting_message='secret "platform-secrets" not found',
                ),
            ],
        ),
    )

    checks = by_check(check_kubernetes(target(cluster, namespaces=[])))

    assert set(checks) == {
        "kubernetes.api",
        "kubernetes.nodes",
        *(f"kubernetes.{short}" for short in NAMESPACED),
    }
    crash = checks["kubernetes.crashloop"]
    assert crash.status == Status.CRITICAL
    assert (
        'platform-v1-exp/v1-api-1/app: CreateContainerConfigError (secret "platform-secrets"'
        in crash.message
    )
    assert {"/api/v1/pods", "/apis/apps/v1/deployments"} <= set(cluster.paths())
    assert not any(p.startswith("/api/v1/namespaces") for p in cluster.paths())


def test_lists_are_read_page_by_page(
    cluster: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubernetes_client, "PAGE_SIZE", 2)
    cluster.add(
        *(
            pod(
                f"loop-{i}",
                NS,
                containers=[
                    container_status("app", ready=False, waiting="CrashLoopBackOff", restarts=5)
                ],
            )
            for i in range(5)
        )
    )

    result = by_check(check_kubernetes(target(cluster)))[in_ns("crashloop")]

    assert result.value == 5  # 7 pods over 4 pages, all seen
    pages = [r.query for r in cluster.requests if r.path == f"/api/v1/namespaces/{NS}/pods"]
    assert [q.get("continue", [None])[0] for q in pages] == [None, "2", "4", "6"]
    assert all(q["limit"] == ["2"] for q in pages)


def test_wrong_token_is_critical_unauthorized_and_the_token_is_never_shown(
    cluster: FakeKubernetes,
) -> None:
    cluster.echo_auth = True  # the 401 body quotes the credentials it was sent
    wrong = "wrong-" + TOKEN

    results = check_kubernetes(target(cluster, token=wrong), unreachable=Status.UNKNOWN)

    assert [r.check for r in results] == ["kubernetes.api"]
    assert results[0].status == Status.CRITICAL
    assert results[0].message.startswith("unauthorized:")
    assert "HTTP 401" in results[0].message
    assert wrong not in repr(results) and TOKEN not in repr(results)


def test_error_bodies_that_quote_the_token_are_redacted(cluster: FakeKubernetes) -> None:
    cluster.echo_auth = True
    cluster.forbidden = {"pods", "nodes"}

    results = check_kubernetes(target(cluster))

    checks = by_check(results)
    pods = checks[in_ns("crashloop")]
    assert pods.status == Status.UNKNOWN
    assert (
        f"cannot list pods in namespace {NS}: HTTP 403 Forbidden: pods is forbidden" in pods.message
    )
    assert "(credentials 'Bearer **********')" in pods.message  # quoted, but redacted
    assert checks["kubernetes.nodes"].status == Status.UNKNOWN
    assert checks[in_ns("deployments")].status == Status.OK
    assert not any(TOKEN in r.message for r in results)


@pytest.mark.parametrize("unreachable", [Status.UNKNOWN, Status.CRITICAL])
def test_a_refused_port_is_the_configured_unreachable_status(unreachable: Status) -> None:
    url = closed_port_url("http")
    down = KubernetesTarget(name="prod", api_url=url, token=TOKEN, namespaces=[NS], timeout="3s")

    results = check_kubernetes(down, unreachable=unreachable)

    assert [(r.check, r.status) for r in results] == [("kubernetes.api", unreachable)]
    assert results[0].message == f"cannot reach {url}: [Errno 111] Connection refused"


def test_a_server_slower_than_the_timeout_is_unreachable(cluster: FakeKubernetes) -> None:
    cluster.delay = 2.0
    started = time.monotonic()

    results = check_kubernetes(target(cluster, timeout="0.3s"), unreachable=Status.UNKNOWN)

    assert time.monotonic() - started < 1.5  # 0.3 s, retried once; not the server's 2 s
    assert [(r.check, r.status) for r in results] == [("kubernetes.api", Status.UNKNOWN)]
    assert results[0].message == f"cannot reach {cluster.url}: timed out"


def test_a_server_that_hangs_mid_run_costs_one_timeout_not_one_per_list(
    cluster: FakeKubernetes,
) -> None:
    cluster.slow["/api/v1/nodes"] = 2.0  # /version answers, then the server hangs
    started = time.monotonic()

    results = check_kubernetes(
        target(cluster, namespaces=[NS, "kube-system"], timeout="0.3s"), unreachable=Status.UNKNOWN
    )

    assert time.monotonic() - started < 1.5
    checks = by_check(results)
    assert checks["kubernetes.api"].status == Status.OK
    assert len(results) == 12
    for result in results[1:]:
        assert result.status == Status.UNKNOWN
        assert result.message.endswith(f"cannot reach {cluster.url}: timed out")
    assert cluster.paths()[-1] == "/api/v1/nodes"  # nothing asked after the hang


def test_kubeconfig_context_is_used_and_its_token_redacted(
    cluster: FakeKubernetes, tmp_path: Path
) -> None:
    cluster.echo_auth = True
    cluster.forbidden = {"pods"}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "staging",
                "clusters": [
                    {"name": "prod", "cluster": {"server": cluster.url}},
                    {"name": "staging", "cluster": {"server": closed_port_url()}},
                ],
                "users": [{"name": "runbook", "user": {"token": TOKEN}}],
                "contexts": [
                    {"name": "prod", "context": {"cluster": "prod", "user": "runbook"}},
                    {"name": "staging", "context": {"cluster": "staging", "user": "runbook"}},
                ],
            }
        )
    )
    via_kubeconfig = KubernetesTarget(
        name="prod", kubeconfig=kubeconfig, context="prod", namespaces=[NS], timeout="5s"
    )

    checks = by_check(check_kubernetes(via_kubeconfig))

    assert checks["kubernetes.api"].status == Status.OK  # the "prod" context, not current
    assert checks[in_ns("deployments")].status == Status.OK
    forbidden = checks[in_ns("crashloop")]
    assert forbidden.status == Status.UNKNOWN
    assert "(credentials 'Bearer **********')" in forbidden.message
    assert TOKEN not in forbidden.message
    assert kubeconfig.read_text().count(TOKEN) == 1  # read only, never rewritten


def test_client_configuration_errors_are_a_critical_result_not_an_exception(
    tmp_path: Path,
) -> None:
    missing = KubernetesTarget(name="prod", kubeconfig=tmp_path / "nope", context="prod")
    outside = KubernetesTarget(name="prod", in_cluster=True)

    for broken in (missing, outside):
        results = check_kubernetes(broken, unreachable=Status.UNKNOWN)
        assert [(r.check, r.status) for r in results] == [("kubernetes.api", Status.CRITICAL)]
        assert results[0].message.startswith("cannot configure the Kubernetes client:")


def test_in_cluster_service_account_over_tls(tmp_path: Path, monkeypatch) -> None:
    """As a Prefect worker in a pod runs it: KUBERNETES_SERVICE_HOST/PORT, the service
    account's token and the cluster CA, HTTPS verified against that CA."""
    import kubernetes.config.incluster_config as incluster

    certificate, key = make_certificate(tmp_path, days=90)
    fake = FakeKubernetes()
    fake.token = TOKEN
    fake.add(pod("api-6d9f7-abcde", NS), deployment("api", NS, replicas=1), node("node-1"))
    fake.start(tls=(certificate, key))
    try:
        host, port = urlsplit(fake.url).hostname, urlsplit(fake.url).port
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
        monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(token_file))
        monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(certificate))
        in_pod = KubernetesTarget(name="prod", in_cluster=True, namespaces=[NS], timeout="5s")

        checks = by_check(check_kubernetes(in_pod))

        assert {c: (r.status, r.message) for c, r in checks.items() if r.status != Status.OK} == {}
        assert checks["kubernetes.api"].message.startswith("reachable, Kubernetes v")
        assert fake.url.startswith("https://")  # the fake speaks nothing but TLS
        assert fake.requests and all(
            r.headers.get("authorization", "").lower() == f"bearer {TOKEN}".lower()
            for r in fake.requests
        )
        assert all(TOKEN not in r.message for r in checks.values())

        # A CA that did not sign the server's certificate: refused, never ok.
        (tmp_path / "other").mkdir()
        other_ca, _ = make_certificate(tmp_path / "other", days=90)
        monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(other_ca))
        seen = len(fake.requests)
        refused = check_kubernetes(in_pod, unreachable=Status.UNKNOWN)
        assert [(r.check, r.status) for r in refused] == [("kubernetes.api", Status.UNKNOWN)]
        assert "CERTIFICATE_VERIFY_FAILED" in refused[0].message
        assert len(fake.requests) == seen  # nothing was answered over the untrusted connection
    finally:
        fake.stop()
