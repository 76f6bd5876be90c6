"""What `capacity-collect` measures, source by source: each configured PostgreSQL, Redis,
host, Kubernetes (metrics.k8s.io) and Docker target, the backup bytes per target from the
catalog, every `capacity.series` from Prometheus, and the health history's levels
(collect_health.py). A source that cannot be measured is a
result (its error kept, the others still stored), not an exception."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from pydantic import BaseModel

from runbook.catalog import Catalog, MetricSamples, Sample
from runbook.config import Config
from tasks.capacity.collect_backups import collect_backups
from tasks.capacity.collect_docker import collect_docker
from tasks.capacity.collect_health import collect_health
from tasks.capacity.collect_host import collect_host
from tasks.capacity.collect_kubernetes import collect_kubernetes
from tasks.capacity.collect_postgres import collect_postgres
from tasks.capacity.collect_prometheus import collect_series
from tasks.capacity.collect_redis import collect_redis

Measure = Callable[[datetime], list[Sample]]
HEALTH_SOURCE = "health history"


@dataclass(frozen=True)
class Source:
    name: str  # "postgres app", "host this-machine", "series data-disk"
    measure: Measure


class SourceResult(BaseModel):
    source: str
    samples: int = 0  # measured
    stored: int = 0  # new in the catalog (a backfill read again stores nothing twice)
    error: str | None = None


class CollectSummary(BaseModel):
    ok: bool
    collected_at: datetime
    sources: list[SourceResult]

    @property
    def stored(self) -> int:
        return sum(s.stored for s in self.sources)

    def json_summary(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "collected_at": self.collected_at.isoformat(),
            "stored": self.stored,
            "sources": [s.model_dump() for s in self.sources],
        }


def hourly_sources(config: Config, sources: list[Source]) -> list[Source]:
    """The sources capacity.hourly names (`postgres app` for `app`, `series data-disk` for
    `data-disk`), and the health history."""
    wanted = set(config.capacity.hourly)
    return [s for s in sources if s.name == HEALTH_SOURCE or s.name.split(" ", 1)[-1] in wanted]


def sources_of(config: Config, catalog: Catalog) -> list[Source]:
    top = config.capacity.top_tables
    found = [
        Source(f"postgres {t.name}", partial(collect_postgres, t, top))
        for t in config.targets.postgres
    ]
    found += [Source(f"redis {t.name}", partial(collect_redis, t)) for t in config.targets.redis]
    found += [Source(f"host {t.name}", partial(collect_host, t)) for t in config.targets.host]
    found += [
        Source(f"kubernetes {t.name}", partial(collect_kubernetes, t))
        for t in config.targets.kubernetes
    ]
    found += [Source(f"docker {t.name}", partial(collect_docker, t)) for t in config.targets.docker]
    names = [t.name for t in config.backup_targets()]
    if names:
        found.append(Source("backups", partial(collect_backups, catalog, names)))
    prometheus = {t.name: t for t in config.targets.prometheus}
    found += [
        Source(f"series {s.name}", partial(collect_series, s, prometheus[s.prometheus]))
        for s in config.capacity.series
    ]
    # Last: a health result at the same time as a sample measured above is not stored.
    found.append(Source(HEALTH_SOURCE, partial(collect_health, catalog, config.capacity.horizon)))
    return found


def measure_and_store(source: Source, catalog: Catalog, at: datetime) -> SourceResult:
    """Measure one source and store its samples; an error is the result."""
    try:
        samples = source.measure(at)
    except Exception as exc:  # noqa: BLE001 - one source failing leaves the others measured
        return SourceResult(source=source.name, error=f"{type(exc).__name__}: {exc}")
    stored = MetricSamples(catalog).record(samples)
    return SourceResult(source=source.name, samples=len(samples), stored=stored)
