"""kubernetes.usage (metrics.k8s.io against requests and limits), kubernetes.network_policies
(runbook 003) and label selectors (runbook 002's `-l app=counterfactual-lab`), through the
official client against the fake API server."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from runbook.config import KubernetesTarget
from runbook.health import CheckResult, Status
from tasks.health.kubernetes import check_kubernetes
from tests.support.fake_apis import (
    FakeKubernetes,
    container_status,
    deployment,
    fake_kubernetes,  # noqa: F401
    network_policy,
    pod,
    pod_metrics,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.usage-test-token.c2lnbmF0dXJl"
NS = "counterfactual"
LIMITED = {"requests": {"memory": "256Mi", "cpu": "100m"}, "limits": {"memory": "1Gi", "cpu": "1"}}


@pytest.fixture
def cluster(fake_kubernetes: FakeKubernetes) -> FakeKubernetes:  # noqa: F811
    fake_kubernetes.token = TOKEN
    fake_kubernetes.add(
        pod("counterfactual-lab-6f7d8-aaaaa", NS, resources=LIMITED),
        pod("counterfactual-lab-6f7d8-bbbbb", NS, resources=LIMITED),
        pod("batch-runner-5c4b3-ccccc", NS, resources=LIMITED),
        deployment("counterfactual-lab", NS, replicas=2),
        deployment("batch-runner", NS, replicas=1, available=0),
    )
    return fake_kubernetes


def target(fake: FakeKubernetes, **overrides: Any) -> KubernetesTarget:
    values: dict[str, Any] = {
        "name": "prod",
        "api_url": fake.url,
        "token": TOKEN,
        "namespaces": [NS],
        "timeout": "5s",
        "metrics": True,
    }
    return KubernetesTarget(**{**values, **overrides})


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def set_usage(fake: FakeKubernetes, **memory: str) -> None:
    """Pod name -> memory usage of its `app` container (CPU 50m each)."""
    fake.pod_metrics = [
        pod_metrics(name, NS, {"app": ("50000000n", used)}) for name, used in memory.items()
    ]


def test_memory_against_the_limit_is_graded(cluster: FakeKubernetes) -> None:
    set_usage(
        cluster,
        **{
            "counterfactual-lab-6f7d8-aaaaa": "200Mi",
            "counterfactual-lab-6f7d8-bbbbb": "950Mi",  # 92.8 % of 1Gi: over 004's 0.9
            "batch-runner-5c4b3-ccccc": "100Mi",
        },
    )
    usage = by_check(check_kubernetes(target(cluster)))[f"kubernetes.usage[{NS}]"]
    assert (usage.status, usage.value, usage.unit) == (Status.WARN, 92.8, "%"), usage
    assert usage.message.startswith(
        f"busiest: {NS}/counterfactual-lab-6f7d8-bbbbb/app memory 950Mi of 1024Mi limit (92.8%)"
    )
    assert f"1 above their requests: {NS}/counterfactual-lab-6f7d8-bbbbb/app memory 950Mi" in (
        usage.message
    )
    assert usage.threshold == "warn > 90%, critical > 95%"

    set_usage(cluster, **{"counterfactual-lab-6f7d8-aaaaa": "1000Mi"})
    usage = by_check(check_kubernetes(target(cluster)))[f"kubernetes.usage[{NS}]"]
    assert (usage.status, usage.value) == (Status.CRITICAL, 97.7)

    set_usage(cluster, **{"counterfactual-lab-6f7d8-aaaaa": "100Mi"})
    usage = by_check(check_kubernetes(target(cluster)))[f"kubernetes.usage[{NS}]"]
    assert usage.status == Status.OK and "above their requests" not in usage.message


def test_containers_without_limits_are_named_not_graded(fake_kubernetes: FakeKubernetes) -> None:  # noqa: F811
    fake_kubernetes.token = TOKEN
    fake_kubernetes.add(pod("free-app-1a2b3-ddddd", NS))  # no resources at all
    set_usage(fake_kubernetes, **{"free-app-1a2b3-ddddd": "3Gi"})
    usage = by_check(check_kubernetes(target(fake_kubernetes)))[f"kubernetes.usage[{NS}]"]
    assert usage.status == Status.OK
    assert usage.message == (
        f"1 containers measured, none sets a limit; 1 with no memory limit: "
        f"{NS}/free-app-1a2b3-ddddd/app"
    )


def test_no_metrics_server_is_unknown_with_the_hint(cluster: FakeKubernetes) -> None:
    cluster.metrics_served = False
    usage = by_check(check_kubernetes(target(cluster)))[f"kubernetes.usage[{NS}]"]
    assert usage.status == Status.UNKNOWN
    assert "install metrics-server" in usage.message
    assert f"kubernetes.usage[{NS}]" not in by_check(
        check_kubernetes(target(cluster, metrics=False))
    )


def test_the_selector_narrows_pods_usage_and_deployments(cluster: FakeKubernetes) -> None:
    set_usage(
        cluster,
        **{
            "counterfactual-lab-6f7d8-aaaaa": "200Mi",
            "batch-runner-5c4b3-ccccc": "1000Mi",  # critical, but not selected
        },
    )
    cluster.pods[2]["status"]["containerStatuses"] = [
        container_status(waiting="CrashLoopBackOff", restarts=9)
    ]
    everything = by_check(check_kubernetes(target(cluster)))
    assert everything[f"kubernetes.crashloop[{NS}]"].status == Status.CRITICAL
    assert everything[f"kubernetes.deployments[{NS}]"].status == Status.CRITICAL

    lab = by_check(check_kubernetes(target(cluster, selector="app=counterfactual-lab")))
    assert lab[f"kubernetes.crashloop[{NS}]"].status == Status.OK
    assert lab[f"kubernetes.deployments[{NS}]"].status == Status.OK
    usage = lab[f"kubernetes.usage[{NS}]"]
    assert (usage.status, usage.value) == (Status.OK, 19.5), usage
    selectors = {
        r.query.get("labelSelector", [""])[0]
        for r in cluster.requests
        if r.path.endswith(("/pods", "/deployments"))
    }
    assert "app=counterfactual-lab" in selectors


def test_network_policies_must_exist_in_each_namespace(cluster: FakeKubernetes) -> None:
    checked = target(cluster, network_policies=True, metrics=False)
    missing = by_check(check_kubernetes(checked))[f"kubernetes.network_policies[{NS}]"]
    assert (missing.status, missing.value) == (Status.WARN, 0)
    assert missing.message.startswith(f"no NetworkPolicy in namespace {NS}")

    cluster.add(network_policy("allow-api", NS, {"app": "counterfactual-lab"}))
    partial = by_check(check_kubernetes(checked))[f"kubernetes.network_policies[{NS}]"]
    assert (partial.status, partial.value) == (Status.OK, 1)
    assert (
        partial.message == "1 NetworkPolicy: allow-api; none selects every pod (no default policy)"
    )

    cluster.add(network_policy("default-deny", NS), network_policy("elsewhere", "other"))
    full = by_check(check_kubernetes(checked))[f"kubernetes.network_policies[{NS}]"]
    assert (
        full.message == "2 NetworkPolicies: allow-api, default-deny; default-deny selects every pod"
    )

    cluster.forbidden.add("networkpolicies")
    refused = by_check(check_kubernetes(checked))[f"kubernetes.network_policies[{NS}]"]
    assert refused.status == Status.UNKNOWN and "RBAC" in refused.message


def test_a_missing_namespace_fails_the_new_checks_too(cluster: FakeKubernetes) -> None:
    checked = target(cluster, namespaces=["nope"], network_policies=True)
    results = by_check(check_kubernetes(checked))
    for short in ("usage", "network_policies"):
        assert results[f"kubernetes.{short}[nope]"].status == Status.CRITICAL


def test_network_policies_need_namespaces() -> None:
    with pytest.raises(ValidationError, match="network_policies is true but namespaces is empty"):
        KubernetesTarget(name="k", network_policies=True)
