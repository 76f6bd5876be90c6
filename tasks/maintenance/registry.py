"""The maintenance procedures by name, in the order a window plans and applies them.
`invalid_indexes` comes first in every window of a PostgreSQL target: what an interrupted
concurrent build left behind is dropped before anything else. Each procedure applies to the
targets of its kinds (tasks/maintenance/targets.py); the others of the window skip it."""

from __future__ import annotations

from tasks.maintenance.analyze_stale import AnalyzeStale
from tasks.maintenance.command import Command
from tasks.maintenance.config_drift import ConfigDrift
from tasks.maintenance.docker_cleanup import DockerCleanup
from tasks.maintenance.idle_connections import IdleConnections
from tasks.maintenance.log_archive import LogArchive
from tasks.maintenance.procedure import Procedure
from tasks.maintenance.query_baseline import QueryBaseline
from tasks.maintenance.redis_cleanup import RedisCleanup
from tasks.maintenance.reindex import InvalidIndexes, Reindex
from tasks.maintenance.rollout_restart import RolloutRestart
from tasks.maintenance.security_audit import SecurityAudit
from tasks.maintenance.vacuum import Vacuum

ALWAYS_FIRST = "invalid_indexes"
PROCEDURES: dict[str, Procedure] = {
    ALWAYS_FIRST: InvalidIndexes(),
    "idle_connections": IdleConnections(),
    "vacuum": Vacuum(),
    "analyze_stale": AnalyzeStale(),
    "reindex": Reindex(),
    "query_baseline": QueryBaseline(),
    "redis_cleanup": RedisCleanup(),
    "log_archive": LogArchive(),
    "command": Command(),
    "config_drift": ConfigDrift(),
    "security_audit": SecurityAudit(),
    "docker_cleanup": DockerCleanup(),
    "rollout_restart": RolloutRestart(),
}
