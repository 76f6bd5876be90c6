"""Redis drills: load the RDB into a throwaway redis-server and compare its key counts per
database with the manifest's INFO figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from runbook.catalog import DrillCheck
from runbook.config import RedisTarget
from runbook.systems.redis import redis_facts, scratch_redis


def restored_key_counts(rdb: Path, folder: Path) -> dict[str, int]:
    """Keys per database ("db0": 25) of the RDB, loaded into a throwaway redis-server."""
    with scratch_redis(rdb, folder) as port:
        probe = RedisTarget(name="drill", url=SecretStr(f"redis://127.0.0.1:{port}/0"))
        return redis_facts(probe).get("keys_per_db", {})


def compare_key_counts(source: dict[str, Any], restored: dict[str, int]) -> list[DrillCheck]:
    """Keys per database of the restored RDB against the backup's INFO figures.

    INFO is read before SYNC and again once the snapshot has arrived; the snapshot itself is
    taken in between, so a busy server's count lies between the two. Keys with a TTL may expire
    before the restore (redis-server drops expired keys on load), so the lowest acceptable
    count leaves them out. A manifest without the second reading or TTL figures (older
    backups, a quiet server) therefore expects the exact count.
    """
    readings = [(source.get("keys_per_db", {}), source.get("expires_per_db", {}))]
    if "keys_per_db_after" in source:
        readings.append((source["keys_per_db_after"], source.get("expires_per_db_after", {})))
    databases = sorted(set(restored).union(*(keys for keys, _ in readings)), key=_db_order)
    checks = []
    for db in databases:
        counts = [keys.get(db, 0) for keys, _ in readings]
        persistent = [keys.get(db, 0) - expires.get(db, 0) for keys, expires in readings]
        low, high, got = max(0, min(persistent)), max(counts), restored.get(db, 0)
        ok = low <= got <= high
        at_backup = (
            f"{counts[0]} at backup time"
            if len(set(counts)) == 1
            else f"{counts[0]} when the backup started and {counts[-1]} when its snapshot arrived"
        )
        detail = f"{got} keys restored, {at_backup}"
        if low != high:
            verdict = "within" if ok else "outside"
            detail += f"; {verdict} the expected {low}-{high}"
            with_ttl = max(expires.get(db, 0) for _, expires in readings)
            if with_ttl:
                detail += f" ({with_ttl} keys had a TTL and may expire before the restore)"
        elif not ok:
            detail += f"; expected exactly {low}"
        checks.append(DrillCheck(name=f"keys {db}", ok=ok, detail=detail))
    if not checks:
        checks.append(DrillCheck(name="keys", ok=True, detail="empty dataset, as backed up"))
    return checks


def _db_order(name: str) -> tuple[int, str]:
    return (int(name[2:]) if name[2:].isdigit() else 1 << 30, name)
