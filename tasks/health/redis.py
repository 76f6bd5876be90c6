"""Redis health checks over one connection: ping latency, memory vs maxmemory, hit rate
(runbook 000: warn under 30 %), evictions, rejected connections, fragmentation, last RDB
save and the replication link.

The hit rate of a health run is over the interval since the previous run
(`check_redis_health_since`): INFO's keyspace_hits/keyspace_misses are kept in the health
state between runs and the rate is graded on their deltas, so a cache that went cold an hour
ago is not hidden by a week of good hits since the server started. The first run has no
previous sample and says so (ok: nothing to grade yet). A restart or CONFIG RESETSTAT (a new
run_id or counters that went down) makes the interval "since the restart". Called on its
own, `check_redis_health` grades the rate since start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from runbook.config import RedisHealth, RedisTarget, Threshold
from runbook.errors import PermanentError, TransientError
from runbook.health import CheckResult, Status, describe, grade, timer
from runbook.secrets import redact
from runbook.systems.redis import (
    Connection,
    Endpoint,
    ErrorReply,
    RedisAuthError,
    command_error,
    connect,
    endpoint_of,
    int_or_none,
    parse_info,
)

SMALL_DATASET_BYTES = 10 << 20  # below this, allocator overhead makes fragmentation ratios noise


MIN_LOOKUPS = 100  # fewer key lookups say nothing about the hit rate


@dataclass(frozen=True)
class _Reading:
    """What one check read from INFO. status wins when given; else threshold None means report
    only (ok) and a threshold grades the value."""

    value: float | int | str | None
    message: str
    threshold: Threshold | None = None
    unit: str = ""
    status: Status | None = None


def check_redis_health(
    target: RedisTarget, unreachable: Status = Status.CRITICAL
) -> list[CheckResult]:
    """The checks of one target on their own: the hit rate is since the server started."""
    return _check_redis(target, unreachable, _REDIS_PROBES)[0]


def check_redis_health_since(
    target: RedisTarget, unreachable: Status, previous: dict[str, Any], now: datetime
) -> tuple[list[CheckResult], dict[str, Any]]:
    """The checks of a health run, the hit rate over the interval since the previous run.

    `previous` is what the previous run returned as state ({} the first time); returns the
    results and the state to keep for the next run (the previous one again when INFO could
    not be read, so one failed run does not lose the baseline).
    """
    since = partial(_probe_hit_rate_since, previous=previous, now=now)
    probes = tuple((c, since if c == "redis.hit_rate" else p) for c, p in _REDIS_PROBES)
    results, info = _check_redis(target, unreachable, probes)
    if info is None:
        return results, previous
    try:
        state = hit_counters(info, now)
    except PermanentError:
        return results, previous
    return results, state


def _check_redis(
    target: RedisTarget, unreachable: Status, probes: tuple[tuple[str, _Probe], ...]
) -> tuple[list[CheckResult], dict[str, str] | None]:
    """PING, then INFO all and CONFIG GET save over one connection; one CheckResult per check,
    and the INFO fields (None when INFO could not be read).

    Cannot connect or PING -> only `redis.ping`: `unreachable` when the server is down, did
    not answer or is loading, critical for rejected or missing credentials. No message
    contains the password: messages are built from INFO values and host:port only.
    """
    endpoint = endpoint_of(target)
    server: tuple[dict[str, str], str | None] | None = None
    problem = ""
    with timer() as elapsed:
        try:
            with connect(endpoint) as conn:
                connected = elapsed()
                with timer() as round_trip:
                    refused = _ping(conn)
                    latency = round_trip()
                try:
                    server = (_info_all(conn), _config_save(conn))
                except (OSError, TransientError, PermanentError) as exc:
                    problem = _health_error(exc, endpoint)
        except RedisAuthError as exc:
            return [_ping_failed(target, Status.CRITICAL, str(exc), elapsed())], None
        except TransientError as exc:
            return [_ping_failed(target, unreachable, str(exc), elapsed())], None
        except PermanentError as exc:
            return [_ping_failed(target, Status.CRITICAL, str(exc), elapsed())], None
    version = f"; redis {server[0].get('redis_version', '?')}" if server else ""
    auth = " and AUTH" if endpoint.password is not None else ""
    results = [
        _result(
            target,
            "redis.ping",
            _Reading(
                round(latency * 1000, 2),
                f"{'answer' if refused else 'PONG'} from {endpoint.where} in "
                f"{latency * 1000:.2f} ms (connect{auth} {connected * 1000:.1f} ms){version}"
                f"{refused}",
                target.health.latency_ms,
                " ms",
            ),
            connected + latency,
        )
    ]
    for check, probe in probes:
        with timer() as took:
            if server is None:
                reading = _Reading(None, f"INFO failed: {problem}", status=Status.UNKNOWN)
            else:
                try:
                    reading = probe(server[0], server[1], target.health)
                except Exception as exc:  # one unreadable field must not take the others down
                    text = redact(str(exc), [endpoint.password]) or type(exc).__name__
                    reading = _Reading(
                        None,
                        f"cannot read INFO: {type(exc).__name__}: {text}",
                        status=Status.UNKNOWN,
                    )
            results.append(_result(target, check, reading, took()))
    return results, (server[0] if server else None)


def _ping(conn: Connection) -> str:
    """Empty for PONG; a note when the server answers but refuses PING because its last
    background save failed (MISCONF, stop-writes-on-bgsave-error): redis.rdb reports that."""
    conn.send("PING")
    try:
        answer = conn.reply()
    except ErrorReply as exc:  # NOAUTH -> auth error; LOADING, MASTERDOWN -> transient
        if str(exc).startswith("MISCONF"):
            return "; PING refused with MISCONF: writes are stopped after a failed RDB save"
        raise command_error(conn, "PING", str(exc)) from None
    if answer != b"PONG":
        raise PermanentError(f"redis target at {conn.where} answered PING with {answer!r:.40}")
    return ""


def _info_all(conn: Connection) -> dict[str, str]:
    conn.send("INFO", "all")
    try:
        info = conn.reply()
    except ErrorReply as exc:
        raise command_error(conn, "INFO", str(exc)) from None
    if not isinstance(info, bytes):
        raise PermanentError(f"redis target at {conn.where} sent no INFO text")
    return parse_info(info.decode(errors="replace"))


def _config_save(conn: Connection) -> str | None:
    """The `save` setting ("" = no save points), or None when CONFIG is renamed or not allowed."""
    conn.send("CONFIG", "GET", "save")
    try:
        items = _array_reply(conn)
    except ErrorReply:
        return None
    if len(items) >= 2 and isinstance(items[1], bytes):
        return items[1].decode(errors="replace")
    return None


def _array_reply(conn: Connection) -> list[bytes | int | None]:
    """A flat array reply (`*N` then N simple, integer or bulk replies)."""
    line = conn.readline()
    if line.startswith(b"-"):
        raise ErrorReply(line[1:].decode(errors="replace"))
    try:
        size = int(line[1:]) if line.startswith(b"*") else None
    except ValueError:
        size = None
    if size is None:
        raise PermanentError(f"redis target at {conn.where} sent an unexpected reply {line[:40]!r}")
    return [conn.reply() for _ in range(max(size, 0))]


def _health_error(exc: BaseException, endpoint: Endpoint) -> str:
    if isinstance(exc, TimeoutError):
        return f"redis target at {endpoint.where} did not answer within {endpoint.timeout:g}s"
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return f"network error with redis target at {endpoint.where}: {reason}"
    return redact(str(exc), [endpoint.password])


def _ping_failed(target: RedisTarget, status: Status, message: str, duration: float) -> CheckResult:
    return CheckResult(
        check="redis.ping",
        target=target.name,
        status=status,
        message=message,
        duration=round(duration, 4),
    )


def _result(target: RedisTarget, check: str, reading: _Reading, duration: float) -> CheckResult:
    value = reading.value
    if reading.status is not None:
        status = reading.status
    elif reading.threshold is None:
        status = Status.OK
    else:
        status = grade(value if isinstance(value, int | float) else None, reading.threshold)
    return CheckResult(
        check=check,
        target=target.name,
        status=status,
        value=value,
        unit=reading.unit,
        threshold=describe(reading.threshold, reading.unit) if reading.threshold else None,
        message=reading.message,
        duration=round(duration, 4),
    )


def _number(info: dict[str, str], key: str) -> int:
    value = int_or_none(info.get(key))
    if value is None:
        raise PermanentError(f"INFO has no integer {key} (got {info.get(key)!r})")
    return value


def _probe_memory(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    used = _number(info, "used_memory")
    maximum = int_or_none(info.get("maxmemory")) or 0
    human = info.get("used_memory_human", f"{used}B")
    if maximum <= 0:
        return _Reading(None, f"{human} used, no maxmemory set")
    percent = round(100 * used / maximum, 1)
    return _Reading(
        percent,
        f"{human} of {info.get('maxmemory_human', maximum)} maxmemory used ({percent:g}%), "
        f"maxmemory-policy {info.get('maxmemory_policy', '?')}",
        health.memory,
        "%",
    )


def _probe_hit_rate(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    hits, misses = _number(info, "keyspace_hits"), _number(info, "keyspace_misses")
    lookups = hits + misses
    if lookups < MIN_LOOKUPS:
        return _Reading(
            None,
            f"not enough lookups ({lookups} since start or CONFIG RESETSTAT, need {MIN_LOOKUPS})",
        )
    rate = round(100 * hits / lookups, 1)
    return _Reading(
        rate,
        f"{rate:g}% of {lookups:,} key lookups hit ({hits:,} hits, {misses:,} misses since "
        "start or CONFIG RESETSTAT)",
        health.hit_rate,
        "%",
    )


def hit_counters(info: dict[str, str], now: datetime) -> dict[str, Any]:
    """What the next run needs to grade its interval: the counters, the server's run_id (a
    restart starts them again) and when they were read."""
    return {
        "keyspace_hits": _number(info, "keyspace_hits"),
        "keyspace_misses": _number(info, "keyspace_misses"),
        "run_id": info.get("run_id", ""),
        "at": now.isoformat(),
    }


def _probe_hit_rate_since(
    info: dict[str, str],
    save: str | None,
    health: RedisHealth,
    *,
    previous: dict[str, Any],
    now: datetime,
) -> _Reading:
    hits, misses = _number(info, "keyspace_hits"), _number(info, "keyspace_misses")
    if not previous:
        return _Reading(
            None,
            "no previous sample: the hit rate is graded from the next run on, over the interval "
            f"since this one ({hits:,} hits, {misses:,} misses since start)",
            status=Status.OK,
        )
    before_hits, before_misses = int(previous["keyspace_hits"]), int(previous["keyspace_misses"])
    at = datetime.fromisoformat(previous["at"])
    span = _span((now - at).total_seconds())
    restarted = previous.get("run_id") != info.get("run_id", "")
    if restarted or hits < before_hits or misses < before_misses:
        # the counters started again (restart or CONFIG RESETSTAT) inside the interval
        interval = f"since a restart or CONFIG RESETSTAT within the last {span}"
        hits_delta, misses_delta = hits, misses
    else:
        interval = f"in the {span} since the previous run"
        hits_delta, misses_delta = hits - before_hits, misses - before_misses
    lookups = hits_delta + misses_delta
    if lookups < MIN_LOOKUPS:
        return _Reading(
            None, f"not enough lookups {interval} ({lookups:,}, need {MIN_LOOKUPS}) to grade"
        )
    rate = round(100 * hits_delta / lookups, 1)
    return _Reading(
        rate,
        f"{rate:g}% of {lookups:,} key lookups hit {interval} "
        f"({hits_delta:,} hits, {misses_delta:,} misses)",
        health.hit_rate,
        "%",
    )


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _probe_evicted_keys(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    evicted = _number(info, "evicted_keys")
    return _Reading(
        evicted,
        f"{evicted:,} keys evicted since start "
        f"(maxmemory-policy {info.get('maxmemory_policy', '?')})",
        health.evicted_keys,
    )


def _probe_rejected_connections(
    info: dict[str, str], save: str | None, health: RedisHealth
) -> _Reading:
    rejected = _number(info, "rejected_connections")
    return _Reading(
        rejected,
        f"{rejected:,} connections rejected since start (maxclients {info.get('maxclients', '?')})",
        health.rejected_connections,
    )


def _probe_fragmentation(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    key = "allocator_frag_ratio" if "allocator_frag_ratio" in info else "mem_fragmentation_ratio"
    ratio = float(info[key])
    used = _number(info, "used_memory")
    human = info.get("used_memory_human", f"{used}B")
    if used < SMALL_DATASET_BYTES:
        return _Reading(
            ratio,
            f"{key} {ratio:g} not graded: {human} used is under 10 MB, where allocator "
            "overhead dominates the ratio",
        )
    return _Reading(ratio, f"{key} {ratio:g} with {human} used", health.fragmentation)


def _probe_rdb(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    last_save = _number(info, "rdb_last_save_time")
    server_time = int_or_none(info.get("server_time_usec"))  # 7.0+: the server's own clock
    now = server_time / 1e6 if server_time else time.time()
    hours = round(max(0.0, now - last_save) / 3600, 2)
    changes = int_or_none(info.get("rdb_changes_since_last_save")) or 0
    since = f"last RDB save {hours:g} h ago, {changes:,} changes since"
    if save is not None:
        configured = bool(save.strip())
        how = f'save "{save}"'
    else:
        # CONFIG GET refused: a background save since start says save points exist. Replica
        # full syncs and manual BGSAVEs count too, so this guess can be wrong both ways.
        bgsaved = (
            (int_or_none(info.get("rdb_saves")) or 0) > 0
            or info.get("rdb_last_bgsave_time_sec", "-1") != "-1"
            or info.get("rdb_bgsave_in_progress") == "1"
        )
        configured = bgsaved
        how = "CONFIG GET save refused; inferred from INFO: " + (
            "a background save ran since start" if bgsaved else "no background save since start"
        )
    bgsave = info.get("rdb_last_bgsave_status", "ok")
    if bgsave != "ok":
        return _Reading(
            hours,
            f"the last background save failed (rdb_last_bgsave_status:{bgsave}); {since} ({how})",
            health.rdb_save_age_hours,
            " h",
            Status.CRITICAL,
        )
    if not configured:
        aof = ", AOF on" if info.get("aof_enabled") == "1" else ""
        return _Reading(None, f"persistence off: no RDB save points{aof} ({how})")
    return _Reading(hours, f"{since} ({how})", health.rdb_save_age_hours, " h")


def _probe_replication(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    role = info["role"]
    if role == "slave":
        where = f"{info.get('master_host', '?')}:{info.get('master_port', '?')}"
        link = info.get("master_link_status", "down")
        if link != "up":
            down = int_or_none(info.get("master_link_down_since_seconds"))
            since = f" for {down}s" if down is not None and down >= 0 else ""
            return _Reading(
                link,
                f"replica of {where}: the link to the master is {link}{since}",
                status=Status.CRITICAL,
            )
        io = info.get("master_last_io_seconds_ago", "?")
        return _Reading(link, f"replica of {where}: link up, last I/O {io}s ago")
    count = _number(info, "connected_slaves")
    replicas = [info[f"slave{i}"] for i in range(count) if f"slave{i}" in info]
    details = f": {'; '.join(replicas[:5])}" if replicas else ""
    return _Reading(
        count, f"{role} with {count} connected replica{'' if count == 1 else 's'}{details}"
    )


_Probe = Callable[[dict[str, str], str | None, RedisHealth], _Reading]

_REDIS_PROBES: tuple[tuple[str, _Probe], ...] = (
    ("redis.memory", _probe_memory),
    ("redis.hit_rate", _probe_hit_rate),
    ("redis.evicted_keys", _probe_evicted_keys),
    ("redis.rejected_connections", _probe_rejected_connections),
    ("redis.fragmentation", _probe_fragmentation),
    ("redis.rdb", _probe_rdb),
    ("redis.replication", _probe_replication),
)
