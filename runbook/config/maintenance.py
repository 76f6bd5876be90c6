"""Maintenance windows: the `maintenance` section (runbook 000's weekly Sunday 2-4 AM and
monthly first Sunday 2-6 AM windows, runbook 001/003's VACUUM ANALYZE and idle connections),
with the runbooks' values as defaults."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from runbook.config.core import Duration, Model, Name

# The PostgreSQL procedures: a window's default choice.
POSTGRES_PROCEDURES = ("vacuum", "reindex", "idle_connections", "analyze_stale", "query_baseline")
# Every procedure the windows know (tasks/maintenance/registry.py maps them); the others apply
# to Redis targets, to the host (log folders, the team's commands), or to several kinds.
PROCEDURES = (
    *POSTGRES_PROCEDURES,
    "redis_cleanup",
    "log_archive",
    "command",
    "config_drift",
    "security_audit",
    "docker_cleanup",
    "rollout_restart",
)
Procedure = Literal[
    "vacuum",
    "reindex",
    "idle_connections",
    "analyze_stale",
    "query_baseline",
    "redis_cleanup",
    "log_archive",
    "command",
    "config_drift",
    "security_audit",
    "docker_cleanup",
    "rollout_restart",
]


class WindowSettings(Model):
    duration: Duration = Field(
        description="the window's budget: no action starts that would overrun it"
    )
    procedures: list[Procedure] = Field(default_factory=lambda: list(POSTGRES_PROCEDURES))
    pre_backup: bool = Field(default=True, description="back up the targets before anything")
    stop_on_backup_failure: bool = Field(
        default=True,
        description="a failed pre-maintenance backup skips the destructive procedures",
    )


def _default_windows() -> dict[str, WindowSettings]:
    return {
        "weekly": WindowSettings(duration=timedelta(hours=2)),  # runbook 000: Sunday 2-4 AM
        "monthly": WindowSettings(duration=timedelta(hours=4)),  # first Sunday 2-6 AM
    }


class VacuumSettings(Model):
    dead_tuple_ratio: float = Field(default=20, ge=0, le=100, description="% dead of live+dead")
    min_dead_tuples: int = Field(default=10_000, ge=0)
    vacuum_age: Duration = Field(default=timedelta(days=7), description="since the last vacuum")
    full_tables: list[str] = Field(
        default_factory=list, description="schema.table allowed VACUUM FULL (exclusive lock)"
    )
    full_max_bytes: int = Field(default=1 << 30, ge=0, description="VACUUM FULL size limit")


class ReindexSettings(Model):
    min_bytes: int = Field(default=10 << 20, ge=0, description="indexes smaller are left alone")
    bloat_ratio: float = Field(
        default=1.5, gt=1, description="size-per-row (or pgstatindex) against the best seen"
    )


class IdleConnectionSettings(Model):
    idle_after: Duration = timedelta(hours=1)  # runbook 003
    idle_in_transaction_after: Duration = timedelta(minutes=30)
    exclude_applications: list[str] = Field(default_factory=list)
    exclude_users: list[str] = Field(default_factory=list)


class AnalyzeSettings(Model):
    stale_after: Duration = timedelta(days=7)
    modified_fraction: float = Field(default=0.1, gt=0, le=1)


class QueryBaselineSettings(Model):
    top: int = Field(default=20, ge=1, le=500)
    regression_ratio: float = Field(default=1.5, gt=1, description="mean time vs last window")


class RedisCleanupSettings(Model):
    """runbook 000's weekly cache cleanup: keys matching `patterns` deleted with SCAN + UNLINK
    in paced batches (never KEYS); FLUSHDB only when `flush` says so."""

    patterns: list[str] = Field(default_factory=list, description="SCAN MATCH patterns")
    idle_after: Duration = Field(
        default=timedelta(0), description="only keys idle longer (OBJECT IDLETIME); 0: any"
    )
    batch: int = Field(default=500, ge=1, le=10_000, description="keys per SCAN and UNLINK")
    pause: Duration = Field(default=timedelta(milliseconds=10), description="between batches")
    sample: int = Field(default=200, ge=1, le=10_000, description="keys sampled by MEMORY USAGE")
    flush: bool = Field(default=False, description="FLUSHDB ASYNC the target's database")
    hit_rate_below: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="only when the hit rate between the last window and this one is lower "
        "(runbook 000: `if hit_rate < 0.3: clear_cache()`)",
    )
    min_lookups: int = Field(default=1000, ge=0, description="fewer lookups: no hit rate")


class LogArchiveSettings(Model):
    """runbook 001/002: rotated logs older than `older_than` archived (zstd) to the backup
    storage, verified from it, then deleted locally; archives expire after `keep_days`."""

    paths: list[Path] = Field(default_factory=list, description="log folders")
    rotated: list[str] = Field(
        default_factory=lambda: ["*.log.[0-9]*", "*.log-2[0-9]*", "*.gz"],
        description="file name patterns of logs already rotated by their writer",
    )
    older_than: Duration = timedelta(days=1)
    keep_days: int = Field(default=30, ge=1, description="archives older than this expire")
    prefix: str = Field(
        default="_logs",  # never a target name: backups live under <target>/
        pattern=r"^_[A-Za-z0-9_.-]+$",
        description="storage key prefix of the archives",
    )
    level: int = Field(default=9, ge=1, le=19, description="zstd level")


class CommandStep(Model):
    name: Name
    run: list[str] = Field(min_length=1, description="argument list: program and arguments")
    timeout: Duration = timedelta(minutes=10)
    env: dict[str, SecretStr] = Field(default_factory=dict, description="values never shown")
    cwd: Path | None = None
    tail_lines: int = Field(default=20, ge=0, le=1000)
    destructive: bool = Field(default=True, description="skip it when the backup failed")


class CommandSettings(Model):
    """runbook 000's scripts (weekly_maintenance.sh, verify_rollback.sh, ...) as window steps."""

    steps: list[CommandStep] = Field(default_factory=list)


