"""What a maintenance window works on: targets of several kinds, and the host itself.

Each procedure declares the kinds it applies to (`kinds`, tasks/maintenance/procedure.py):

- `postgres`: a PostgreSQL target, through a MaintenanceSession (lock_timeout, retries);
- `redis`: a Redis target, through a RedisSession (runbook/systems/redis_commands.py);
- `files`: a files target (its paths);
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

from runbook.config import FilesTarget, MaintenanceSettings, PostgresTarget, RedisTarget
from runbook.locks import maintenance_locks
from runbook.runtime import Runtime
from runbook.storage import Storage
from runbook.systems.redis_commands import RedisClient
from tasks.maintenance.procedure import MaintenanceSession

POSTGRES, REDIS, FILES, HOST = "postgres", "redis", "files", "host"
KINDS = (POSTGRES, REDIS, FILES, HOST)
BACKED_UP = frozenset({POSTGRES, REDIS, FILES})  # what the pre-maintenance backup covers


@dataclass(frozen=True)
class HostTarget:
    """The machine the window runs on (target names are [a-z0-9_-]: `@host` is never one)."""

    name: str = "@host"


HOST_TARGET = HostTarget()
MaintenanceTarget = PostgresTarget | RedisTarget | FilesTarget | HostTarget

_KIND_OF = {PostgresTarget: POSTGRES, RedisTarget: REDIS, FilesTarget: FILES, HostTarget: HOST}


def kind_of(target: Any) -> str:
    return _KIND_OF[type(target)]


def kinds_of(procedure: Any) -> tuple[str, ...]:
    """The kinds a procedure applies to (PostgreSQL when it does not say)."""
    return tuple(getattr(procedure, "kinds", (POSTGRES,)))


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
    target: FilesTarget
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
        yield FilesSession(target, settings)
    else:
        yield HostSession(runtime, settings)
