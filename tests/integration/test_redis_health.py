"""check_redis_health against throwaway redis-servers in bad states, the shared server (read
only: PING and INFO) and scripted fake servers for replies a real one will not give."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from runbook.config import RedisHealth, RedisTarget, Threshold
from runbook.health import CheckResult, Status
from tasks.health.redis import check_redis_health
from tests.integration.test_redis_snapshot import (
    HOST,
    PORT,
    FakeMaster,
    Resp,
    RespError,
    free_port,
    throwaway_redis,
)

CHECKS = [
    "redis.ping",
    "redis.memory",
    "redis.hit_rate",
    "redis.evicted_keys",
    "redis.rejected_connections",
    "redis.fragmentation",
    "redis.rdb",
    "redis.replication",
]


def target(url: str, timeout: float = 10, **health: object) -> RedisTarget:
    return RedisTarget(
        name="cache", url=url, timeout=timedelta(seconds=timeout), health=RedisHealth(**health)
    )


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def health_of(port: int, **health: object) -> dict[str, CheckResult]:
    results = check_redis_health(target(f"redis://{HOST}:{port}", **health))
    assert [r.check for r in results] == CHECKS
    return by_check(results)


def call(port: int, *commands: tuple[str | bytes | int, ...]) -> list[object]:
    client = Resp(port)
    try:
        return [client.call(*command) for command in commands]
    finally:
        client.close()


def wait_info(port: int, field: str, wanted: str, timeout: float = 20) -> str:
    """Poll INFO until `field` has the `wanted` value; returns the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        info = call(port, ("INFO", "all"))[0].decode()
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        value = fields.get(field, "").strip()
        if value == wanted or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


# --- healthy ---------------------------------------------------------------------------------


def test_shared_server_pings_ok() -> None:
    results = check_redis_health(target(f"redis://{HOST}:{PORT}/0"))
    assert [r.check for r in results] == CHECKS
    checks = by_check(results)
    ping = checks["redis.ping"]
    assert ping.status == Status.OK and 0 < ping.value < 50, ping
    assert ping.threshold == "warn > 50 ms, critical > 200 ms"
    assert ping.message.startswith(f"PONG from {HOST}:{PORT} in ")
    assert [r for r in results if r.status == Status.UNKNOWN] == []
    assert checks["redis.replication"].message.startswith("master with ")


def test_fresh_server_is_healthy(tmp_path: Path) -> None:
    with throwaway_redis(tmp_path) as port:
        checks = health_of(port)
    assert all(r.status == Status.OK for r in checks.values()), checks
    assert checks["redis.memory"].message.endswith("used, no maxmemory set")
    assert checks["redis.hit_rate"].message.startswith("not enough lookups (0 ")
    assert "not graded" in checks["redis.fragmentation"].message
    assert checks["redis.rdb"].message == 'persistence off: no RDB save points (save "")'
    assert (checks["redis.replication"].value, checks["redis.evicted_keys"].value) == (0, 0)


# --- bad states ------------------------------------------------------------------------------


def test_low_hit_rate_is_critical_or_warn(tmp_path: Path) -> None:
    with throwaway_redis(tmp_path) as port:
        client = Resp(port)
        try:
            client.pipeline([("SET", f"key:{i}", i) for i in range(10)])
            client.pipeline([("GET", f"key:{i}") for i in range(10)])
            client.pipeline([("GET", f"missing:{i}") for i in range(200)])
        finally:
            client.close()
        checks = health_of(port)
        milder = health_of(port, hit_rate=Threshold(warn=30, critical=1, op="<"))
    rate = checks["redis.hit_rate"]
    assert (rate.status, rate.value) == (Status.CRITICAL, 4.8), rate  # 10 of 210
    assert rate.threshold == "warn < 30%, critical < 10%"
    assert "10 hits, 200 misses" in rate.message
    assert milder["redis.hit_rate"].status == Status.WARN