SettingValue = str | int | float | bool


class ConfigDriftSettings(Model):
    """Desired server settings per target (000/002 monthly configuration review); files
    targets are compared with their last verified backup. `secret_files` (also used by
    security_audit) name files whose content is never shown: names only, no diff."""

    postgres: dict[str, dict[str, SettingValue]] = Field(default_factory=dict)
    redis: dict[str, dict[str, SettingValue]] = Field(default_factory=dict)
    prometheus: dict[str, dict[str, SettingValue]] = Field(
        default_factory=dict,
        description="flags (/api/v1/status/flags), e.g. storage.tsdb.retention.time: 15d; "
        "report only: Prometheus reads them at start-up",
    )
    secret_files: list[str] = Field(
        default_factory=lambda: [".env", "*secret*", "*.key"],
        description="glob patterns (file name or whole path, any case) of files that hold "
        "secrets",
    )
    diff_max_bytes: int = Field(
        default=256 << 10, ge=0, description="text files larger than this get no diff"
    )
    diff_max_lines: int = Field(default=200, ge=1, description="lines of diff kept per file")


class SecurityAuditSettings(Model):
    """Report-only checks (000 weekly security scan, 001/004 monthly audit). Files targets:
    secrets are the files config_drift.secret_files names; HTTP targets: a certificate is
    near expiry by the target's own `tls_days`."""

    allowed_superusers: list[str] = Field(
        default_factory=lambda: ["postgres"], description="superusers that are not a finding"
    )


class DockerCleanupSettings(Model):
    """runbook 000's weekly `docker system df` + `docker system prune -f`, on each docker
    target: stopped containers and dangling images older than `older_than`, of the compose
    project only when one is set; never a running container, never a named volume unless
    `volumes` lists it."""

    older_than: Duration = Field(
        default=timedelta(hours=24),
        description="containers stopped (images, networks created) longer ago than this",
    )
    project: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="compose project (label com.docker.compose.project); none: the target's "
        "`project`, and without that every project",
    )
    all_dangling_images: bool = Field(
        default=False,
        description="with a project: also dangling images that carry no project label",
    )
    networks: bool = Field(default=True, description="unused networks (of the project)")
    volumes: list[str] = Field(
        default_factory=list, description="named volumes that may be removed once unused"
    )

    @field_validator("older_than")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("expected a duration of 0 or more, e.g. 24h")
        return value


DEPLOYMENT_REF = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"


