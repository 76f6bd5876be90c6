"""redis_cleanup on the real Redis (127.0.0.1:6379, databases 7 and 8 are this module's):
200k keys, a dry run that deletes nothing and counts right, an apply that deletes only the
matching keys in paced batches while PING stays fast, idle_after, the hit-rate trigger
between two windows, and FLUSHDB only when configured."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from runbook.catalog import MaintenanceStatus, Outcome
from runbook.catalog.db import utcnow
from runbook.config import RedisTarget
from runbook.config.maintenance import RedisCleanupSettings
from runbook.systems.redis_commands import RedisClient
from tasks.maintenance.redis_cleanup import Counters, RedisCleanupFacts, hit_rate_gate
from tests.support.maintenance import BackUps, run_procedures

DB, OTHER_DB = 7, 8


def client_for(db: int) -> RedisClient:
    return RedisClient.open(RedisTarget(name="t", url=f"redis://127.0.0.1:6379/{db}"))


def fill(db: int, prefix: str, count: int, value: bytes = b"x" * 100) -> None:
    with client_for(db) as client:
        for start in range(0, count, 5000):
            commands = [
                ("SET", f"{prefix}{i}".encode(), value)
                for i in range(start, min(start + 5000, count))
            ]
            client.pipeline(commands)


def keys_matching(db: int, pattern: str) -> int:
    with client_for(db) as client:
        return sum(len(batch) for batch in client.scan(pattern, 1000))


def dbsize(db: int) -> int:
    with client_for(db) as client:
        return int(client.call("DBSIZE"))


@pytest.fixture
def redis_dbs() -> Iterator[None]:
    for db in (DB, OTHER_DB):
        with client_for(db) as client:
            client.call("FLUSHDB")
    yield
    for db in (DB, OTHER_DB):
        with client_for(db) as client:
            client.call("FLUSHDB")


def config_for(write_config, **cleanup):
    return write_config(
        {"redis": [{"name": "cache", "url": f"redis://127.0.0.1:6379/{DB}"}]},
        maintenance={
            "windows": {"weekly": {"duration": "1h", "procedures": ["redis_cleanup"]}},
            "redis_cleanup": {"patterns": ["cache:*"], "batch": 500, "pause": "10ms", **cleanup},
        },
    )


# A client of its own, in its own process (a thread here would also time this process's GIL,
# which the cleanup holds while it builds batches): PING every 5 ms until stdin closes, then
# print each latency in seconds.
PINGER = """
import socket, sys, threading, time
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
sock = socket.create_connection(("127.0.0.1", 6379), timeout=5)
print("ready", flush=True)
latencies = []
while not stop.is_set():
    began = time.perf_counter()
    sock.sendall(b"PING\\r\\n")
    reply = b""
    while not reply.endswith(b"\\r\\n"):
        reply += sock.recv(64)
    assert reply == b"+PONG\\r\\n", reply
    latencies.append(time.perf_counter() - began)
    time.sleep(0.005)
