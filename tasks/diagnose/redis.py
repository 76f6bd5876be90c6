"""The Redis section: INFO (every section), SLOWLOG, a summary of CLIENT LIST (counts, the
oldest and idlest, the biggest buffers; never every address) and MEMORY DOCTOR."""

from __future__ import annotations

from collections import Counter
from typing import Any

from runbook.config import DiagnosticsSettings, RedisTarget
from runbook.systems.redis_commands import RedisClient
from tasks.diagnose.sections import Collected

SLOWLOG_ENTRIES = 25
CLIENTS_SHOWN = 10


def _text(reply: Any) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def slowlog_entries(reply: list[Any]) -> list[dict[str, Any]]:
    """SLOWLOG GET: [id, unix time, microseconds, [args], client addr, client name]."""
    entries = []
    for item in reply or []:
        entry = {
            "id": item[0],
            "at": item[1],
            "duration_ms": round(item[2] / 1000, 3),
            "command": " ".join(_text(a) for a in item[3])[:500],
        }
        if len(item) > 5:
            entry["client_name"] = _text(item[5])
        entries.append(entry)
    return entries


def client_summary(text: str) -> dict[str, Any]:
    """CLIENT LIST -> counts by command, flags and user, and the extremes a person looks at
    (oldest, idlest, biggest output buffers)."""
    clients = []
    for line in text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if fields:
            clients.append(fields)

    def number(client: dict[str, str], key: str) -> int:
        try:
            return int(client.get(key, 0))
        except ValueError:
            return 0

    def brief(client: dict[str, str]) -> dict[str, Any]:
        keys = ("id", "name", "age", "idle", "flags", "db", "cmd", "omem", "qbuf", "user")
        return {k: client.get(k) for k in keys if k in client}

    return {
        "count": len(clients),
        "by_command": dict(Counter(c.get("cmd", "?") for c in clients).most_common(15)),
        "by_flags": dict(Counter(c.get("flags", "?") for c in clients).most_common(10)),
        "by_user": dict(Counter(c.get("user", "default") for c in clients).most_common(10)),
        "blocked": sum(1 for c in clients if "b" in c.get("flags", "")),
        "oldest": [brief(c) for c in sorted(clients, key=lambda c: -number(c, "age"))][
            :CLIENTS_SHOWN
        ],
        "idlest": [brief(c) for c in sorted(clients, key=lambda c: -number(c, "idle"))][
            :CLIENTS_SHOWN
        ],
        "biggest_output": [brief(c) for c in sorted(clients, key=lambda c: -number(c, "omem"))][
            :CLIENTS_SHOWN
        ],
    }


def collect_redis(target: RedisTarget, settings: DiagnosticsSettings) -> Collected:
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with RedisClient.open(target) as client:
        data["info"] = client.info("everything")
        parts = {
            "slowlog": lambda: slowlog_entries(client.call("SLOWLOG", "GET", str(SLOWLOG_ENTRIES))),
            "clients": lambda: client_summary(_text(client.call("CLIENT", "LIST"))),
            "memory_doctor": lambda: _text(client.call("MEMORY", "DOCTOR")),
        }
        for name, read in parts.items():
            try:
                data[name] = read()
            except Exception as exc:  # noqa: BLE001 - a renamed or refused command
                errors[name] = str(exc)
    if errors:
        data["errors"] = errors
    return Collected(data=data, summary=_summary(data), findings=_findings(data))


def _summary(data: dict[str, Any]) -> str:
    info = data["info"]
    parts = [
        f"Redis {info.get('redis_version', '?')}",
        f"{info.get('used_memory_human', '?')} used",
        f"{info.get('connected_clients', '?')} clients",
        f"{len(data.get('slowlog') or [])} slow log entries",
    ]
    if data.get("errors"):
        parts.append(f"{len(data['errors'])} parts failed ({', '.join(data['errors'])})")
    return ", ".join(parts)


def _findings(data: dict[str, Any]) -> list[str]:
    info = data["info"]
    found = []
    blocked = int(info.get("blocked_clients", 0) or 0)
    if blocked:
        found.append(f"{blocked} clients blocked")
    rejected = int(info.get("rejected_connections", 0) or 0)
    if rejected:
        found.append(f"{rejected} connections rejected since start")
    slow = data.get("slowlog") or []
    if slow:
        worst = max(slow, key=lambda e: e["duration_ms"])
        found.append(f"slowest logged command {worst['duration_ms']:g} ms: {worst['command'][:80]}")
    doctor = data.get("memory_doctor") or ""
    if "detected" in doctor.lower():  # "Sam, I detected a few issues in this instance..."
        found.append("MEMORY DOCTOR: " + doctor.strip().splitlines()[0][:200])
    return found
