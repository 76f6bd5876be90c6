"""Which sections a bundle has, and how each is collected: one per PostgreSQL, Redis, Docker
and Kubernetes target, the host (the configured hosts, else this machine), each configured
HTTP debug endpoint, and the latest health results from the catalog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runbook.config import Config, HostTarget
from runbook.errors import NotFoundError
from runbook.runtime import Runtime
from tasks.diagnose.docker import collect_docker
from tasks.diagnose.health import collect_health
from tasks.diagnose.host import collect_host
from tasks.diagnose.http import collect_http
from tasks.diagnose.kubernetes import collect_kubernetes
from tasks.diagnose.postgres import collect_postgres
from tasks.diagnose.redis import collect_redis
from tasks.diagnose.sections import Collected, Section, bundle_secrets, collect_bounded

HEALTH_TARGET = "catalog"  # the health section's target: the catalog's latest run

# section name -> (where its targets are in the config, how to collect one)
SYSTEMS: dict[str, tuple[Callable[[Config], list[Any]], Callable[[Any, Any], Collected]]] = {
    "postgres": (lambda c: c.targets.postgres, collect_postgres),
    "redis": (lambda c: c.targets.redis, collect_redis),
    "docker": (lambda c: c.targets.docker, collect_docker),
    "kubernetes": (lambda c: c.targets.kubernetes, collect_kubernetes),
    "host": (lambda c: c.targets.host or [HostTarget()], collect_host),
    "http": (lambda c: c.diagnostics.endpoints, collect_http),
}
CONTEXT = ("host", "health")  # always in a bundle, whatever targets were asked for


@dataclass(frozen=True)
class PlannedSection:
    name: str
    target: str


def plan_sections(config: Config, names: list[str] | None = None) -> list[PlannedSection]:
    """Every section, or with `names`: the sections of those targets (or debug endpoints)
    plus the host and the health results."""
    planned = [
        PlannedSection(system, target.name)
        for system, (targets_of, _) in SYSTEMS.items()
        for target in targets_of(config)
    ]
    planned.append(PlannedSection("health", HEALTH_TARGET))
    if not names:
        return planned
    known = {p.target for p in planned if p.name not in CONTEXT}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise NotFoundError(
            f"unknown target {unknown[0]!r} to diagnose (targets: "
            f"{', '.join(sorted(known)) or 'none configured'})"
        )
    return [p for p in planned if p.name in CONTEXT or p.target in names]


def collect_section(runtime: Runtime, planned: PlannedSection) -> tuple[Section, bytes]:
    """One section under the deadline and size cap; any failure is a failed section."""
    config = runtime.config
    settings = config.diagnostics
    if planned.name == "health":

        def collect() -> Collected:
            return collect_health(runtime.catalog)

    else:
        targets_of, collect_one = SYSTEMS[planned.name]
        target = next(t for t in targets_of(config) if t.name == planned.target)

        def collect() -> Collected:
            return collect_one(target, settings)

    return collect_bounded(
        planned.name,
        planned.target,
        collect,
        settings.section_timeout.total_seconds(),
        bundle_secrets(config),
        settings.section_bytes,
    )
