"""What a maintenance window works on: targets of several kinds, and the host itself.

Each procedure declares the kinds it applies to (`kinds`, tasks/maintenance/procedure.py):

- `postgres`: a PostgreSQL target, through a MaintenanceSession (lock_timeout, retries);
- `redis`: a Redis target, through a RedisSession (runbook/systems/redis_commands.py);
- `files`: a files target (its paths), with the runtime's catalog and backup storage (what
  the last verified backup recorded);
- `http`: an HTTP target (its URL: plain HTTP, TLS versions, certificate);
- `prometheus`: a Prometheus target, through its HTTP API client;
- `docker`: a Docker engine target, through runbook/systems/docker.py's Engine;
- `kubernetes`: a Kubernetes target, through runbook/systems/kubernetes.py's Cluster;
- `host`: no target of the config but the machine the window runs on (its log folders, the
  team's own commands): one pseudo-target, HOST, whose name cannot clash with a target's.

The window plans and applies each procedure on its targets of the right kind, opening one
session per target; locks and the pre-maintenance backup cover every target it touches (the
host has its own lock and nothing to back up).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from runbook.config import (
    Config,
    DockerTarget,
    FilesTarget,
    HttpTarget,
    KubernetesTarget,
    MaintenanceSettings,
    PostgresTarget,
    PrometheusTarget,
    RedisTarget,
)
from runbook.errors import NotFoundError
from runbook.locks import maintenance_locks
from runbook.runtime import Runtime
from runbook.storage import Storage
from runbook.systems.docker import Engine
from runbook.systems.kubernetes import Cluster, connect
from runbook.systems.prometheus import Prometheus
from runbook.systems.redis_commands import RedisClient
from tasks.maintenance.procedure import MaintenanceSession

POSTGRES, REDIS, FILES, HOST = "postgres", "redis", "files", "host"
HTTP, PROMETHEUS = "http", "prometheus"
DOCKER, KUBERNETES = "docker", "kubernetes"
KINDS = (POSTGRES, REDIS, FILES, HTTP, PROMETHEUS, DOCKER, KUBERNETES, HOST)
BACKED_UP = frozenset({POSTGRES, REDIS, FILES})  # what the pre-maintenance backup covers


@dataclass(frozen=True)
class HostTarget:
    """The machine the window runs on (target names are [a-z0-9_-]: `@host` is never one)."""

    name: str = "@host"


HOST_TARGET = HostTarget()
MaintenanceTarget = (
    PostgresTarget
    | RedisTarget
    | FilesTarget
    | HttpTarget
    | PrometheusTarget
    | DockerTarget
    | KubernetesTarget
    | HostTarget
)

_KIND_OF = {
    PostgresTarget: POSTGRES,
    RedisTarget: REDIS,
    FilesTarget: FILES,
    HttpTarget: HTTP,
    PrometheusTarget: PROMETHEUS,
    DockerTarget: DOCKER,
    KubernetesTarget: KUBERNETES,
    HostTarget: HOST,
}


def kind_of(target: Any) -> str:
    return _KIND_OF[type(target)]


def kinds_of(procedure: Any) -> tuple[str, ...]:
    """The kinds a procedure applies to (PostgreSQL when it does not say)."""
    return tuple(getattr(procedure, "kinds", (POSTGRES,)))


def find_target(config: Config, name: str) -> MaintenanceTarget:
    """The configured target of a maintenance kind called `name` (targets.<kind>)."""
    kinds = [kind for kind in _KIND_OF.values() if kind != HOST]
    for kind in kinds:
        for target in getattr(config.targets, kind):
            if target.name == name:
                return target
    known = [t.name for kind in kinds for t in getattr(config.targets, kind)]
    raise NotFoundError(
        f"unknown target {name!r} (targets a window can maintain: "
        f"{', '.join(known) or 'none configured'})"
    )


def lock_names(target: MaintenanceTarget) -> tuple[str, ...]:
    """The window's own lock on the target, and those its backups and drills take."""
    if isinstance(target, HostTarget):
        return (f"maintenance-host-{socket.gethostname()}",)
    return maintenance_locks(target.name)


@dataclass
class RedisSession:
    """One connection to a Redis target for a window's measures and actions."""

    client: RedisClient
    target: RedisTarget
    settings: MaintenanceSettings

    @property
    def usable(self) -> bool:
        return True


@dataclass
class HostSession:
    """The host: the window's runtime (its backup storage, its config) and settings."""

    runtime: Runtime
    settings: MaintenanceSettings

    @property
    def storage(self) -> Storage:
        return self.runtime.storage

    @property
    def usable(self) -> bool:
        return True


@dataclass
class FilesSession:
    """A files target's paths, and the runtime whose catalog and storage hold its backups."""

    target: FilesTarget
    settings: MaintenanceSettings
    runtime: Runtime

    @property
    def usable(self) -> bool:
        return True


@dataclass
class HttpSession:
    """An HTTP target: each measure opens its own connections (probes with chosen TLS
    versions), so there is nothing to hold open."""

    target: HttpTarget
    settings: MaintenanceSettings

    @property
    def usable(self) -> bool:
        return True


@dataclass
class PrometheusSession:
    client: Prometheus
    target: PrometheusTarget
    settings: MaintenanceSettings

    @property
    def usable(self) -> bool:
        return True


@dataclass
class DockerSession:
    """A Docker engine (its API version negotiated once per session)."""

    engine: Engine
    target: DockerTarget
    settings: MaintenanceSettings

    @property
    def usable(self) -> bool:
        return True


@dataclass
class KubernetesSession:
    """A Kubernetes API server, through the official client."""

    cluster: Cluster
    target: KubernetesTarget
    settings: MaintenanceSettings

    @property
    def usable(self) -> bool:
        return True


@contextmanager
def open_session(
    target: MaintenanceTarget, settings: MaintenanceSettings, runtime: Runtime
) -> Iterator[Any]:
    """The session a procedure measures and applies through, for this kind of target."""
    if isinstance(target, PostgresTarget):
        with MaintenanceSession.open(target, settings) as session:
            yield session
    elif isinstance(target, RedisTarget):
        with RedisClient.open(target) as client:
            yield RedisSession(client, target, settings)
    elif isinstance(target, FilesTarget):
        yield FilesSession(target, settings, runtime)
    elif isinstance(target, HttpTarget):
        yield HttpSession(target, settings)
    elif isinstance(target, PrometheusTarget):
        with Prometheus.for_target(target) as client:
            yield PrometheusSession(client, target, settings)
    elif isinstance(target, DockerTarget):
        with Engine(target.url, target.timeout.total_seconds()) as engine:
            yield DockerSession(engine, target, settings)
    elif isinstance(target, KubernetesTarget):
        with connect(target) as cluster:
            yield KubernetesSession(cluster, target, settings)
    else:
        yield HostSession(runtime, settings)