print(" ".join(f"{x:.6f}" for x in latencies), flush=True)
"""


class PingWatch:
    """PING the server from another process every 5 ms while the block runs; keeps each
    latency (what any other client of the server would see)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> PingWatch:
        self._process = subprocess.Popen(
            [sys.executable, "-c", PINGER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        assert self._process.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        out, _ = self._process.communicate("", timeout=30)
        assert self._process.returncode == 0, out
        self.latencies = [float(x) for x in out.split()]


def test_200k_keys_dry_run_counts_and_apply_deletes_only_matching_keys(
    write_config, redis_dbs, capsys
):
    fill(DB, "cache:item:", 150_000)
    fill(DB, "session:", 50_000)
    fill(OTHER_DB, "cache:item:", 1_000)  # another database of the same server
    config = config_for(write_config)

    dry = run_procedures(config, ["redis_cleanup"], dry_run=True)
    [action] = dry.actions
    assert action.outcome == Outcome.DRY_RUN and action.target == "cache"
    assert action.object == f"db{DB} cache:*"
    assert action.before["keys"] == 150_000 and action.before["db_keys"] == 200_000
    # MEMORY USAGE of a sample: each key costs its 100-byte value and some overhead.
    assert 150_000 * 100 < int(action.before["estimated_bytes"]) < 150_000 * 400
    assert dbsize(DB) == 200_000, "a dry run deletes nothing"

    backups = BackUps()
    with PingWatch() as ping:
        run = run_procedures(config, ["redis_cleanup"], dry_run=False, back_up=backups)
    assert run.status == MaintenanceStatus.DONE, run.error
    assert backups.asked == [["cache"]], "the pre-maintenance backup covers the Redis target"
    [action] = run.actions
    assert action.outcome == Outcome.DONE
    assert action.after["deleted"] == 150_000
    assert action.after["db_keys"] == 50_000
    assert int(action.after["used_memory"]) < int(action.before["used_memory"])
    assert keys_matching(DB, "cache:*") == 0
    assert keys_matching(DB, "session:*") == 50_000
    assert dbsize(OTHER_DB) == 1_000, "only the target's database"
    worst = max(ping.latencies)
    assert len(ping.latencies) > 50 and worst < 0.050, worst
    freed = int(action.before["used_memory"]) - int(action.after["used_memory"])
    with capsys.disabled():
        print(
            f"\nredis_cleanup: {action.after['deleted']:,} keys in {action.duration:.2f} s "
            f"({action.after['keys_per_second']:,} keys/s), freed {freed / 2**20:.1f} MiB, "
            f"PING max {worst * 1000:.1f} ms over {len(ping.latencies)} pings"
        )


def test_idle_after_keeps_keys_used_recently(write_config, redis_dbs):
    fill(DB, "cache:old:", 200)
    time.sleep(2.2)
    fill(DB, "cache:new:", 300)
    config = config_for(write_config, idle_after="1s")
    run = run_procedures(config, ["redis_cleanup"], dry_run=False)
    [action] = run.actions
    assert action.before["keys"] == 200 and action.after["deleted"] == 200
    assert keys_matching(DB, "cache:old:*") == 0
    assert keys_matching(DB, "cache:new:*") == 300


def test_flushdb_only_when_configured(write_config, redis_dbs):
    fill(DB, "anything:", 100)
    fill(OTHER_DB, "kept:", 10)
    plain = run_procedures(config_for(write_config, patterns=[]), ["redis_cleanup"], dry_run=False)
    assert plain.actions == [] and dbsize(DB) == 100

    config = config_for(write_config, patterns=[], flush=True)
    dry = run_procedures(config, ["redis_cleanup"], dry_run=True)
    [action] = dry.actions
    assert action.statement == "FLUSHDB ASYNC" and action.outcome == Outcome.DRY_RUN
    assert dbsize(DB) == 100
    run = run_procedures(config, ["redis_cleanup"], dry_run=False)
    assert run.actions[0].outcome == Outcome.DONE and run.actions[0].after["db_keys"] == 0
    assert dbsize(DB) == 0 and dbsize(OTHER_DB) == 10


def test_the_hit_rate_trigger_compares_two_windows(write_config, redis_dbs):
    fill(DB, "cache:item:", 100)
    config = config_for(write_config, hit_rate_below=0.3, min_lookups=1000)
    first = run_procedures(config, ["redis_cleanup"], dry_run=False)
    [action] = first.actions
    assert action.outcome == Outcome.SKIPPED and "no hit rate yet" in action.error
    assert "keyspace_hits" in action.before and dbsize(DB) == 100

    with client_for(DB) as client:  # 5,000 misses: a cache that does not help
        client.pipeline([("GET", f"missing:{i}") for i in range(5000)])
    second = run_procedures(config, ["redis_cleanup"], dry_run=False)
    [action] = second.actions
    assert action.outcome == Outcome.DONE, action.error
    assert "hit rate 0.0" in action.reason and "< 0.3" in action.reason
    assert dbsize(DB) == 0


def test_hit_rate_gate_is_pure():
    settings = RedisCleanupSettings(hit_rate_below=0.3, min_lookups=100)
    now = utcnow()

    def facts(previous: Counters | None, hits: int, misses: int, run_id: str = "a"):
        return RedisCleanupFacts(0, 0, 0, Counters(hits, misses, run_id, now), previous)

    before = Counters(1000, 1000, "a", now - timedelta(days=7))
    assert hit_rate_gate(facts(None, 5, 5), settings)[1].startswith("no hit rate yet")
    assert "restarted" in hit_rate_gate(facts(before, 2000, 2000, "b"), settings)[1]
    assert "lookups" in hit_rate_gate(facts(before, 1010, 1010), settings)[1]
    assert "left alone" in hit_rate_gate(facts(before, 1900, 1100), settings)[1]
    reason, why_not = hit_rate_gate(facts(before, 1100, 1900), settings)
    assert why_not is None and reason.startswith("hit rate 0.10")
    assert hit_rate_gate(facts(None, 0, 0), RedisCleanupSettings()) == (None, None)
