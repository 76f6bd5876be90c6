"""The `targets` section: the systems Runbook backs up, drills and checks (PostgreSQL, Redis,
config files), and beside them the health-only targets (runbook.config.health_targets)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from runbook.config.backups import DEFAULT_SCHEDULE, ScheduleName
from runbook.config.core import Duration, Model, Name
from runbook.config.drills import DrillServer
from runbook.config.health import PostgresHealth, RedisHealth
from runbook.config.health_targets import (
    AlertmanagerTarget,
    DockerTarget,
    HostTarget,
    HttpTarget,
    KubernetesTarget,
    LogsTarget,
    PrometheusTarget,
)
from runbook.config.restore import RedisRestoreSettings, RestoreSettings


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
    restore: RedisRestoreSettings = Field(default_factory=RedisRestoreSettings)

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


class PrometheusTsdbTarget(Model):
    """A Prometheus server's TSDB, backed up through its snapshot API (POST
    /api/v1/admin/tsdb/snapshot, which needs --web.enable-admin-api): the snapshot folder it
    writes under `data_dir` is archived like a files target, then removed."""

    name: Name
    url: str = Field(description="the Prometheus server, e.g. http://prometheus:9090")
    data_dir: Path = Field(
        description="its --storage.tsdb.path as this machine sees it (the same host, or a "
        "mount of that folder): snapshots appear in data_dir/snapshots/<name>"
    )
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: Duration = Field(
        default=timedelta(minutes=5), description="how long the snapshot call may take"
    )
    skip_head: bool = Field(
        default=False,
        description="leave out the samples not yet in a block (the last ~2 h); faster",
    )
    allow_empty: bool = Field(
        default=False, description="a snapshot with no blocks is a good backup (default: failed)"
    )
    schedule: ScheduleName = DEFAULT_SCHEDULE
    rpo: Duration | None = None
    rto: Duration | None = Field(default=None, description="longest restore tolerated")
    restore: RestoreSettings = Field(default_factory=RestoreSettings)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http(s)://host:port of the Prometheus server")
        return value

    @property
    def paths(self) -> list[Path]:
        """What a restore must never write over unasked: the live TSDB."""
        return [self.data_dir]


ObjectKind = Literal[
    "ConfigMap", "Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "NetworkPolicy"
]
DEFAULT_OBJECT_KINDS: list[ObjectKind] = [
    "ConfigMap",
    "Deployment",
    "Service",
    "Ingress",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
]


class KubernetesObjectsTarget(Model):
    """Kubernetes objects (runbook 001's hourly `kubectl get configmap -o yaml`): the
    configured kinds of the configured namespaces exported as YAML with the server-managed
    fields stripped, so that `kubectl apply --server-side` takes them back."""

    name: Name
    cluster: Name = Field(description="the targets.kubernetes entry that says how to reach it")
    namespaces: list[str] = Field(min_length=1)
    kinds: list[ObjectKind] = Field(default_factory=lambda: list(DEFAULT_OBJECT_KINDS))
    secrets: list[str] = Field(
        default_factory=list,
        description="Secrets (by name) to include; their data is in the backup, never in logs, "
        "reports or the manifest",
    )
    schedule: ScheduleName = DEFAULT_SCHEDULE
    rpo: Duration | None = None
    rto: Duration | None = Field(default=None, description="longest restore tolerated")
    restore: RestoreSettings = Field(default_factory=RestoreSettings)

    @property
    def paths(self) -> list[Path]:
        return []  # nothing on this machine: a restore writes only into the folder it is given


class Targets(Model):
    postgres: list[PostgresTarget] = Field(default_factory=list)
    redis: list[RedisTarget] = Field(default_factory=list)
    files: list[FilesTarget] = Field(default_factory=list)
    prometheus_tsdb: list[PrometheusTsdbTarget] = Field(
        default_factory=list, description="Prometheus TSDBs backed up through the snapshot API"
    )
    kubernetes_objects: list[KubernetesObjectsTarget] = Field(
        default_factory=list, description="Kubernetes objects exported as YAML"
    )
    http: list[HttpTarget] = Field(default_factory=list)
    logs: list[LogsTarget] = Field(default_factory=list)
    prometheus: list[PrometheusTarget] = Field(default_factory=list)
    alertmanager: list[AlertmanagerTarget] = Field(default_factory=list)
    kubernetes: list[KubernetesTarget] = Field(default_factory=list)
    docker: list[DockerTarget] = Field(default_factory=list)
    host: list[HostTarget] = Field(default_factory=list)


# what backups are taken of
TargetConfig = (
    PostgresTarget | RedisTarget | FilesTarget | PrometheusTsdbTarget | KubernetesObjectsTarget
)
TARGET_KIND = {
    PostgresTarget: "postgres",
    RedisTarget: "redis",
    FilesTarget: "files",
    PrometheusTsdbTarget: "prometheus",  # the kind its backups and restores are recorded as
    KubernetesObjectsTarget: "kubernetes",
}
# sections of `targets`
BACKUP_KINDS = ("postgres", "redis", "files", "prometheus_tsdb", "kubernetes_objects")
ALL_KINDS: tuple[str, ...] = tuple(Targets.model_fields)  # postgres, redis, files, http, ...
