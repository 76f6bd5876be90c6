"""runbook.systems.kubernetes on its own (as the capacity report will use it): reads answer
plain JSON, failures are typed errors, and no error text carries the bearer token."""

from __future__ import annotations

import time
import traceback

import pytest

from runbook.config import KubernetesTarget
from runbook.systems.kubernetes import (
    KubernetesApiError,
    KubernetesConfigError,
    KubernetesUnreachable,
    connect,
)
from tests.support.fake_apis import (
    FakeKubernetes,
    closed_port_url,
    fake_kubernetes,  # noqa: F401
    pod,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.client-test-token.c2lnbmF0dXJl"
NS = "shop"


def target(url: str, **overrides: object) -> KubernetesTarget:
    return KubernetesTarget(**{"name": "prod", "api_url": url, "token": TOKEN, **overrides})


def test_reads_answer_plain_json(fake_kubernetes: FakeKubernetes) -> None:  # noqa: F811
    fake_kubernetes.token = TOKEN
    fake_kubernetes.add(pod("api-1", NS), pod("api-2", NS), pod("other", "default"))

    with connect(target(fake_kubernetes.url)) as cluster:
        assert cluster.version()["gitVersion"] == "v1.31.2"
        names = [p["metadata"]["name"] for p in cluster.pods(NS)]
        everywhere = cluster.pods(None)

    assert names == ["api-1", "api-2"]
    assert len(everywhere) == 3


def test_an_error_answer_is_a_typed_error_without_the_token(
    fake_kubernetes: FakeKubernetes,  # noqa: F811
) -> None:
    fake_kubernetes.token = TOKEN
    fake_kubernetes.echo_auth = True  # error bodies quote the credentials they were sent
    fake_kubernetes.forbidden = {"pods"}

    with connect(target(fake_kubernetes.url)) as cluster:
        with pytest.raises(KubernetesApiError) as raised:
            cluster.pods(NS)
        with pytest.raises(KubernetesApiError) as missing:
            cluster.namespace("no-such-namespace")

    assert raised.value.status == 403
    assert str(raised.value).startswith("HTTP 403 Forbidden: pods is forbidden")
    assert "Bearer **********" in str(raised.value)
    assert TOKEN not in "".join(traceback.format_exception(raised.value))
    assert TOKEN not in str(raised.value.__context__)  # the client's own exception, scrubbed
    assert missing.value.status == 404


def test_an_unreachable_server_fails_later_reads_at_once() -> None:
    url = closed_port_url("http")

    with connect(target(url, timeout="3s")) as cluster:
        with pytest.raises(KubernetesUnreachable, match="Connection refused"):
            cluster.version()
        started = time.monotonic()
        with pytest.raises(KubernetesUnreachable) as again:
            cluster.nodes()

    assert time.monotonic() - started < 0.1
    assert str(again.value) == f"cannot reach {url}: [Errno 111] Connection refused"


def test_a_client_that_cannot_be_configured_is_a_config_error(tmp_path) -> None:
    missing = KubernetesTarget(name="prod", kubeconfig=tmp_path / "no-such-kubeconfig")

    with pytest.raises(KubernetesConfigError, match="kube-config"):
        connect(missing)
