"""The fake Kubernetes API (tests/support/fake_apis.py) plus the kinds a Kubernetes objects
backup also reads: ConfigMaps, Services, Secrets and Ingresses, listed per namespace and (for
Secrets) read one by one, in the shapes kube-apiserver answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.fake_apis import FakeKubernetes, Request, Response, _status

# resource path -> (kind, apiVersion)
_MORE = {
    ("api/v1", "configmaps"): ("ConfigMap", "v1"),
    ("api/v1", "services"): ("Service", "v1"),
    ("api/v1", "secrets"): ("Secret", "v1"),
    ("apis/networking.k8s.io/v1", "ingresses"): ("Ingress", "networking.k8s.io/v1"),
}
_PATH = re.compile(
    r"^/(api/v1|apis/networking\.k8s\.io/v1)/namespaces/([^/]+)/([a-z]+)(?:/([^/]+))?$"
)


@dataclass
class FakeKubernetesObjects(FakeKubernetes):
    more: list[dict[str, Any]] = field(default_factory=list)  # with their "kind"

    def put(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            if obj["kind"] in ("Deployment", "HorizontalPodAutoscaler", "NetworkPolicy"):
                self.add({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
            else:
                self.more.append(obj)
            self.namespaces.add(obj["metadata"]["namespace"])

    def answer(self, request: Request) -> Response | None:
        match = _PATH.match(request.path)
        if request.method == "GET" and match and (match.group(1), match.group(3)) in _MORE:
            group, namespace, resource, name = match.groups()
            kind, api_version = _MORE[(group, resource)]
            items = [
                {k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                for o in self.more
                if o["kind"] == kind and o["metadata"]["namespace"] == namespace
            ]
            if name is None:
                return 200, self._page(request, items, f"{kind}List", api_version), {}
            found = [o for o in items if o["metadata"]["name"] == name]
            if not found:
                message = f'{resource} "{name}" not found'
                return 404, _status(404, "NotFound", message, {"name": name}), {}
            return 200, {"kind": kind, "apiVersion": api_version, **found[0]}, {}
        return super().answer(request)


def managed(kind: str, name: str, namespace: str, **body: Any) -> dict[str, Any]:
    """An object as the API server returns it: with the fields it manages filled in."""
    api_version = {"Ingress": "networking.k8s.io/v1", "Deployment": "apps/v1"}.get(kind, "v1")
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "resourceVersion": "4711",
            "creationTimestamp": "2026-11-01T10:00:00Z",
            "managedFields": [{"manager": "kubectl", "operation": "Update"}],
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": '{"big": "json"}',
                "team": "platform",
            },
        },
        **body,
    }


@pytest.fixture
def fake_kube_objects() -> Iterator[FakeKubernetesObjects]:
    fake = FakeKubernetesObjects()
    fake.start()
    yield fake
    fake.stop()
