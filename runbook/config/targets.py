"""The `targets` section: the systems Runbook backs up, drills and checks (PostgreSQL, Redis,
config files), and beside them the health-only targets (runbook.config.health_targets)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from runbook.config.backups import DEFAULT_SCHEDULE, ScheduleName
from runbook.config.core import Duration, Model, Name
from runbook.config.drills import DrillServer
from runbook.config.health import PostgresHealth, RedisHealth
from runbook.config.health_targets import (
    DockerTarget,
    HostTarget,
    HttpTarget,
    KubernetesTarget,
    LogsTarget,
    PrometheusTarget,
)
from runbook.config.restore import RestoreSettings


class PostgresTarget(Model):
    name: Name
    dsn: SecretStr
    schedule: ScheduleName = DEFAULT_SCHEDULE
    schemas: list[str] = Field(
        default_factory=list, description="empty = whole database; names = also one per schema"
    )
    bin_dir: Path | None = Field(default=None, description="folder with pg_dump/pg_restore")
    connect_timeout: Duration = timedelta(seconds=10)
    rpo: Duration | None = Field(default=None, description="most data loss tolerated")
    rto: Duration | None = Field(default=None, description="longest restore tolerated")
    drill: DrillServer = Field(default_factory=DrillServer)
    restore: RestoreSettings = Field(default_factory=RestoreSettings)
    health: PostgresHealth = Field(default_factory=PostgresHealth)

    @field_validator("dsn")
    @classmethod
    def _dsn_parses(cls, value: SecretStr) -> SecretStr:
        # Lazy: psycopg costs ~80 ms to import, paid only by configs with a PostgreSQL target.
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

        raw = value.get_secret_value()
        if not raw.strip():
            raise ValueError("empty DSN")
        try:
            parts = conninfo_to_dict(raw)
        except Exception:
            # psycopg's message may quote the DSN, password included: never repeat it.
            raise ValueError(
                "not a valid PostgreSQL DSN (expected postgresql://user@host:port/dbname "
                "or 'host=... dbname=...')"
            ) from None
        if not parts.get("dbname"):
            raise ValueError("the DSN names no database (postgresql://user@host:port/DBNAME)")
        return value


class RedisTarget(Model):
    name: Name
    url: SecretStr
    schedule: ScheduleName = DEFAULT_SCHEDULE
    timeout: Duration = timedelta(seconds=30)
    rpo: Duration | None = None
    rto: Duration | None = None
    health: RedisHealth = Field(default_factory=RedisHealth)

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("expected redis://[user:password@]host:port[/db] or rediss://...")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("the Redis URL has an invalid port") from None
        return value


class FilesTarget(Model):
    name: Name
    paths: list[Path] = Field(min_length=1)
    schedule: ScheduleName = DEFAULT_SCHEDULE
    exclude: list[str] = Field(default_factory=list, description="glob patterns to leave out")
    allow_empty: bool = Field(
        default=False,
        description="an archive with no files is a good backup (default: a failed one)",
    )
    rpo: Duration | None = None
    rto: Duration | None = Field(default=None, description="longest restore tolerated")
    restore: RestoreSettings = Field(default_factory=RestoreSettings)


class Targets(Model):
    postgres: list[PostgresTarget] = Field(default_factory=list)
    redis: list[RedisTarget] = Field(default_factory=list)
    files: list[FilesTarget] = Field(default_factory=list)
    http: list[HttpTarget] = Field(default_factory=list)
    logs: list[LogsTarget] = Field(default_factory=list)
    prometheus: list[PrometheusTarget] = Field(default_factory=list)
    kubernetes: list[KubernetesTarget] = Field(default_factory=list)
    docker: list[DockerTarget] = Field(default_factory=list)
    host: list[HostTarget] = Field(default_factory=list)


TargetConfig = PostgresTarget | RedisTarget | FilesTarget  # what backups are taken of
TARGET_KIND = {PostgresTarget: "postgres", RedisTarget: "redis", FilesTarget: "files"}
BACKUP_KINDS = ("postgres", "redis", "files")
ALL_KINDS: tuple[str, ...] = tuple(Targets.model_fields)  # postgres, redis, files, http, ...
