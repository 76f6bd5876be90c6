"""The fake Kubernetes API (tests/support/fake_apis.py) plus the kinds a Kubernetes objects
backup also reads: ConfigMaps, Services, Secrets and Ingresses, listed per namespace and (for
Secrets) read one by one, in the shapes kube-apiserver answers.

A restore writes them back with server-side apply, which the fake takes as kube-apiserver
does (for every kind a backup holds): PATCH application/apply-patch+yaml with fieldManager
(required) and force; each leaf field has an owner (the manager of the object's
managedFields for objects put in by a test, else the manager that applied it); applying a
different value to a field another manager owns is a 409 Conflict unless force=true; fields
the manager owned and no longer applies are removed; dryRun=All answers the result and
stores nothing; an unknown namespace is 404. Lists are atomic (replaced whole). `applies`
records each apply as (kind, namespace, name, dry_run)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import yaml

from tests.support.fake_apis import FakeKubernetes, Request, Response, _status, ago

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
# one object of any kind a backup holds: (group path, namespace, resource, name)
_OBJECT = re.compile(r"^/(api/v1|apis/[a-z.0-9]+/v[0-9a-z]+)/namespaces/([^/]+)/([a-z]+)/([^/]+)$")
_RESOURCES = {
    **_MORE,
    ("apis/networking.k8s.io/v1", "networkpolicies"): ("NetworkPolicy", "networking.k8s.io/v1"),
    ("apis/apps/v1", "deployments"): ("Deployment", "apps/v1"),
    ("apis/autoscaling/v2", "horizontalpodautoscalers"): (
        "HorizontalPodAutoscaler",
        "autoscaling/v2",
    ),
}
# kinds the base fake keeps in its own lists (without kind and apiVersion)
_BASE_LISTS = {
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "hpas",
    "NetworkPolicy": "network_policies",
}
_SERVER_METADATA = {
    "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "name",
    "namespace", "selfLink",
}  # fmt: skip
Path = tuple[str, ...]


@dataclass
class FakeKubernetesObjects(FakeKubernetes):
    more: list[dict[str, Any]] = field(default_factory=list)  # with their "kind"
    applies: list[tuple[str, str, str, bool]] = field(default_factory=list)
    # (kind, namespace, name) -> {leaf path: field manager}, as managedFields say it
    owners: dict[tuple[str, str, str], dict[Path, str]] = field(default_factory=dict)

    def put(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            if obj["kind"] in ("Deployment", "HorizontalPodAutoscaler", "NetworkPolicy"):
                self.add({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
            else:
                self.more.append(obj)
            self.namespaces.add(obj["metadata"]["namespace"])

    # --- the objects, whatever list holds them ---------------------------------------------

    def _bucket(self, kind: str) -> list[dict[str, Any]]:
        return getattr(self, _BASE_LISTS[kind]) if kind in _BASE_LISTS else self.more

    def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as stored (the base lists' without kind and apiVersion), or None."""
        for obj in self._bucket(kind):
            meta = obj["metadata"]
            if (
                meta["namespace"] == namespace
                and meta["name"] == name
                and (kind in _BASE_LISTS or obj["kind"] == kind)
            ):
                return obj
        return None

    def live(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as a GET answers it (with kind and apiVersion), or None."""
        found = self.find(kind, namespace, name)
        if found is None:
            return None
        api_version = next(v for k, v in _RESOURCES.values() if k == kind)
        return {"kind": kind, "apiVersion": api_version, **copy.deepcopy(found)}

    def remove(self, kind: str, namespace: str, name: str) -> None:
        """Delete an object (as `kubectl delete` would)."""
        found = self.find(kind, namespace, name)
        assert found is not None, f"no {kind} {namespace}/{name}"
        self._bucket(kind).remove(found)
        self.owners.pop((kind, namespace, name), None)

    def _store(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        old = self.find(kind, meta["namespace"], meta["name"])
        bucket = self._bucket(kind)
        stored = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
        stored = stored if kind in _BASE_LISTS else {"kind": kind, **stored}
        if old is None:
            bucket.append(stored)
        else:
            bucket[bucket.index(old)] = stored

    def _owners_of(self, kind: str, obj: dict[str, Any]) -> dict[Path, str]:
        meta = obj["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        if key not in self.owners:  # put in by a test: its managedFields' manager owns it all
            manager = ((meta.get("managedFields") or [{}])[0]).get("manager", "kubectl-create")
            self.owners[key] = {path: manager for path in _leaves(_owned_part(obj))}
        return self.owners[key]

    # --- server-side apply -----------------------------------------------------------------

    def _apply(self, request: Request, kind: str, api_version: str, namespace: str, name: str):
        if request.headers.get("content-type") != "application/apply-patch+yaml":
            message = f"unsupported patch type {request.headers.get('content-type')!r}"
            return 415, _status(415, "UnsupportedMediaType", message), {}
        manager = request.query.get("fieldManager", [""])[0]
        if not manager:
            message = (
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                "required for apply patch"
            )
            return 422, _status(422, "Invalid", message), {}
        force = request.query.get("force", ["false"])[0] == "true"
        dry_run = request.query.get("dryRun", [""])[0] == "All"
        applied = yaml.safe_load(request.body)
        meta = applied.get("metadata") or {}
        if (applied.get("kind"), applied.get("apiVersion")) != (kind, api_version) or meta.get(
            "name"
        ) != name:
            message = f"the body of the request ({applied.get('kind')} {meta.get('name')}) "
            message += f"does not match the path ({kind} {name})"
            return 400, _status(400, "BadRequest", message), {}
        if meta.get("namespace", namespace) != namespace:
            message = "the namespace of the provided object does not match the namespace sent"
            return 400, _status(400, "BadRequest", message), {}
        if namespace not in self.namespaces:
            message = f'namespaces "{namespace}" not found'
            return 404, _status(404, "NotFound", message, {"name": namespace}), {}
        self.applies.append((kind, namespace, name, dry_run))
        live = self.live(kind, namespace, name)
        sent = {path: value for path, value in _leaves(_owned_part(applied)).items()}
        if live is None:
            result = _created(applied, kind, namespace, manager)
            owners = dict.fromkeys(sent, manager)
        else:
            owners = dict(self._owners_of(kind, live))
            current = _leaves(_owned_part(live))
            conflicts = [
                (path, owner)
                for path, owner in owners.items()
                if path in sent and owner != manager and current.get(path) != sent[path]
            ]
            if conflicts and not force:
                return 409, _conflict(kind, api_version, name, conflicts), {}
            result = copy.deepcopy(live)
            for path, owner in owners.items():  # what it applied before and no longer does
                if owner == manager and path not in sent:
                    _delete(result, path)
            for path, value in sent.items():
                _set(result, path, copy.deepcopy(value))
                owners[path] = manager
            owners = {p: o for p, o in owners.items() if p in sent or o != manager}
            if json.dumps(_owned_part(result), sort_keys=True) != json.dumps(
                _owned_part(live), sort_keys=True
            ):
                version = int(result["metadata"].get("resourceVersion") or 0) + 1
                result["metadata"]["resourceVersion"] = str(version)
                if "generation" in result["metadata"] and "spec" in result:
                    result["metadata"]["generation"] += 1
            fields = [f for f in result["metadata"].get("managedFields") or [] if
                      f.get("manager") != manager]  # fmt: skip
            result["metadata"]["managedFields"] = [
                *fields,
                {"manager": manager, "operation": "Apply", "apiVersion": api_version},
            ]
        if not dry_run:
            self._store(kind, result)
            self.owners[(kind, namespace, name)] = owners
        return 200, result, {}

    def answer(self, request: Request) -> Response | None:
        match = _OBJECT.match(request.path)
        if match and (match.group(1), match.group(3)) in _RESOURCES:
            group, namespace, resource, name = match.groups()
            kind, api_version = _RESOURCES[(group, resource)]
            if request.method == "PATCH" and "apply-patch" in request.headers.get(
                "content-type", ""
            ):
                return self._apply(request, kind, api_version, namespace, name)
            if request.method == "GET" and kind in ("HorizontalPodAutoscaler", "NetworkPolicy"):
                found = self.live(kind, namespace, name)
                if found is None:
                    message = f'{resource} "{name}" not found'
                    return 404, _status(404, "NotFound", message, {"name": name}), {}
                return 200, found, {}
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


# --- server-side apply: fields as paths of leaves -------------------------------------------


def _owned_part(obj: dict[str, Any]) -> dict[str, Any]:
    """What apply owns: everything but kind, apiVersion, status and server metadata."""
    out = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion", "status")}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_METADATA}
    return {**out, "metadata": meta} if meta else out


def _leaves(tree: Any, prefix: Path = ()) -> dict[Path, Any]:
    if isinstance(tree, dict) and tree:
        found: dict[Path, Any] = {}
        for key, value in tree.items():
            found.update(_leaves(value, (*prefix, key)))
        return found
    return {prefix: tree} if prefix else {}


def _set(tree: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _delete(tree: dict[str, Any], path: Path) -> None:
    parents = [tree]
    for key in path[:-1]:
        tree = tree.get(key)
        if not isinstance(tree, dict):
            return
        parents.append(tree)
    tree.pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):  # maps left empty go too
        if parents[depth] == {}:
            parents[depth - 1].pop(path[depth - 1], None)


def _created(applied: dict[str, Any], kind: str, namespace: str, manager: str) -> dict[str, Any]:
    out = copy.deepcopy(applied)
    meta = out["metadata"]
    meta.update(
        namespace=namespace,
        uid=f"uid-applied-{namespace}-{meta['name']}",
        resourceVersion="1",
        creationTimestamp=ago(timedelta(0)),
        managedFields=[{"manager": manager, "operation": "Apply", "apiVersion": out["apiVersion"]}],
    )
    if kind == "Deployment":
        meta["generation"] = 1
        out["status"] = {"observedGeneration": 1, "replicas": out["spec"].get("replicas", 1)}
    if kind == "Service":
        out["spec"]["clusterIP"] = "10.96.200.1"  # allocated by the cluster
        out["spec"]["clusterIPs"] = ["10.96.200.1"]
    return out


def _conflict(
    kind: str, api_version: str, name: str, conflicts: list[tuple[Path, str]]
) -> dict[str, Any]:
    """kube-apiserver's 409 for an apply that conflicts with other managers' fields."""
    described = [f'conflict with "{owner}" using {api_version}: .{".".join(path)}'
                 for path, owner in conflicts]  # fmt: skip
    plural = "s" if len(conflicts) > 1 else ""
    message = f"Apply failed with {len(conflicts)} conflict{plural}: " + "\n".join(described)
    causes = [
        {"reason": "FieldManagerConflict", "message": f'conflict with "{owner}"',
         "field": "." + ".".join(path)}
        for path, owner in conflicts
    ]  # fmt: skip
    return _status(409, "Conflict", message, {"name": name, "kind": kind.lower(), "causes": causes})