class RolloutSelection(Model):
    """The deployments of one Kubernetes target that rollout_restart restarts: by name, or by
    label selector (in `namespaces`; none: the target's namespaces, else every namespace)."""

    deployments: list[str] = Field(default_factory=list, description="namespace/name")
    selector: str | None = Field(default=None, description="label selector, e.g. restart=nightly")
    namespaces: list[str] = Field(default_factory=list, description="where `selector` looks")

    @field_validator("deployments")
    @classmethod
    def _namespace_slash_name(cls, value: list[str]) -> list[str]:
        for index, ref in enumerate(value):
            if not re.fullmatch(DEPLOYMENT_REF, ref):
                raise ValueError(
                    f"deployments[{index}]: {ref!r} is not namespace/name (e.g. default/api)"
                )
        return value

    @field_validator("selector")
    @classmethod
    def _selector_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("empty label selector: leave it out, or e.g. restart=nightly")
        return value

    @model_validator(mode="after")
    def _something_chosen(self) -> RolloutSelection:
        if not self.deployments and self.selector is None:
            raise ValueError("give deployments (namespace/name) or a selector")
        return self


class RolloutRestartSettings(Model):
    """runbook 002's nightly pod restart (`kubectl rollout restart`): the restartedAt
    annotation on each chosen deployment's pod template, then a wait until the rollout is
    available, or `stuck` after `timeout`."""

    targets: dict[str, RolloutSelection] = Field(
        default_factory=dict, description="Kubernetes target name -> the deployments to restart"
    )
    timeout: Duration = Field(
        default=timedelta(minutes=10), description="how long one rollout may take"
    )
    poll: Duration = Field(default=timedelta(seconds=2), description="between status reads")

    @field_validator("timeout", "poll")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("expected a duration above 0, e.g. 10m")
        return value


class HttpCall(Model):
    method: Literal["GET", "POST", "PUT", "DELETE", "PATCH"] = "POST"
    url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)


class AlertmanagerSilence(Model):
    url: str
    matchers: dict[str, str] = Field(min_length=1)
    margin: Duration = timedelta(minutes=15)  # the silence ends this long after the window
    headers: dict[str, SecretStr] = Field(default_factory=dict)


class MaintenanceMode(Model):
    enter: HttpCall | None = None  # runbook 000: POST http://localhost:8000/admin/maintenance-mode
    exit: HttpCall | None = None  # DELETE http://localhost:8000/admin/maintenance-mode
    alertmanager: AlertmanagerSilence | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> MaintenanceMode:
        if (self.enter is None) != (self.exit is None):
            raise ValueError("maintenance.mode: give both enter and exit, or neither")
        return self


class MaintenanceSettings(Model):
    lock_timeout: Duration = Field(
        default=timedelta(seconds=2),
        description="no client waits longer than this behind a maintenance lock request",
    )
    lock_retries: int = Field(default=5, ge=0, le=50)
    statement_timeout: Duration = timedelta(hours=1)
    wait_for_target: Duration = Field(
        default=timedelta(minutes=10),
        description="how long a window waits for a backup or drill of the same target",
    )
    windows: dict[str, WindowSettings] = Field(default_factory=_default_windows)
    vacuum: VacuumSettings = Field(default_factory=VacuumSettings)
    reindex: ReindexSettings = Field(default_factory=ReindexSettings)
    idle_connections: IdleConnectionSettings = Field(default_factory=IdleConnectionSettings)
    analyze_stale: AnalyzeSettings = Field(default_factory=AnalyzeSettings)
    query_baseline: QueryBaselineSettings = Field(default_factory=QueryBaselineSettings)
    mode: MaintenanceMode = Field(default_factory=MaintenanceMode)
    redis_cleanup: RedisCleanupSettings = Field(default_factory=RedisCleanupSettings)
    log_archive: LogArchiveSettings = Field(default_factory=LogArchiveSettings)
    command: CommandSettings = Field(default_factory=CommandSettings)
    config_drift: ConfigDriftSettings = Field(default_factory=ConfigDriftSettings)
    security_audit: SecurityAuditSettings = Field(default_factory=SecurityAuditSettings)
    docker_cleanup: DockerCleanupSettings = Field(default_factory=DockerCleanupSettings)
    rollout_restart: RolloutRestartSettings = Field(default_factory=RolloutRestartSettings)

    @field_validator("windows")
    @classmethod
    def _known_windows(cls, value: dict[str, WindowSettings]) -> dict[str, WindowSettings]:
        # A partial `windows:` keeps the defaults of the windows it does not mention.
        return {**_default_windows(), **value}
