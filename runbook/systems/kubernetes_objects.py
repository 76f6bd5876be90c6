"""Kubernetes objects as a backup holds them: read through the official client (the same
connection and errors as runbook/systems/kubernetes.py) and stripped of what the API server
manages, so that `kubectl apply --server-side -f` takes them back on any cluster.

Stripped: status; metadata uid, resourceVersion, generation, creationTimestamp, deletion*,
managedFields, selfLink, and the annotations kubectl and controllers write; a Service's
clusterIP(s) (allocated by the cluster). Left out whole: objects a controller owns
(ownerReferences: they come back with their owner), the `kubernetes` Service of `default`
and the `kube-root-ca.crt` ConfigMap every namespace gets. Secrets are read only by name,
one by one, and only when listed.

A restore writes them back with server-side apply (`ObjectReader.apply`: PATCH
application/apply-patch+yaml, field manager "runbook", `force` only when asked; `dry_run`
sends dryRun=All so the server answers what it would store and stores nothing).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from runbook.config import KubernetesTarget
from runbook.systems.kubernetes import Cluster, KubernetesApiError, connect

# kind -> (API class, the resource part of its methods' names, apiVersion)
KINDS: dict[str, tuple[Callable[[k8s.ApiClient], Any], str, str]] = {
    "ConfigMap": (k8s.CoreV1Api, "config_map", "v1"),
    "Secret": (k8s.CoreV1Api, "secret", "v1"),
    "Service": (k8s.CoreV1Api, "service", "v1"),
    "Deployment": (k8s.AppsV1Api, "deployment", "apps/v1"),
    "Ingress": (k8s.NetworkingV1Api, "ingress", "networking.k8s.io/v1"),
    "HorizontalPodAutoscaler": (
        k8s.AutoscalingV2Api,
        "horizontal_pod_autoscaler",
        "autoscaling/v2",
    ),
    "NetworkPolicy": (k8s.NetworkingV1Api, "network_policy", "networking.k8s.io/v1"),
}

_METADATA_DROPPED = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)
_ANNOTATIONS_DROPPED = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
)
FIELD_MANAGER = "runbook"
APPLY_PATCH = "application/apply-patch+yaml"
# what the API server sets on every object: never a difference a restore made
SERVER_METADATA = frozenset(_METADATA_DROPPED)
CLUSTER_MADE = {("Service", "default", "kubernetes"), ("ConfigMap", "*", "kube-root-ca.crt")}


class ObjectReader(Cluster):
    """The reads of a Kubernetes objects backup, on a Cluster's connection."""

    @classmethod
    def connect(cls, target: KubernetesTarget) -> ObjectReader:
        """The same client `connect` configures (api_url, in-cluster or kubeconfig)."""
        base = connect(target)
        return cls(base._api, base.timeout, base._secrets)  # a Cluster of the same family

    def _method(self, kind: str, verb: str) -> Callable[..., Any]:
        api_class, resource, _ = KINDS[kind]
        return getattr(api_class(self._api), f"{verb}_namespaced_{resource}")

    def objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        """Every object of `kind` in `namespace`, as the API server answers them."""
        _, _, api_version = KINDS[kind]
        found = self._list(self._method(kind, "list"), namespace)
        return [{"apiVersion": api_version, "kind": kind, **item} for item in found]

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One Secret, None when it does not exist in `namespace`."""
        try:
            found = self._get(self._method("Secret", "read"), name, namespace)
        except KubernetesApiError as exc:
            if exc.status == 404:
                return None
            raise
        return {"apiVersion": "v1", "kind": "Secret", **found}

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object as it is live, None when it does not exist."""
        _, _, api_version = KINDS[kind]
        try:
            found = self._get(self._method(kind, "read"), name, namespace)
        except KubernetesApiError as exc:
            if exc.status == 404:
                return None
            raise
        return {"apiVersion": api_version, "kind": kind, **found}

    def apply(self, obj: dict[str, Any], *, force: bool, dry_run: bool) -> dict[str, Any]:
        """Server-side apply of `obj` (as `kubectl apply --server-side [--force-conflicts]
        [--dry-run=server]`); answers the object as the server stored it, or would have.
        KubernetesApiError 409 when another field manager owns a field it sets (without
        `force`), 404 when its namespace does not exist."""
        meta = obj["metadata"]
        params: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force": force}
        if dry_run:
            params["dry_run"] = "All"
        found = self._get(
            self._method(obj["kind"], "patch"),
            meta["name"],
            meta["namespace"],
            obj,
            _content_type=APPLY_PATCH,
            **params,
        )
        return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], **found}


def made_by_the_cluster(obj: dict[str, Any]) -> bool:
    """Objects that come back on their own: owned by a controller, or made by the cluster."""
    meta = obj.get("metadata") or {}
    if meta.get("ownerReferences"):
        return True
    where = (obj.get("kind"), meta.get("namespace"), meta.get("name"))
    return where in CLUSTER_MADE or (where[0], "*", where[2]) in CLUSTER_MADE


def exportable(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what the API server manages: what `apply` takes back."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    for key in _METADATA_DROPPED:
        meta.pop(key, None)
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in _ANNOTATIONS_DROPPED
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    if out.get("kind") == "Service":
        spec = out.get("spec") or {}
        for key in ("clusterIP", "clusterIPs"):
            spec.pop(key, None)
    if out.get("kind") == "Deployment":
        template_meta = ((out.get("spec") or {}).get("template") or {}).get("metadata") or {}
        template_meta.pop("creationTimestamp", None)
    return {key: out[key] for key in ("apiVersion", "kind", "metadata") if key in out} | {
        key: value for key, value in out.items() if key not in ("apiVersion", "kind", "metadata")
    }