def test_memory_near_maxmemory_is_critical(tmp_path: Path) -> None:
    with throwaway_redis(tmp_path, "--maxmemory", "10mb") as port:
        client = Resp(port)
        value = b"v" * 65000
        try:
            for i in range(144):  # ~9 MB; the last writes may be refused with -OOM
                try:
                    client.call("SET", f"fill:{i}", value)
                except RespError as exc:
                    assert str(exc).startswith("OOM"), exc
                    break
        finally:
            client.close()
        memory = health_of(port)["redis.memory"]
    assert memory.status == Status.CRITICAL, memory
    assert 95 < memory.value < 110
    assert "of 10.00M maxmemory used" in memory.message
    assert memory.threshold == "warn > 80%, critical > 95%"


def test_large_dataset_grades_fragmentation(tmp_path: Path) -> None:
    with throwaway_redis(tmp_path) as port:
        client = Resp(port)
        try:
            client.pipeline([("SET", f"big:{i}", b"x" * 100_000) for i in range(150)])  # 15 MB
        finally:
            client.close()
        fragmentation = health_of(port)["redis.fragmentation"]
    assert fragmentation.threshold == "warn > 1.5, critical > 2"
    assert "not graded" not in fragmentation.message
    assert fragmentation.message.startswith("allocator_frag_ratio ")  # present on 7.x/jemalloc
    assert fragmentation.status == Status.OK and 1 <= fragmentation.value < 1.5


