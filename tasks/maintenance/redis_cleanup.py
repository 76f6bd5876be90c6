"""redis_cleanup: runbook 000's weekly "Cache cleanup and optimization" (with its rule
`if stats['hit_rate'] < 0.3: cache.clear_cache()`), on each Redis target of the window.

- measure: for each configured pattern, `SCAN MATCH pattern COUNT batch` over the target's
  database (never `KEYS`, which blocks the server for the whole keyspace), counting matching
  keys (only those idle longer than `idle_after`, by `OBJECT IDLETIME`, when it is set) and
  `MEMORY USAGE` on a sample of them for the bytes; `INFO` for used_memory, DBSIZE and the
  keyspace_hits / keyspace_misses counters; the ledger for the counters the previous window
  measured.
- plan (pure): one destructive action per pattern with matching keys: their count and
  estimated bytes. With `hit_rate_below`, only when the hit rate *between the previous window
  and this one* is lower (INFO's counters run since the server started, so a rate read once
  says little about this week); otherwise the actions are recorded `skipped` with the rate,
  and their `before` keeps the counters for the next window. `flush: true` plans one
  `FLUSHDB ASYNC` instead (only when configured, never by default).
- apply: SCAN again and `UNLINK` (memory freed in a background thread) in batches of
  `batch` keys, `pause` apart, so other clients' commands are never queued for long; with
  `idle_after`, each batch's OBJECT IDLETIME is read again first, so a key used since the
  plan is kept. After: keys deleted, DBSIZE and used_memory (once lazy freeing is done).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from runbook.catalog.db import utcnow
from runbook.catalog.maintenance import Figure, MaintenanceAction, Outcome
from runbook.config import MaintenanceSettings, RedisTarget
from runbook.config.maintenance import RedisCleanupSettings
from runbook.formatting import human_bytes, human_duration
from runbook.systems.redis import ErrorReply
from runbook.systems.redis_commands import RedisClient
from tasks.maintenance.procedure import MeasureContext
from tasks.maintenance.targets import REDIS, RedisSession

COUNTERS = ("keyspace_hits", "keyspace_misses")
ROUND_TRIP_SECONDS = 0.002  # one SCAN + UNLINK batch on a local server, measured
LAZYFREE_WAIT = 5.0  # seconds to wait for UNLINK's background freeing before `after`


@dataclass(frozen=True)
class PatternCount:
    pattern: str
    keys: int
    sampled: int
    sampled_bytes: int

    @property
    def estimated_bytes(self) -> int:
        return round(self.sampled_bytes / self.sampled * self.keys) if self.sampled else 0


@dataclass(frozen=True)
class Counters:
    """INFO stats counters at a moment, to compute the hit rate between two windows."""

    hits: int
    misses: int
    run_id: str  # a new server process restarts the counters
    at: datetime

    def figures(self) -> dict[str, Figure]:
        return {
            "keyspace_hits": self.hits,
            "keyspace_misses": self.misses,
            "server_run_id": self.run_id,
            "measured_at": self.at.isoformat(),
        }

    @classmethod
    def of(cls, before: dict[str, Figure]) -> Counters | None:
        try:
            return cls(
                int(before["keyspace_hits"]),  # type: ignore[arg-type]
                int(before["keyspace_misses"]),  # type: ignore[arg-type]
                str(before["server_run_id"]),
                datetime.fromisoformat(str(before["measured_at"])),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class RedisCleanupFacts:
    db: int
    db_keys: int
    used_memory: int
    now: Counters
    previous: Counters | None
    patterns: list[PatternCount] = field(default_factory=list)


def memory_figures(client: RedisClient) -> dict[str, Figure]:
    info = client.info("memory")
    return {"used_memory": int(info.get("used_memory", 0)), "db_keys": int(client.call("DBSIZE"))}


def idle_keys(client: RedisClient, keys: list[bytes], idle_seconds: float) -> list[bytes]:
    """The keys idle for longer than idle_seconds (OBJECT IDLETIME, one round trip); a key
    gone meanwhile is left out. Raises when the server cannot tell (an LFU eviction policy)."""
    replies = client.pipeline([("OBJECT", "IDLETIME", key) for key in keys])
    kept = []
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, ErrorReply):
            if "LFU" in str(reply):
                raise RuntimeError(
                    "OBJECT IDLETIME is not available under an LFU maxmemory-policy: "
                    "set redis_cleanup.idle_after to 0s"
                )
            continue
        if isinstance(reply, int) and reply > idle_seconds:
            kept.append(key)
    return kept


def count_pattern(
    client: RedisClient, pattern: str, settings: RedisCleanupSettings
) -> PatternCount:
    idle = settings.idle_after.total_seconds()
    keys = sampled = sampled_bytes = 0
    for batch in client.scan(pattern, settings.batch):
        if idle > 0:
            batch = idle_keys(client, batch, idle)
        keys += len(batch)
        wanted = batch[: max(settings.sample - sampled, 0)]
        sizes = client.pipeline([("MEMORY", "USAGE", key) for key in wanted])
        for size in sizes:
            if isinstance(size, int):
                sampled += 1
                sampled_bytes += size
    return PatternCount(pattern, keys, sampled, sampled_bytes)


class RedisCleanup:
    name: ClassVar[str] = "redis_cleanup"
    destructive: ClassVar[bool] = True
    kinds: ClassVar[tuple[str, ...]] = (REDIS,)

    def measure(self, context: MeasureContext) -> RedisCleanupFacts:
        session: RedisSession = context.session
        client, settings = session.client, context.settings.redis_cleanup
        stats = client.info("stats")
        server = client.info("server")
        now = Counters(
            int(stats.get("keyspace_hits", 0)),
            int(stats.get("keyspace_misses", 0)),
            server.get("run_id", ""),
            utcnow(),
        )
        previous = None
        for action in context.ledger.latest(context.target.name, self.name):
            previous = Counters.of(action.before)
            if previous is not None:
                break
        figures = memory_figures(client)
        patterns = (
            []
            if settings.flush
            else [count_pattern(client, pattern, settings) for pattern in settings.patterns]
        )
        return RedisCleanupFacts(
            client.db,
            int(figures["db_keys"] or 0),
            int(figures["used_memory"] or 0),
            now,
            previous,
            patterns,
        )

    def plan(
        self, facts: RedisCleanupFacts, settings: MaintenanceSettings, target: RedisTarget
    ) -> list[MaintenanceAction]:
        cleanup = settings.redis_cleanup
        common: dict[str, Figure] = {
            "db": facts.db,
            "db_keys": facts.db_keys,
            "used_memory": facts.used_memory,
            **facts.now.figures(),
        }
        gate, why_not = hit_rate_gate(facts, cleanup)
        if cleanup.flush:
            return [_flush_action(facts, target, common, why_not, gate)]
        actions = []
        for count in facts.patterns:
            if count.keys == 0 and cleanup.hit_rate_below is None:
                continue  # nothing to do and no counters to keep for the next window
            idle = cleanup.idle_after
            which = f"idle > {human_duration(idle, exact=True)} " if idle.total_seconds() else ""
            reason = (
                f"{count.keys:,} keys {which}match {count.pattern}, "
                f"~{human_bytes(count.estimated_bytes)} (MEMORY USAGE of {count.sampled})"
            )
            skipped = why_not or ("no key matches" if count.keys == 0 else None)
            batches = -(-count.keys // cleanup.batch)
            pause = cleanup.pause.total_seconds()
            actions.append(
                MaintenanceAction(
                    procedure=self.name,
                    target=target.name,
                    object=f"db{facts.db} {count.pattern}",
                    statement=(
                        f"SCAN MATCH {count.pattern} COUNT {cleanup.batch} + UNLINK, "
                        f"{cleanup.batch} keys per batch, {pause * 1000:g} ms apart"
                    ),
                    reason="; ".join(r for r in (reason, gate) if r),
                    destructive=True,
                    estimate_seconds=round(batches * (pause + ROUND_TRIP_SECONDS), 1),
                    before={
                        **common,
                        "pattern": count.pattern,
                        "idle_after_seconds": idle.total_seconds(),
                        "keys": count.keys,
                        "estimated_bytes": count.estimated_bytes,
                    },
                    outcome=Outcome.SKIPPED if skipped else Outcome.PLANNED,
                    error=skipped,
                )
            )
        return actions

    def apply(self, session: RedisSession, action: MaintenanceAction) -> dict[str, Figure]:
        client = session.client
        if action.before.get("flush"):
            client.call("FLUSHDB", "ASYNC")
            return {**_after_lazyfree(client), "deleted": int(action.before.get("db_keys") or 0)}
        settings = session.settings.redis_cleanup
        pattern = str(action.before["pattern"])
        idle = float(action.before.get("idle_after_seconds") or 0)
        pause = settings.pause.total_seconds()
        deleted = batches = 0
        began = time.monotonic()
        for batch in client.scan(pattern, settings.batch):
            if idle > 0:
                batch = idle_keys(client, batch, idle)  # a key used since the plan is kept
            if batch:
                deleted += int(client.call("UNLINK", *batch))
            batches += 1
            time.sleep(pause)
        seconds = time.monotonic() - began
        return {
            **_after_lazyfree(client),
            "deleted": deleted,
            "batches": batches,
            "keys_per_second": round(deleted / seconds) if seconds > 0 else deleted,
        }


def hit_rate_gate(
    facts: RedisCleanupFacts, settings: RedisCleanupSettings
) -> tuple[str | None, str | None]:
    """(reason to add, reason not to clean): the hit rate between the previous window's
    counters and these, against `hit_rate_below`. Pure."""
    threshold = settings.hit_rate_below
    if threshold is None:
        return None, None
    previous, now = facts.previous, facts.now
    if previous is None:
        return None, "no hit rate yet: the counters are kept for the next window to compare"
    if previous.run_id != now.run_id or now.hits < previous.hits or now.misses < previous.misses:
        return None, "the server restarted since the last window: no hit rate between them"
    hits, misses = now.hits - previous.hits, now.misses - previous.misses
    lookups = hits + misses
    since = f"since {previous.at:%Y-%m-%d %H:%M} UTC"
    if lookups < settings.min_lookups:
        return None, f"{lookups:,} lookups {since} < {settings.min_lookups:,}: no hit rate"
    rate = hits / lookups
    if rate >= threshold:
        return None, f"hit rate {rate:.2f} {since} >= {threshold:g}: cache left alone"
    return f"hit rate {rate:.2f} {since} < {threshold:g}", None


def _flush_action(
    facts: RedisCleanupFacts,
    target: RedisTarget,
    common: dict[str, Figure],
    why_not: str | None,
    gate: str | None,
) -> MaintenanceAction:
    return MaintenanceAction(
        procedure=RedisCleanup.name,
        target=target.name,
        object=f"db{facts.db}",
        statement="FLUSHDB ASYNC",
        reason="; ".join(
            r
            for r in (
                f"redis_cleanup.flush is set: all {facts.db_keys:,} keys of db{facts.db}",
                gate,
            )
            if r
        ),
        destructive=True,
        estimate_seconds=0.1,
        before={**common, "flush": True, "keys": facts.db_keys},
        outcome=Outcome.SKIPPED if why_not else Outcome.PLANNED,
        error=why_not,
    )


def _after_lazyfree(client: RedisClient) -> dict[str, Any]:
    """used_memory and DBSIZE once the background thread has freed what UNLINK handed it."""
    deadline = time.monotonic() + LAZYFREE_WAIT
    while time.monotonic() < deadline:
        if int(client.info("memory").get("lazyfree_pending_objects", 0)) == 0:
            break
        time.sleep(0.05)
    return memory_figures(client)
