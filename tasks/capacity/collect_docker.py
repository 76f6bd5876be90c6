"""Docker container memory against its limit, as `docker stats --no-stream` shows it: per
running container (of the target's compose project, when set) one stats sample read through
the official client. In use = usage minus the inactive page cache (cgroup v1
`total_inactive_file`, v2 `inactive_file`), as the docker CLI computes it; the limit is the
container's memory limit, or the host's memory when it has none (what the container can reach,
and what `docker stats` prints as LIMIT)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from runbook.catalog import Sample
from runbook.config import DockerTarget
from runbook.systems.docker import DockerApiError, Engine, container_name
from tasks.capacity.samples import sample


def memory_in_use(memory_stats: dict[str, Any]) -> float | None:
    """`docker stats` MEM USAGE: usage without the inactive file cache; None when the engine
    reports no usage (a container that is stopping)."""
    usage = memory_stats.get("usage")
    if usage is None:
        return None
    stats = memory_stats.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file"):  # cgroup v1 first, as the CLI does
        cache = stats.get(key)
        if cache is not None and cache < usage:
            return float(usage - cache)
    return float(usage)


def collect_docker(target: DockerTarget, at: datetime) -> list[Sample]:
    found = []
    with Engine(target.url, target.timeout.total_seconds()) as engine:
        for attrs in engine.containers(target.project):
            if not (attrs.get("State") or {}).get("Running"):
                continue
            try:
                memory = engine.stats(attrs["Id"]).get("memory_stats") or {}
            except DockerApiError as exc:
                if exc.reason.startswith("HTTP 404"):
                    continue  # removed since the list: nothing to measure
                raise
            used = memory_in_use(memory)
            if used is None:
                continue
            found.append(
                sample(
                    target.name,
                    f"container/{container_name(attrs)}/memory",
                    "docker.memory",
                    used,
                    at=at,
                    limit=memory.get("limit") or None,
                    unit="bytes",
                )
            )
    return found
