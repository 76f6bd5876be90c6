"""Kubernetes and Docker capacity samples against the local fake APIs speaking the real JSON:
metrics.k8s.io/v1beta1 node and pod metrics read through the official client (`kubectl top`),
requests and limits from the core API, the Docker engine's one-shot stats (`docker stats
--no-stream`); and both as `capacity-collect` sources storing into a catalog, where a refused
list is the source's error, without the token."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from runbook.catalog import Catalog, MetricSamples
from runbook.config import Config, DockerTarget, KubernetesTarget
from tasks.capacity.collect import measure_and_store, sources_of
from tasks.capacity.collect_docker import collect_docker, memory_in_use
from tasks.capacity.collect_kubernetes import collect_kubernetes
from tests.support.fake_apis import (  # noqa: F401 - fixtures
    FakeDocker,
    FakeKubernetes,
    docker_container,
    fake_docker,
    fake_kubernetes,
    node,
    node_metrics,
    pod,
    pod_metrics,
)

NOW = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)
KI, MI, GI = 1024, 1024**2, 1024**3
TOKEN = "kube-token-0123456789abcdef"
LIMITED = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
REQUESTS_ONLY = {"requests": {"cpu": "100m", "memory": "128Mi"}}


@pytest.fixture
def cluster(fake_kubernetes: FakeKubernetes) -> FakeKubernetes:  # noqa: F811
    """Two nodes; in `shop` a web pod with limits (two containers: app and a sidecar) and a
    worker with requests only; in `default` a finished Job pod still holding its spec."""
    fake_kubernetes.nodes = [
        node("node-1"),
        node("node-2", allocatable={"cpu": "4", "memory": "16Gi", "pods": "58"}),
    ]
    web = pod("web-7d9f8-abcde", "shop", resources=LIMITED)
    web["spec"]["containers"].append({**web["spec"]["containers"][0], "name": "sidecar"})
    fake_kubernetes.add(
        web,
        pod("worker-5c6b7-fghij", "shop", resources=REQUESTS_ONLY, node_name="node-2"),
        pod("backfill-xk2p9", "default", phase="Succeeded", resources=LIMITED),
        node_metrics("node-1", cpu="180113596n", memory="1432048Ki"),
        node_metrics("node-2", cpu="1500m", memory="12Gi"),
        pod_metrics(
            "web-7d9f8-abcde",
            "shop",
            {"app": ("200m", "300Mi"), "sidecar": ("5000000n", "20Mi")},
        ),
        pod_metrics("worker-5c6b7-fghij", "shop", {"app": ("50m", "100Mi")}),
    )
    fake_kubernetes.token = TOKEN
    return fake_kubernetes


def k8s_target(fake: FakeKubernetes, **overrides) -> KubernetesTarget:
    values = {"name": "prod", "api_url": fake.url, "token": TOKEN, "timeout": "5s"}
    return KubernetesTarget(**{**values, **overrides})


def by_resource(samples) -> dict:
    found = {s.resource: s for s in samples}
    assert len(found) == len(samples), "one sample per resource"
    return found


def test_kubernetes_usage_requests_and_limits_from_metrics_k8s_io(cluster):
    got = by_resource(collect_kubernetes(k8s_target(cluster), NOW))
    assert cluster.unhandled == []
    assert "/apis/metrics.k8s.io/v1beta1/nodes" in cluster.paths()
    assert "/apis/metrics.k8s.io/v1beta1/pods" in cluster.paths()

    # kubectl top nodes: usage against allocatable
    memory = got["prod/node/node-1/memory"]
    assert memory.kind == "kubernetes.node.memory" and memory.unit == "bytes"
    assert memory.value == 1432048 * KI and memory.limit == 8049436 * KI
    assert got["prod/node/node-1/cpu"].value == pytest.approx(0.180113596)
    assert got["prod/node/node-1/cpu"].limit == 2
    assert got["prod/node/node-2/memory"].value == 12 * GI
    assert got["prod/node/node-2/memory"].limit == 16 * GI
    assert got["prod/node/node-2/cpu"].value == pytest.approx(1.5)

    # requests of the pods on each node; the Succeeded Job holds none
    assert got["prod/node/node-1/memory-requests"].value == 2 * 256 * MI  # web's 2 containers
    assert got["prod/node/node-1/cpu-requests"].value == pytest.approx(0.5)
    assert got["prod/node/node-1/pods"].value == 1 and got["prod/node/node-1/pods"].limit == 110
    assert got["prod/node/node-2/memory-requests"].value == 128 * MI
    assert got["prod/node/node-2/pods"].limit == 58

    # kubectl top pods: containers summed, against limits when every container has one
    web = got["prod/pod/shop/web-7d9f8-abcde/memory"]
    assert web.kind == "kubernetes.pod.memory"
    assert web.value == 320 * MI and web.limit == 2 * GI
    assert got["prod/pod/shop/web-7d9f8-abcde/cpu"].value == pytest.approx(0.205)
    assert got["prod/pod/shop/web-7d9f8-abcde/cpu"].limit == 2
    worker = got["prod/pod/shop/worker-5c6b7-fghij/memory"]
    assert worker.value == 100 * MI and worker.limit is None  # requests are not a limit
    assert not any("backfill" in r for r in got)  # no metrics for a finished pod


def test_named_namespaces_read_only_theirs_and_no_node_requests(cluster):
    cluster.add(pod_metrics("api-1", "other", {"app": ("1m", "1Mi")}))
    got = by_resource(collect_kubernetes(k8s_target(cluster, namespaces=["shop"]), NOW))
    assert "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods" in cluster.paths()
    assert "/apis/metrics.k8s.io/v1beta1/pods" not in cluster.paths()
    assert {r for r in got if "/pod/" in r} == {
        "prod/pod/shop/web-7d9f8-abcde/memory",
        "prod/pod/shop/web-7d9f8-abcde/cpu",
        "prod/pod/shop/worker-5c6b7-fghij/memory",
        "prod/pod/shop/worker-5c6b7-fghij/cpu",
    }
    # requests need every namespace's pods: not measured from one namespace's
    assert not any(r.endswith(("-requests", "/pods")) for r in got)
    assert "prod/node/node-1/memory" in got


def test_without_metrics_server_requests_are_still_recorded(cluster, caplog):
    cluster.metrics_served = False
    with caplog.at_level("WARNING", logger="runbook.capacity"):
        got = by_resource(collect_kubernetes(k8s_target(cluster), NOW))
    assert "metrics.k8s.io is not served" in caplog.text
    assert set(got) == {
        f"prod/node/{n}/{what}"
        for n in ("node-1", "node-2")
        for what in ("memory-requests", "cpu-requests", "pods")
    }


@pytest.fixture
def engine(fake_docker: FakeDocker) -> FakeDocker:  # noqa: F811
    fake_docker.add(
        docker_container("shop-web-1"),
        docker_container("shop-worker-1"),
        docker_container("shop-migrate-1", status="exited"),
        docker_container("other-db-1", project="other"),
    )
    fake_docker.memory["shop-web-1"] = (600 * MI, GI)
    return fake_docker


def docker_target(fake: FakeDocker, **overrides) -> DockerTarget:
    values = {"name": "shop-host", "url": fake.url.replace("http://", "tcp://"), "timeout": "5s"}
    return DockerTarget(**{**values, **overrides})


def test_docker_container_memory_as_docker_stats_shows_it(engine):
    got = by_resource(collect_docker(docker_target(engine, project="shop"), NOW))
    assert set(got) == {
        "shop-host/container/shop-web-1/memory",
        "shop-host/container/shop-worker-1/memory",
    }  # the exited container and the other project are not measured
    web = got["shop-host/container/shop-web-1/memory"]
    assert web.kind == "docker.memory" and web.unit == "bytes"
    assert web.value == (600 - 44) * MI and web.limit == GI  # without inactive_file
    assert got["shop-host/container/shop-worker-1/memory"].value == 256 * MI
    assert engine.unhandled == []
    assert any(p.endswith("/stats") for p in engine.paths())


def test_memory_in_use_cgroup_v1_and_v2():
    assert memory_in_use({"usage": 100, "stats": {"total_inactive_file": 30}}) == 70  # v1
    assert memory_in_use({"usage": 100, "stats": {"inactive_file": 40}}) == 60  # v2
    assert memory_in_use({"usage": 100, "stats": {"inactive_file": 400}}) == 100
    assert memory_in_use({"stats": {}}) is None


@pytest.fixture
def catalog(tmp_path) -> Iterator[Catalog]:
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield catalog
    catalog.close()


def test_collect_sources_store_them_and_a_refusal_is_the_error(cluster, engine, catalog):
    config = Config.model_validate(
        {
            "targets": {
                "kubernetes": [{"name": "prod", "api_url": cluster.url, "token": TOKEN}],
                "docker": [
                    {
                        "name": "shop-host",
                        "url": engine.url.replace("http://", "tcp://"),
                        "project": "shop",
                    }
                ],
            }
        }
    )
    sources = {s.name: s for s in sources_of(config, catalog)}
    assert {"kubernetes prod", "docker shop-host"} <= set(sources)
    k8s = measure_and_store(sources["kubernetes prod"], catalog, NOW)
    docker = measure_and_store(sources["docker shop-host"], catalog, NOW)
    assert k8s.error is None and k8s.stored == k8s.samples == 14, k8s
    assert docker.error is None and docker.stored == 2, docker
    kept = {r.latest.resource: r.latest for r in MetricSamples(catalog).resources()}
    assert kept["prod/node/node-2/memory"].limit == 16 * GI
    assert kept["shop-host/container/shop-web-1/memory"].value == 556 * MI

    # RBAC refuses the node list, and the error body quotes the credentials it got
    cluster.forbidden = {"nodes"}
    cluster.echo_auth = True
    refused = measure_and_store(sources["kubernetes prod"], catalog, NOW)
    assert refused.stored == 0 and refused.error is not None
    assert "HTTP 403" in refused.error and "nodes is forbidden" in refused.error
    assert TOKEN not in refused.error
