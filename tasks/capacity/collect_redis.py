"""Redis's capacity figures from INFO: used_memory against maxmemory (no limit when maxmemory
is 0), and the keys of every database."""

from __future__ import annotations

from datetime import datetime

from runbook.catalog import Sample
from runbook.config import RedisTarget
from runbook.systems.redis import redis_facts
from tasks.capacity.samples import sample


def collect_redis(target: RedisTarget, at: datetime) -> list[Sample]:
    facts = redis_facts(target)
    found = []
    if facts.get("used_memory") is not None:
        found.append(
            sample(
                target.name,
                "memory",
                "redis.memory",
                facts["used_memory"],
                at=at,
                limit=facts.get("maxmemory") or None,
                unit="bytes",
            )
        )
    keys = sum(facts.get("keys_per_db", {}).values())
    found.append(sample(target.name, "keys", "redis.keys", keys, at=at, unit="keys"))
    return found