def test_rdb_save_points_failed_save_and_refused_config(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    doomed = tmp_path / "doomed"  # where the RDB file goes: removed below
    doomed.mkdir()
    with throwaway_redis(tmp_path / "a", "--save", "3600 1", "--dir", str(doomed)) as port:
        assert call(port, ("CONFIG", "GET", "save"))[0] == [b"save", b"3600 1"]
        rdb = health_of(port)["redis.rdb"]
        assert (rdb.status, rdb.threshold) == (Status.OK, "warn > 25 h, critical > 49 h"), rdb
        assert rdb.value < 0.1 and 'save "3600 1"' in rdb.message

        # a background save that cannot write its file: its directory is gone
        call(port, ("SET", "k", "v"))
        doomed.rmdir()
        call(port, ("BGSAVE",))
        assert wait_info(port, "rdb_last_bgsave_status", "err") == "err"
        after_failure = health_of(port)
    # Redis 7 refuses even PING with MISCONF now (stop-writes-on-bgsave-error): the server is
    # up, so ping stays graded by latency and redis.rdb says what is wrong
    ping = after_failure["redis.ping"]
    assert ping.status == Status.OK and "PING refused with MISCONF" in ping.message, ping
    failed = after_failure["redis.rdb"]
    assert failed.status == Status.CRITICAL, failed
    assert "the last background save failed (rdb_last_bgsave_status:err)" in failed.message
    assert "1 changes since" in failed.message

    (tmp_path / "b").mkdir()
    with throwaway_redis(
        tmp_path / "b", "--save", "3600 1", "--rename-command", "CONFIG", ""
    ) as port:
        before = health_of(port)["redis.rdb"]
        call(port, ("SET", "k", "v"), ("BGSAVE",))
        wait_info(port, "rdb_bgsave_in_progress", "0")
        assert wait_info(port, "rdb_saves", "1") == "1"
        after = health_of(port)["redis.rdb"]
    assert before.status == Status.OK and before.value is None
    assert "inferred from INFO: no background save since start" in before.message
    assert (after.status, after.threshold) == (Status.OK, "warn > 25 h, critical > 49 h")
    assert after.value < 0.1 and "inferred from INFO: a background save ran" in after.message


def test_replica_link_up_and_down(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "r").mkdir()
    with throwaway_redis(tmp_path / "m", "--repl-diskless-sync-delay", "0") as master:
        with throwaway_redis(tmp_path / "r", "--replicaof", HOST, str(master)) as replica:
            assert wait_info(replica, "master_link_status", "up") == "up"
            up = health_of(replica)["redis.replication"]
            primary = health_of(master)["redis.replication"]
    assert (up.status, up.value) == (Status.OK, "up"), up
    assert up.message.startswith(f"replica of {HOST}:{master}: link up")
    assert (primary.status, primary.value) == (Status.OK, 1), primary
    assert f"port={replica}" in primary.message

    (tmp_path / "lost").mkdir()
    nowhere = free_port()
    with throwaway_redis(tmp_path / "lost", "--replicaof", HOST, str(nowhere)) as port:
        down = health_of(port)
    link = down["redis.replication"]
    assert (link.status, link.value) == (Status.CRITICAL, "down"), link
    assert f"replica of {HOST}:{nowhere}: the link to the master is down" in link.message
    assert down["redis.ping"].status == Status.OK


# --- unreachable and credentials -------------------------------------------------------------


@pytest.mark.parametrize("unreachable", [Status.CRITICAL, Status.UNKNOWN])
def test_unreachable_port_is_configurable_and_alone(unreachable: Status) -> None:
    port = free_port()
    url = f"redis://user:pw-in-url-9@{HOST}:{port}"
    results = check_redis_health(target(url), unreachable=unreachable)
    assert [(r.check, r.status) for r in results] == [("redis.ping", unreachable)]
    assert results[0].message == f"connection refused by redis target at {HOST}:{port}"
    assert "pw-in-url-9" not in results[0].model_dump_json()


def test_password_protected_server(tmp_path: Path) -> None:
    right, wrong = "right-Pa55-e1d2", "wrong-Pa55-99ab"
    with throwaway_redis(tmp_path) as port:
        call(port, ("CONFIG", "SET", "requirepass", right))  # after the helper's PING
        bad = check_redis_health(target(f"redis://:{wrong}@{HOST}:{port}"), Status.UNKNOWN)
        missing = check_redis_health(target(f"redis://{HOST}:{port}"), Status.UNKNOWN)
        good = check_redis_health(target(f"redis://:{right}@{HOST}:{port}"))
    assert [(r.check, r.status) for r in bad] == [("redis.ping", Status.CRITICAL)]
    assert bad[0].message.startswith(f"authentication failed for redis target at {HOST}:{port}")
    assert [(r.check, r.status) for r in missing] == [("redis.ping", Status.CRITICAL)]
    assert "needs a password" in missing[0].message
    assert [r.check for r in good] == CHECKS
    assert all(r.status == Status.OK for r in good), good
    assert "connect and AUTH" in good[0].message
    dumped = "".join(r.model_dump_json() for r in bad + missing + good)
    assert right not in dumped and wrong not in dumped


# --- replies a real server will not give on demand -------------------------------------------


def test_loading_server_counts_as_unreachable() -> None:
    fake = FakeMaster([], replies={"PING": b"-LOADING Redis is loading the dataset in memory\r\n"})
    try:
        results = check_redis_health(target(f"redis://{HOST}:{fake.port}"), Status.UNKNOWN)
    finally:
        fake.close()
    assert [(r.check, r.status) for r in results] == [("redis.ping", Status.UNKNOWN)]
    assert "LOADING" in results[0].message


def test_an_unreadable_field_is_unknown_and_the_others_still_run() -> None:
    info = "\r\n".join(
        [
            "# Server",
            "redis_version:6.0.0",
            "# Stats",
            "keyspace_hits:900",
            "keyspace_misses:100",
            "evicted_keys:3",
            "rejected_connections:0",
            "# Persistence",
            "rdb_last_save_time:0",
            "rdb_last_bgsave_status:ok",
            "rdb_changes_since_last_save:0",
            "rdb_last_bgsave_time_sec:-1",
            "# Replication",
            "role:master",
            "connected_slaves:0",
        ]
    )  # no used_memory, no fragmentation ratio: an INFO cut down by a proxy
    replies = {
        "PING": b"+PONG\r\n",
        "INFO": bulk(info),
        "CONFIG": b"-ERR unknown command 'CONFIG', with args beginning with: 'GET' 'save'\r\n",
    }
    fake = FakeMaster([], replies=replies)
    try:
        checks = by_check(check_redis_health(target(f"redis://{HOST}:{fake.port}")))
    finally:
        fake.close()
    assert [c for c, r in checks.items() if r.status == Status.UNKNOWN] == [
        "redis.memory",
        "redis.fragmentation",
    ]
    assert "used_memory" in checks["redis.memory"].message
    assert (checks["redis.hit_rate"].status, checks["redis.hit_rate"].value) == (Status.OK, 90.0)
    assert checks["redis.evicted_keys"].value == 3
    assert "CONFIG GET save refused" in checks["redis.rdb"].message
    assert checks["redis.ping"].message.endswith("; redis 6.0.0")
