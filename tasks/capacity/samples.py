"""How the capacity wing names what it measures: one resource per measured thing, as
`<target>/<what>` (`app/table/public.orders`, `this-machine/disk/data`), with its kind."""

from __future__ import annotations

from datetime import datetime

from runbook.catalog import Sample

# kind -> (what it is, unit)
KINDS = {
    "postgres.database": "database size",
    "postgres.table": "table size with TOAST and indexes (runbook 003)",
    "postgres.index": "index size",
    "postgres.connections": "connections of max_connections",
    "host.disk": "bytes used of the mount's size",
    "host.inodes": "inodes used of the mount's inodes",
    "host.memory": "memory used of total",
    "redis.memory": "used_memory of maxmemory",
    "redis.keys": "keys in every database",
    "backups.bytes": "stored bytes of the target's backups",
    "kubernetes.node.memory": "node memory in use (metrics.k8s.io) of its allocatable",
    "kubernetes.node.cpu": "node CPU cores in use (metrics.k8s.io) of its allocatable",
    "kubernetes.node.memory_requests": "memory requested by the node's pods of its allocatable",
    "kubernetes.node.cpu_requests": "CPU requested by the node's pods of its allocatable",
    "kubernetes.node.pods": "pods on the node of its allocatable pods",
    "kubernetes.pod.memory": "pod memory in use of its limits",
    "kubernetes.pod.cpu": "pod CPU cores in use of its limits",
    "docker.memory": "container memory in use (docker stats) of its limit",
    "prometheus.series": "a configured Prometheus series",
}


def sample(
    target: str, what: str, kind: str, value: float, *, at: datetime, **extra: object
) -> Sample:
    """A sample of resource `<target>/<what>`; extra: limit, unit, source."""
    return Sample(
        resource=f"{target}/{what}", kind=kind, target=target, value=value, time=at, **extra
    )
