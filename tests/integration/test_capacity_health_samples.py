"""The health history's levels as capacity samples: real health checks of this host and of a
PostgreSQL 15 database, converted, land on the collector's resources with the collector's
values; kept in a catalog on PostgreSQL, read again without duplicates, and left out where a
collected sample of the same moment exists."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import yaml

from runbook.catalog import Catalog, HealthHistory, MetricSamples
from runbook.catalog.health import StoredCheck
from runbook.config import HostTarget, PostgresTarget, RedisTarget, parse_config
from runbook.health import Status, Tracked
from tasks.capacity.collect import hourly_sources, sources_of
from tasks.capacity.collect_health import (
    GIB,
    SAME_TIME,
    collect_health,
    health_sample,
    samples_from_health,
)
from tasks.capacity.collect_host import collect_host
from tasks.capacity.collect_postgres import collect_postgres
from tasks.capacity.collect_redis import collect_redis
from tasks.health.host import check_host
from tasks.health.postgres import check_postgres_health
from tasks.health.redis import check_redis_health

NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def catalog(pg15) -> Iterator[Catalog]:
    name = pg15.create_database("rbtest_capacityhealth")
    catalog = Catalog(pg15.url(name))
    yield catalog
    catalog.close()
    pg15.drop_database(name)


def stored(results, at: datetime) -> list[StoredCheck]:
    return [StoredCheck(**dict(r), run_id="r", at=at) for r in results]


def record_run(catalog: Catalog, run_id: str, at: datetime, results) -> None:
    history = HealthHistory(catalog)
    history.start(run_id, at, [], None)
    history.record(run_id, at, [Tracked(result=r, streak=0, notified=False) for r in results])
    history.finish(run_id, Status.OK, None)


def test_host_health_levels_are_the_collectors_levels():
    target = HostTarget(name="here", mounts=["/"], cpu_sample=timedelta(0))
    collected = {s.resource: s for s in collect_host(target, NOW)}
    health = stored(check_host(target), NOW + timedelta(hours=2))
    converted = {}
    for result in health:
        resource = {"host.disk[/]": "here/disk/root", "host.inodes[/]": "here/inodes/root"}.get(
            result.check, "here/memory"
        )
        sample = health_sample(result, [collected[resource]])
        if sample is not None:
            converted[sample.resource] = sample
    assert set(converted) == {"here/disk/root", "here/inodes/root", "here/memory"}
    disk, size = converted["here/disk/root"], collected["here/disk/root"].limit
    # df's percentage of (size - root-reserved), turned back into bytes used
    assert disk.limit == size and disk.unit == "bytes" and disk.source == "health"
    assert abs(disk.value - collected["here/disk/root"].value) < 0.002 * size
    inodes = converted["here/inodes/root"]
    assert inodes.value == pytest.approx(collected["here/inodes/root"].value, rel=0.01)
    memory = converted["here/memory"]
    assert memory.limit == collected["here/memory"].limit
    assert abs(memory.value - collected["here/memory"].value) < 0.05 * memory.limit
    assert memory.time == NOW + timedelta(hours=2)


def test_postgres_health_levels_are_the_collectors_levels(pg15, make_database):
    dsn = make_database(pg15)
    target = PostgresTarget(name="app", dsn=dsn)
    with psycopg.connect(dsn):  # one more client backend while both measure
        collected = {s.resource: s for s in collect_postgres(target, 0, NOW)}
        health = stored(check_postgres_health(target), NOW)
    by_check = {r.check: r for r in health}
    connections = health_sample(by_check["postgres.connections"], [collected["app/connections"]])
    assert connections.resource == "app/connections" and connections.kind == "postgres.connections"
    # the health percentage is of max_connections less the reserved: the count is exact
    assert connections.value == collected["app/connections"].value >= 2
    assert connections.limit == collected["app/connections"].limit
    alone = health_sample(by_check["postgres.connections"], [])  # before any collection
    assert (alone.value, alone.limit) == (connections.value, connections.limit)
    size = health_sample(by_check["postgres.database_size"], [])
    assert size.resource == "app/database" and size.limit is None
    assert abs(size.value - collected["app/database"].value) <= 0.001 * GIB
    # a check that is not a level against a limit is no sample
    assert health_sample(by_check["postgres.cache_hit_ratio"], []) is None


def test_redis_memory_needs_a_limit_and_takes_the_nearest_collected_one():
    target = RedisTarget(name="cache", url="redis://127.0.0.1:6379/0")
    collected = collect_redis(target, NOW)
    (memory,) = [r for r in stored(check_redis_health(target), NOW) if r.check == "redis.memory"]
    if memory.value is None:  # the service runs without maxmemory: nothing to convert
        assert health_sample(memory, [s for s in collected if s.kind == "redis.memory"]) is None
    at = NOW + timedelta(days=1)
    result = memory.model_copy(update={"value": 25.0, "at": at})
    old, new = (
        collected[0].model_copy(update={"limit": 1000.0, "time": NOW - timedelta(days=30)}),
        collected[0].model_copy(update={"limit": 4000.0, "time": at - timedelta(hours=3)}),
    )
    sample = health_sample(result, [old, new])
    assert sample.resource == "cache/memory" and sample.value == 1000 and sample.limit == 4000
    assert health_sample(result, []) is None  # no limit known: no made-up level


def test_health_history_becomes_samples_once_and_not_beside_a_collected_one(catalog):
    target = HostTarget(name="here", mounts=["/"], cpu_sample=timedelta(0))
    collected = collect_host(target, NOW)
    MetricSamples(catalog).record(collected)
    results = check_host(target)
    for day in range(1, 4):  # three daily health runs after the collection
        record_run(catalog, f"run{day}", NOW + timedelta(days=day), results)
    record_run(catalog, "run0", NOW + SAME_TIME / 2, results)  # beside the collected sample

    horizon = timedelta(days=365)
    taken = collect_health(catalog, horizon, NOW + timedelta(days=4))
    resources = {"here/disk/root", "here/inodes/root", "here/memory"}
    assert {s.resource for s in taken} == resources
    assert sorted({s.time for s in taken}) == [NOW + timedelta(days=d) for d in (1, 2, 3)]
    store = MetricSamples(catalog)
    assert store.record(taken) == 9
    assert store.newest("health") == NOW + timedelta(days=3)

    # read again (and a day later): nothing new, nothing twice
    again = collect_health(catalog, horizon, NOW + timedelta(days=5))
    assert store.record(again) == 0
    memory = store.history("here/memory")
    assert [s.source for s in memory] == ["collect", "health", "health", "health"]
    assert len({s.time for s in memory}) == len(memory)

    # a collected sample that comes first within SAME_TIME leaves the health one out
    later = NOW + timedelta(days=6)
    store.record(collect_host(target, later + timedelta(minutes=10)))
    record_run(catalog, "run6", later, results)
    assert [s for s in collect_health(catalog, horizon, later) if s.time == later] == []
    assert samples_from_health(stored(results, later), store) == []


def test_hourly_runs_take_the_named_sources_and_the_health_history(tmp_path, catalog):
    config = parse_config(
        yaml.safe_dump(
            {
                "catalog": "sqlite:///" + str(tmp_path / "c.db"),
                "storage": {"kind": "local", "path": str(tmp_path / "s")},
                "targets": {
                    "postgres": [{"name": "app", "dsn": "postgresql://u@h/db"}],
                    "redis": [{"name": "cache", "url": "redis://h"}],
                    "host": [{"name": "here"}],
                },
                "capacity": {"hourly": ["app", "here"]},
            }
        )
    )
    every = [s.name for s in sources_of(config, catalog)]
    assert every[-1] == "health history" and "redis cache" in every
    hourly = [s.name for s in hourly_sources(config, sources_of(config, catalog))]
    assert hourly == ["postgres app", "host here", "health history"]


def test_hourly_names_unknown_sources_by_field():
    from runbook.errors import ConfigError

    with pytest.raises(ConfigError, match=r"capacity.hourly\[1\]: .*'nope'"):
        parse_config(
            yaml.safe_dump(
                {
                    "storage": {"kind": "local", "path": "/tmp"},
                    "targets": {"host": [{"name": "here"}]},
                    "capacity": {"hourly": ["here", "nope"]},
                }
            )
        )
