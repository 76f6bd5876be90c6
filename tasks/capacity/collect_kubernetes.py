"""Kubernetes capacity figures (runbooks 001/003's `kubectl top` across their namespaces), read
through the official client: usage from metrics.k8s.io (metrics-server), requests, limits and
allocatable from the core API.

- Per node: memory and CPU in use against the node's allocatable (`kubectl top nodes`); the
  memory and CPU requested by the pods scheduled on it, and its pods, against the same
  allocatable (what the scheduler sees: a node whose requests are full takes no new pod, however
  idle it is). The requests need every namespace's pods, so they are measured only when the
  target names no namespaces.
- Per pod of the target's namespaces (all when none): memory and CPU in use (`kubectl top
  pods`) against the pod's limits, when every container has one (a container without a limit
  can use the node's whole allocatable, so the pod has no limit of its own).

Memory is in bytes, CPU in cores. A cluster without metrics-server (metrics.k8s.io answers 404)
still yields the requests and pod counts; the usage is then left out and the log says why.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from kubernetes.utils import parse_quantity

from runbook.catalog import Sample
from runbook.config import KubernetesTarget
from runbook.systems.kubernetes import KubernetesApiError, connect
from tasks.capacity.samples import sample

log = logging.getLogger("runbook.capacity")

UNITS = {"memory": "bytes", "cpu": "cores"}
FINISHED = ("Succeeded", "Failed")  # pods that no longer hold their requests


def quantity(value: Any) -> float | None:
    """A Kubernetes quantity ("250m", "15444Ki", "2") as a number; None when absent or not a
    quantity."""
    if value is None:
        return None
    try:
        return float(parse_quantity(value))
    except (ValueError, TypeError):
        return None


def collect_kubernetes(target: KubernetesTarget, at: datetime) -> list[Sample]:
    with connect(target) as cluster:
        nodes = cluster.nodes()
        namespaces: list[str | None] = list(target.namespaces) or [None]
        pods = [p for ns in namespaces for p in cluster.pods(ns)]
        try:
            node_usage = cluster.node_metrics()
            pod_usage = [m for ns in namespaces for m in cluster.pod_metrics(ns)]
        except KubernetesApiError as exc:
            if exc.status != 404:
                raise
            log.warning(
                "%s: metrics.k8s.io is not served (is metrics-server installed?); "
                "recording requests and pod counts only",
                target.name,
            )
            node_usage, pod_usage = [], []
    found = node_samples(target.name, nodes, node_usage, at)
    if not target.namespaces:
        found += request_samples(target.name, nodes, pods, at)
    found += pod_samples(target.name, pods, pod_usage, at)
    return found


def _name(obj: dict[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "?")


def _allocatable(node: dict[str, Any]) -> dict[str, Any]:
    return (node.get("status") or {}).get("allocatable") or {}


def node_samples(
    target: str, nodes: list[dict[str, Any]], usage: list[dict[str, Any]], at: datetime
) -> list[Sample]:
    """Memory and CPU in use per node against its allocatable."""
    by_name = {_name(n): n for n in nodes}
    found = []
    for metrics in usage:
        name = _name(metrics)
        allocatable = _allocatable(by_name.get(name, {}))
        for resource in ("memory", "cpu"):
            value = quantity((metrics.get("usage") or {}).get(resource))
            if value is None:
                continue
            found.append(
                sample(
                    target,
                    f"node/{name}/{resource}",
                    f"kubernetes.node.{resource}",
                    value,
                    at=at,
                    limit=quantity(allocatable.get(resource)),
                    unit=UNITS[resource],
                )
            )
    return found


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return (pod.get("spec") or {}).get("containers") or []


def _summed(pod: dict[str, Any], kind: str, resource: str, every: bool) -> float | None:
    """The pod's containers' requests or limits of a resource, summed; with `every`, None
    unless every container sets one."""
    values = [
        quantity(((c.get("resources") or {}).get(kind) or {}).get(resource))
        for c in _containers(pod)
    ]
    known = [v for v in values if v is not None]
    if not known or (every and len(known) < len(values)):
        return None
    return sum(known)


def request_samples(
    target: str, nodes: list[dict[str, Any]], pods: list[dict[str, Any]], at: datetime
) -> list[Sample]:
    """Per node: the requests of the pods scheduled on it, and the pods, against its
    allocatable."""
    found = []
    for node in nodes:
        name = _name(node)
        allocatable = _allocatable(node)
        placed = [
            p
            for p in pods
            if (p.get("spec") or {}).get("nodeName") == name
            and (p.get("status") or {}).get("phase") not in FINISHED
        ]
        for resource in ("memory", "cpu"):
            requested = sum(_summed(p, "requests", resource, every=False) or 0 for p in placed)
            found.append(
                sample(
                    target,
                    f"node/{name}/{resource}-requests",
                    f"kubernetes.node.{resource}_requests",
                    requested,
                    at=at,
                    limit=quantity(allocatable.get(resource)),
                    unit=UNITS[resource],
                )
            )
        found.append(
            sample(
                target,
                f"node/{name}/pods",
                "kubernetes.node.pods",
                len(placed),
                at=at,
                limit=quantity(allocatable.get("pods")),
                unit="pods",
            )
        )
    return found


def pod_samples(
    target: str, pods: list[dict[str, Any]], usage: list[dict[str, Any]], at: datetime
) -> list[Sample]:
    """Memory and CPU in use per pod against its limits (when every container has one)."""
    by_key = {((p.get("metadata") or {}).get("namespace"), _name(p)): p for p in pods}
    found = []
    for metrics in usage:
        namespace = (metrics.get("metadata") or {}).get("namespace", "?")
        name = _name(metrics)
        pod = by_key.get((namespace, name), {})
        containers = metrics.get("containers") or []
        for resource in ("memory", "cpu"):
            values = [quantity((c.get("usage") or {}).get(resource)) for c in containers]
            if not values or any(v is None for v in values):
                continue
            found.append(
                sample(
                    target,
                    f"pod/{namespace}/{name}/{resource}",
                    f"kubernetes.pod.{resource}",
                    sum(values),
                    at=at,
                    limit=_summed(pod, "limits", resource, every=True),
                    unit=UNITS[resource],
                )
            )
    return found
