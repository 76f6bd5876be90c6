"""The Redis hit rate of a health run is over the interval since the previous run: the
counters are kept in the catalog's health state between runs (real redis-servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from runbook.catalog import HealthHistory
from runbook.config import RedisTarget
from runbook.health import CheckResult, Status
from runbook.runtime import open_runtime
from tasks.health.redis import check_redis_health_since
from tasks.health.registry import run_kind
from tests.integration.test_redis_snapshot import HOST, PORT, Resp, throwaway_redis

SHARED_DB = 14  # a db number no other test uses; the counters are server-wide anyway
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def lookups(port: int, hits: int, misses: int, db: int = 0) -> None:
    client = Resp(port)
    try:
        client.call("SELECT", db)
        client.call("SET", "hit:key", "v")
        client.pipeline([("GET", "hit:key") for _ in range(hits)])
        client.pipeline([("GET", f"miss:{i}") for i in range(misses)])
    finally:
        client.close()


def hit_rate(results: list[CheckResult]) -> CheckResult:
    (rate,) = [r for r in results if r.check == "redis.hit_rate"]
    return rate


def test_hit_rate_is_graded_per_interval_between_runs(tmp_path: Path, write_config) -> None:
    with throwaway_redis(tmp_path) as port:
        config = write_config({"redis": [{"name": "cache", "url": f"redis://{HOST}:{port}/0"}]})
        runtime = open_runtime(config)
        history = HealthHistory(runtime.catalog)
        lookups(port, hits=300, misses=0)  # a warm cache before Runbook first looks

        first = hit_rate(run_kind(runtime, "redis", "cache", T0))
        assert (first.status, first.value) == (Status.OK, None), first
        assert first.message.startswith("no previous sample")
        state = history.get_state("redis:cache")
        assert (state["keyspace_hits"], state["keyspace_misses"]) == (300, 0)

        lookups(port, hits=150, misses=50)
        second = hit_rate(run_kind(runtime, "redis", "cache", T0 + timedelta(minutes=10)))
        assert (second.status, second.value) == (Status.OK, 75.0), second
        assert "in the 10 min since the previous run (150 hits, 50 misses)" in second.message

        # The cache goes cold: 10 of 200 lookups hit. Since start it would be 460 of 700 (66 %),
        # which a since-start rate would call healthy.
        lookups(port, hits=10, misses=190)
        third = hit_rate(run_kind(runtime, "redis", "cache", T0 + timedelta(minutes=20)))
        assert (third.status, third.value) == (Status.CRITICAL, 5.0), third
        assert third.threshold == "warn < 30%, critical < 10%"

        # Too few lookups in the next interval: not graded, not a failure.
        lookups(port, hits=0, misses=20)
        quiet = hit_rate(run_kind(runtime, "redis", "cache", T0 + timedelta(minutes=30)))
        assert (quiet.status, quiet.value) == (Status.OK, None), quiet
        assert "not enough lookups in the 10 min since the previous run (20, need 100)" in (
            quiet.message
        )

        # CONFIG RESETSTAT puts the counters back to 0: the interval starts at the reset.
        client = Resp(port)
        client.call("CONFIG", "RESETSTAT")
        client.close()
        lookups(port, hits=120, misses=30)
        reset = hit_rate(run_kind(runtime, "redis", "cache", T0 + timedelta(minutes=40)))
        assert (reset.status, reset.value) == (Status.OK, 80.0), reset
        assert "since a restart or CONFIG RESETSTAT" in reset.message


def test_a_run_that_cannot_read_info_keeps_the_previous_sample(tmp_path: Path) -> None:
    with throwaway_redis(tmp_path) as port:
        target = RedisTarget(name="cache", url=f"redis://{HOST}:{port}/0", timeout="2s")
        lookups(port, hits=5, misses=5)
        _results, state = check_redis_health_since(target, Status.CRITICAL, {}, T0)
    assert (state["keyspace_hits"], state["keyspace_misses"]) == (5, 5)
    # the server is gone now
    results, kept = check_redis_health_since(target, Status.CRITICAL, state, T0)
    assert [(r.check, r.status) for r in results] == [("redis.ping", Status.CRITICAL)]
    assert kept == state


def test_shared_server_interval_counts_our_lookups() -> None:
    target = RedisTarget(name="shared", url=f"redis://{HOST}:{PORT}/{SHARED_DB}")
    results, state = check_redis_health_since(target, Status.CRITICAL, {}, T0)
    assert hit_rate(results).message.startswith("no previous sample")
    lookups(PORT, hits=400, misses=100, db=SHARED_DB)
    results, after = check_redis_health_since(target, Status.CRITICAL, state, T0)
    rate = hit_rate(results)
    # Other tests share the server's counters: the interval holds at least our 500 lookups.
    assert after["keyspace_hits"] - state["keyspace_hits"] >= 400
    assert after["keyspace_misses"] - state["keyspace_misses"] >= 100
    assert isinstance(rate.value, float) and 0 <= rate.value <= 100, rate
    assert "since the previous run" in rate.message
    client = Resp(PORT)
    try:
        client.call("SELECT", SHARED_DB)
        client.call("DEL", "hit:key")
    finally:
        client.close()
