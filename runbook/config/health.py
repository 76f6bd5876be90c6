"""The `health` section (deadlines, notification streaks, freshness limits) and the health
thresholds a PostgreSQL or Redis target carries (`targets.postgres[].health`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from runbook.config.core import Duration, Model, Threshold, threshold_field


class HealthSettings(Model):
    check_timeout: Duration = Field(
        default=timedelta(seconds=30), description="hard deadline of one check"
    )
    unreachable: Literal["unknown", "critical"] = "critical"
    concurrency: int = Field(default=32, ge=1, le=512)
    notify_after: dict[Literal["warn", "critical", "unknown"], int] = Field(
        default_factory=lambda: {"critical": 1, "warn": 3, "unknown": 3},
        description="consecutive failing runs before a check notifies",
    )
    backup_max_age: Duration = Field(
        default=timedelta(hours=26), description="backup freshness when a target has no rpo"
    )
    drill_max_age: Duration = Field(
        default=timedelta(days=35), description="a passed DR drill at least this often (monthly)"
    )


class PostgresHealth(Model):
    """check_postgres-style checks with runbook defaults (003: idle connections over 1 h)."""

    enabled: bool = True
    connections: Threshold = threshold_field(80, 95)  # % of max_connections in use
    long_query_minutes: float = Field(default=5, gt=0)
    long_queries: Threshold = threshold_field(0, 5)  # queries running over long_query_minutes
    idle_in_transaction_minutes: float = Field(default=5, gt=0)
    idle_in_transaction: Threshold = threshold_field(0, 5)
    idle_connection_hours: float = Field(default=1, gt=0)
    idle_connections: Threshold = threshold_field(10, 50)  # idle over idle_connection_hours
    waiting_locks: Threshold = threshold_field(0, 10)
    wraparound: Threshold = threshold_field(50, 75)  # % of the 2^31 transaction-ID horizon used
    replication_lag_seconds: Threshold = threshold_field(30, 300)
    inactive_slots: Threshold = threshold_field(0, None)
    cache_hit_ratio: Threshold = threshold_field(95, 90, "<")  # %
    dead_tuple_ratio: Threshold = threshold_field(20, 40)  # % dead tuples of the worst table
    dead_tuple_min_rows: int = Field(default=10_000, ge=0)
    # days since the last (auto)vacuum of the stalest table
    vacuum_age_days: Threshold = threshold_field(7, 30)
    database_size_gb: Threshold = threshold_field(None, None)  # report only unless set


class RedisHealth(Model):
    enabled: bool = True
    latency_ms: Threshold = threshold_field(50, 200)
    memory: Threshold = threshold_field(80, 95)  # % of maxmemory (when maxmemory is set)
    hit_rate: Threshold = threshold_field(30, 10, "<")  # %, runbook 000: warn under 30 %
    evicted_keys: Threshold = threshold_field(None, None)  # cumulative; report only unless set
    rejected_connections: Threshold = threshold_field(0, 100)
    fragmentation: Threshold = threshold_field(1.5, 2.0)  # allocator fragmentation ratio
    rdb_save_age_hours: Threshold = threshold_field(25, 49)  # only when the server saves RDB
