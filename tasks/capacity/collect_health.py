"""The health history's numbers as capacity samples: a health check that measured a level
against a limit becomes a sample of the resource `capacity-collect` measures, so every daily
and hourly health run adds history (issue 12: "The health history's numbers count as samples
too").

The mapping (health check -> capacity resource, and how its value becomes the sample's):

| health check                | resource                      | value                          |
|-----------------------------|-------------------------------|--------------------------------|
| `host.disk[<mount>]`        | `<target>/disk/<mount name>`  | % of (size - root-reserved)    |
| `host.inodes[<mount>]`      | `<target>/inodes/<mount name>`| % of the mount's inodes        |
| `host.memory`               | `<target>/memory`             | % of total memory              |
| `redis.memory`              | `<target>/memory`             | % of maxmemory                 |
| `postgres.connections`      | `<target>/connections`        | the count in its message (of   |
|                             |                               | max_connections, also there)   |
| `postgres.database_size`    | `<target>/database`           | GB (1024^3 bytes)              |

A percentage is turned back into the collector's unit with the limit of the resource's
collected sample nearest in time (inodes, memory, maxmemory); a disk's percentage is df's
(used / (used + available)), so its basis is the mount's size minus the blocks reserved for
root, read from the mount now (reserved blocks do not change with use). A result with no
collected sample to take a limit from, or no value, is left out. A health sample within
SAME_TIME of a collected one of the same resource is not stored: the collected one is the
sample for that moment (no duplicates).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from runbook.catalog import Catalog, HealthHistory, MetricSamples, Sample
from runbook.catalog.health import StoredCheck
from tasks.capacity.collect_host import mount_name
from tasks.capacity.samples import sample

SOURCE = "health"
SAME_TIME = timedelta(minutes=30)  # half the hourly collection's interval
GIB = 1024**3
_CHECK = re.compile(r"^(?P<name>[a-z_.]+)(\[(?P<arg>.+)\])?$")
_CONNECTIONS = re.compile(r"^(\d+) of \d+ connections in use")
_MAX_CONNECTIONS = re.compile(r"max_connections (\d+)")


@dataclass(frozen=True)
class Mapping:
    what: Callable[[str | None], str]  # the check's argument (a mount) -> "disk/data"
    kind: str
    unit: str
    percent: bool  # the health value is a percentage of a limit


MAPPINGS = {
    "host.disk": Mapping(lambda m: f"disk/{mount_name(m or '/')}", "host.disk", "bytes", True),
    "host.inodes": Mapping(
        lambda m: f"inodes/{mount_name(m or '/')}", "host.inodes", "inodes", True
    ),
    "host.memory": Mapping(lambda _: "memory", "host.memory", "bytes", True),
    "redis.memory": Mapping(lambda _: "memory", "redis.memory", "bytes", True),
    "postgres.connections": Mapping(
        lambda _: "connections", "postgres.connections", "connections", False
    ),
    "postgres.database_size": Mapping(lambda _: "database", "postgres.database", "bytes", False),
}


def disk_basis(mount: str) -> tuple[float, float] | None:
    """(df's basis: size minus root-reserved bytes, size) of a mount now; None when it is not
    there."""
    try:
        stats = os.statvfs(mount)
    except OSError:
        return None
    size = stats.f_blocks * stats.f_frsize
    reserved = (stats.f_bfree - stats.f_bavail) * stats.f_frsize
    return float(size - reserved), float(size)


def _nearest(collected: list[Sample], at: datetime) -> Sample | None:
    return min(collected, key=lambda s: abs(s.time - at), default=None)


def health_sample(
    result: StoredCheck,
    collected: list[Sample],
    disk: Callable[[str], tuple[float, float] | None] = disk_basis,
) -> Sample | None:
    """The capacity sample a health result stands for; None when it has none (another check,
    no value, no limit known). `collected`: the resource's collected samples."""
    parts = _CHECK.match(result.check)
    mapping = MAPPINGS.get(parts["name"]) if parts else None
    value = result.value
    if mapping is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    arg = parts["arg"]
    what = mapping.what(arg)
    nearest = _nearest(collected, result.at)
    limit = nearest.limit if nearest else None
    if parts["name"] == "host.disk":
        basis = disk(arg or "/")
        if basis is None:
            return None
        level, limit = value / 100 * basis[0], basis[1]
    elif mapping.percent:
        if not limit:
            return None
        level = value / 100 * limit
    elif parts["name"] == "postgres.connections":
        found = _CONNECTIONS.match(result.message)
        maximum = _MAX_CONNECTIONS.search(result.message)
        if found is None or not (limit or maximum):
            return None
        level, limit = float(found[1]), limit or float(maximum[1])
    else:  # database size in GB
        level = value * GIB
    return sample(
        result.target,
        what,
        mapping.kind,
        round(level),
        at=result.at,
        limit=limit,
        unit=mapping.unit,
        source=SOURCE,
    )


def samples_from_health(
    results: Iterable[StoredCheck],
    store: MetricSamples,
    disk: Callable[[str], tuple[float, float] | None] = disk_basis,
) -> list[Sample]:
    """The samples the results stand for, less those with a collected sample of the same
    resource within SAME_TIME."""
    by_resource: dict[str, list[StoredCheck]] = {}
    for result in results:
        parts = _CHECK.match(result.check)
        mapping = MAPPINGS.get(parts["name"]) if parts else None
        if mapping is not None:
            resource = f"{result.target}/{mapping.what(parts['arg'])}"
            by_resource.setdefault(resource, []).append(result)
    found = []
    for resource, group in by_resource.items():
        since = min(r.at for r in group) - timedelta(days=30)
        collected = [s for s in store.history(resource, since=since) if s.source != SOURCE]
        for result in group:
            if any(abs(s.time - result.at) <= SAME_TIME for s in collected):
                continue
            converted = health_sample(result, collected, disk)
            if converted is not None:
                found.append(converted)
    return found


def collect_health(catalog: Catalog, horizon: timedelta, at: datetime) -> list[Sample]:
    """Samples from the health results since a day before the newest one taken (a run still
    recording then; what was taken already is not stored twice); at first, the forecast
    horizon back."""
    store = MetricSamples(catalog)
    newest = store.newest(SOURCE)
    since = newest - timedelta(days=1) if newest else at - horizon
    results = HealthHistory(catalog).results_between(since, at + timedelta(microseconds=1))
    return samples_from_health(results, store)
