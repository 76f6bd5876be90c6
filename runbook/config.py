"""runbook.yaml as pydantic models.

- `${VAR}` and `${VAR:-default}` are expanded in every string value (`$$` is a literal `$`).
- DSNs, URLs with passwords and keys are `SecretStr`: they print as `**********`.
- Relative paths (local storage, SQLite catalog, files to back up) are resolved against the
  folder of the config file, so the command works from any working directory.
- Every error names the field path, e.g. `targets.postgres[0].dsn: field required`.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from runbook.errors import ConfigError, NotFoundError

DEFAULT_CONFIG = "runbook.yaml"
CONFIG_ENV = "RUNBOOK_CONFIG"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> timedelta:
    """'90s', '10m', '1h', '7d', '2w' or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30s', '10m', '1h', '7d', got {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        try:  # ISO 8601 (PT1M), as pydantic writes a timedelta
            return TypeAdapter(timedelta).validate_python(value)
        except ValidationError:
            pass
        raise ValueError(f"expected a duration like '30s', '10m', '1h', '7d', got {value!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Name = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="lowercase letters, digits, - and _"),
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(Model):
    """A measured value is warn/critical when `value <op> warn/critical` holds."""

    warn: float | None = None
    critical: float | None = None
    op: Literal[">", ">=", "<", "<="] = ">"

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.warn is None or self.critical is None:
            return self
        wrong = self.critical < self.warn if self.op.startswith(">") else self.critical > self.warn
        if wrong:
            worse = "above" if self.op.startswith(">") else "below"
            raise ValueError(
                f"critical ({self.critical:g}) must be {worse} or equal to warn ({self.warn:g}) "
                f"for op '{self.op}'"
            )
        return self


def _t(warn: float | None, critical: float | None, op: str = ">") -> Any:
    return Field(default_factory=lambda: Threshold(warn=warn, critical=critical, op=op))


# --- catalog and storage -------------------------------------------------------------------


class LocalStorage(Model):
    kind: Literal["local"]
    path: Path


class S3Storage(Model):
    kind: Literal["s3"]
    bucket: str = Field(min_length=3)
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    part_size_mb: int = Field(default=16, ge=5, le=5120)
    max_concurrency: int = Field(default=4, ge=1, le=32)
    max_attempts: int = Field(default=5, ge=1, le=20, description="botocore attempts per request")
    timeout: Duration = timedelta(seconds=60)

    @field_validator("prefix")
    @classmethod
    def _prefix_without_slashes(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _kms_needs_sse(self) -> S3Storage:
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise ValueError("sse_kms_key_id is set but sse is not 'aws:kms'")
        return self


Storage = Annotated[LocalStorage | S3Storage, Field(discriminator="kind")]


class Retention(Model):
    keep_last: int = Field(default=3, ge=0)
    daily: int = Field(default=7, ge=0)
    weekly: int = Field(default=4, ge=0)
    monthly: int = Field(default=12, ge=0)
    yearly: int = Field(default=0, ge=0)
    grace: Duration = Field(
        default=timedelta(hours=24),
        description="failed or unfinished backups older than this are garbage-collected",
    )


class BackupSettings(Model):
    compression_level: int = Field(default=3, ge=1, le=22, description="zstd level")
    compression_threads: int = Field(default=0, ge=0, le=64, description="0 = one per core")
    lock_timeout: Duration = Field(
        default=timedelta(minutes=10),
        description="how long a backup waits for another backup of the same target",
    )
    table_lock_timeout: Duration = Field(
        default=timedelta(minutes=5),
        description="how long pg_dump waits for a table lock (pg_dump --lock-wait-timeout)",
    )
    timeout: Duration = Field(default=timedelta(hours=6), description="per artifact")
    retries: int = Field(default=3, ge=0, le=20, description="retries of transient faults")
    retry_delay: Duration = timedelta(seconds=10)
    schedules: dict[Name, str] = Field(
        default_factory=dict,
        description="backup schedules beside prefect.yaml's nightly one: name -> cron; a "
        "target joins one with `schedule: NAME` (runbook deploy adds deployment backup-NAME)",
    )

    @field_validator("schedules")
    @classmethod
    def _cron_expressions(cls, value: dict[str, str]) -> dict[str, str]:
        from cronsim import CronSim, CronSimError

        for name, cron in value.items():
            if name == DEFAULT_SCHEDULE:
                raise ValueError(
                    f"{name!r} is prefect.yaml's backup-nightly deployment; pick another name"
                )
            try:
                CronSim(cron, datetime.now(UTC))
            except (CronSimError, TypeError):
                raise ValueError(
                    f"{name}: {cron!r} is not a cron expression like '0 * * * *'"
                ) from None
        return value


# --- targets -------------------------------------------------------------------------------

DEFAULT_SCHEDULE = "nightly"  # prefect.yaml's backup-nightly: every target's unless set
ScheduleName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="the backup schedule this target follows: nightly or a name of "
        "backup.schedules",
    ),
]


class PostgresHealth(Model):
    """check_postgres-style checks with runbook defaults (003: idle connections over 1 h)."""

    enabled: bool = True
    connections: Threshold = _t(80, 95)  # % of max_connections in use
    long_query_minutes: float = Field(default=5, gt=0)
    long_queries: Threshold = _t(0, 5)  # queries running longer than long_query_minutes
    idle_in_transaction_minutes: float = Field(default=5, gt=0)
    idle_in_transaction: Threshold = _t(0, 5)
    idle_connection_hours: float = Field(default=1, gt=0)
    idle_connections: Threshold = _t(10, 50)  # idle longer than idle_connection_hours
    waiting_locks: Threshold = _t(0, 10)
    wraparound: Threshold = _t(50, 75)  # % of the 2^31 transaction-ID horizon used
    replication_lag_seconds: Threshold = _t(30, 300)
    inactive_slots: Threshold = _t(0, None)
    cache_hit_ratio: Threshold = _t(95, 90, "<")  # %
    dead_tuple_ratio: Threshold = _t(20, 40)  # % dead tuples of the worst table
    dead_tuple_min_rows: int = Field(default=10_000, ge=0)
    vacuum_age_days: Threshold = _t(7, 30)  # since last (auto)vacuum of the stalest table
    database_size_gb: Threshold = _t(None, None)  # report only unless set


class RedisHealth(Model):
    enabled: bool = True
    latency_ms: Threshold = _t(50, 200)
    memory: Threshold = _t(80, 95)  # % of maxmemory (when maxmemory is set)
    hit_rate: Threshold = _t(30, 10, "<")  # %, runbook 000: warn under 30 %
    evicted_keys: Threshold = _t(None, None)  # cumulative; report only unless set
    rejected_connections: Threshold = _t(0, 100)
    fragmentation: Threshold = _t(1.5, 2.0)  # allocator fragmentation ratio
    rdb_save_age_hours: Threshold = _t(25, 49)  # only when the server saves RDB files


class DrillServer(Model):
    """Where DR drills restore: a throwaway embedded PostgreSQL (default) or a team server."""

    server: Literal["embedded"] | None = "embedded"
    dsn: SecretStr | None = None
    jobs: int = Field(default=2, ge=1, le=64)

    @model_validator(mode="after")
    def _one_of(self) -> DrillServer:
        if self.dsn is not None:
            object.__setattr__(self, "server", None)
        return self


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
    health: PostgresHealth = Field(default_factory=PostgresHealth)

    @field_validator("dsn")
    @classmethod
    def _dsn_parses(cls, value: SecretStr) -> SecretStr:
        from psycopg.conninfo import conninfo_to_dict

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
    rpo: Duration | None = None


# --- health-only targets (issue: daily health) ----------------------------------------------


class HttpExpect(Model):
    status: int | list[int] = 200
    # dotted path -> expected value; '*' matches every item: {"status": "healthy",
    # "ready": true, "checks.*": true}
    json_: dict[str, Any] = Field(default_factory=dict, alias="json")
    body_contains: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class HttpTarget(Model):
    name: Name
    url: str
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    expect: HttpExpect = Field(default_factory=HttpExpect)
    timeout: Duration = timedelta(seconds=10)
    latency_seconds: Threshold = _t(1, 2)  # runbook 000: API responses under 2 s
    tls_days: Threshold = _t(30, 7, "<")  # certificate days left
    verify_tls: bool = True
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://host[:port]/path or https://...")
        return value


class LogPattern(Model):
    name: Name
    regex: str
    count: Threshold = _t(0, None)  # matches since the last run

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


def _default_log_patterns() -> list[LogPattern]:
    # Runbook 000's three greps.
    return [
        LogPattern(
            name="errors", regex=r"\b(ERROR|CRITICAL|FATAL)\b", count=Threshold(warn=0, critical=10)
        ),
        LogPattern(
            name="performance",
            regex=r"\b(SLOW|TIMEOUT|MEMORY)\b",
            count=Threshold(warn=5, critical=50),
        ),
        LogPattern(
            name="security",
            regex=r"\b(AUTH|UNAUTHORIZED|FORBIDDEN)\b",
            count=Threshold(warn=10, critical=100),
        ),
    ]


class LogsTarget(Model):
    name: Name
    paths: list[str] = Field(min_length=1, description="files or glob patterns")
    patterns: list[LogPattern] = Field(default_factory=_default_log_patterns)


class PromQuery(Model):
    name: Name
    query: str = Field(min_length=1)
    warn: float | None = None
    critical: float | None = None
    op: Literal[">", ">=", "<", "<="] = ">"
    unit: str = ""
    no_data: Literal["ok", "unknown", "warn", "critical"] = "unknown"

    @property
    def threshold(self) -> Threshold:
        return Threshold(warn=self.warn, critical=self.critical, op=self.op)


class PrometheusTarget(Model):
    name: Name
    url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    queries: list[PromQuery] = Field(min_length=1)


class KubernetesTarget(Model):
    name: Name
    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False
    api_url: str | None = None  # with token: talk to this API server directly
    token: SecretStr | None = None
    verify_tls: bool = True
    namespaces: list[str] = Field(default_factory=list, description="empty = all namespaces")
    restart_window: Duration = timedelta(hours=24)
    restarts: Threshold = _t(0, 5)  # container restarts within restart_window
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _token_needs_api_url(self) -> KubernetesTarget:
        if self.token is not None and self.api_url is None:
            raise ValueError("token is set but api_url is not: a token is only used with api_url")
        return self


class DockerTarget(Model):
    name: Name
    url: str = "unix:///var/run/docker.sock"
    project: str | None = Field(default=None, description="compose project label to filter on")
    restarts: Threshold = _t(0, 5)
    timeout: Duration = timedelta(seconds=10)


class HostTarget(Model):
    name: Name = "localhost"
    mounts: list[str] = Field(default_factory=list, description="empty = every real filesystem")
    disk: Threshold = _t(85, 90)  # % used: runbook 000 warns over 85 %, 004 pages under 10 % free
    inodes: Threshold = _t(85, 95)
    memory: Threshold = _t(90, 95)  # runbook 000: memory > 90 %
    load_per_core: Threshold = _t(1.5, 3.0)


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
ALL_KINDS = (
    "postgres",
    "redis",
    "files",
    "http",
    "logs",
    "prometheus",
    "kubernetes",
    "docker",
    "host",
)


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


class DrillSettings(Model):
    """Settings shared by every DR drill (per-target ones sit in targets.*.drill)."""

    data_docs: Path | None = Field(
        default=None,
        description="keep Great Expectations Data Docs here, one folder per drill "
        "(<data_docs>/<drill id>/index.html); the GX result itself is always kept in the catalog",
    )


class WebhookSettings(Model):
    url: SecretStr
    min_status: Literal["warn", "critical"] = "warn"
    timeout: Duration = timedelta(seconds=10)


class PushgatewaySettings(Model):
    url: str
    job: str = "runbook"
    timeout: Duration = timedelta(seconds=10)


class Notifications(Model):
    webhook: WebhookSettings | None = None
    pushgateway: PushgatewaySettings | None = None


class Config(Model):
    catalog: str = "sqlite:///.runbook/catalog.db"
    storage: Storage = Field(
        default_factory=lambda: LocalStorage(kind="local", path=Path(".runbook/backups"))
    )
    retention: Retention = Field(default_factory=Retention)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    timezone: str = "UTC"
    targets: Targets = Field(default_factory=Targets)
    health: HealthSettings = Field(default_factory=HealthSettings)
    drills: DrillSettings = Field(default_factory=DrillSettings)
    notifications: Notifications = Field(default_factory=Notifications)
    _source: Path | None = PrivateAttr(default=None)  # the file it came from

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {value!r} (use an IANA name like Europe/Berlin)"
            ) from None
        return value

    @field_validator("catalog")
    @classmethod
    def _catalog_url(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("expected sqlite:///path or postgresql+psycopg://user@host/db")
        return value

    @model_validator(mode="after")
    def _unique_target_names(self) -> Config:
        seen: dict[str, str] = {}
        for kind in ALL_KINDS:
            for index, target in enumerate(getattr(self.targets, kind)):
                where = f"targets.{kind}[{index}]"
                if target.name in seen:
                    raise ValueError(
                        f"{where}.name: {target.name!r} is already used by {seen[target.name]}"
                    )
                seen[target.name] = where
        return self

    @model_validator(mode="after")
    def _known_schedules(self) -> Config:
        known = {DEFAULT_SCHEDULE, *self.backup.schedules}
        for kind in BACKUP_KINDS:
            for index, target in enumerate(getattr(self.targets, kind)):
                if target.schedule not in known:
                    raise ValueError(
                        f"targets.{kind}[{index}].schedule: unknown schedule "
                        f"{target.schedule!r} (use {', '.join(sorted(known))}, or add it "
                        "under backup.schedules with a cron expression)"
                    )
        return self

    # --- lookups ------------------------------------------------------------------------

    def backup_targets(self) -> list[TargetConfig]:
        return [*self.targets.postgres, *self.targets.redis, *self.targets.files]

    def target(self, name: str) -> TargetConfig:
        """A backup target by name (postgres, redis or files)."""
        for target in self.backup_targets():
            if target.name == name:
                return target
        known = ", ".join(t.name for t in self.backup_targets()) or "none configured"
        raise NotFoundError(f"unknown backup target {name!r} (backup targets: {known})")

    def select_targets(
        self, names: list[str] | None, schedule: str | None = None
    ) -> list[TargetConfig]:
        """The named backup targets; else those following `schedule`; else all of them."""
        if names:
            return [self.target(name) for name in names]
        if schedule:
            if schedule not in {DEFAULT_SCHEDULE, *self.backup.schedules}:
                known = ", ".join(sorted({DEFAULT_SCHEDULE, *self.backup.schedules}))
                raise NotFoundError(f"unknown backup schedule {schedule!r} (schedules: {known})")
            return [t for t in self.backup_targets() if t.schedule == schedule]
        return self.backup_targets()

    @property
    def state_dir(self) -> Path:
        """Where Runbook keeps local state (locks) beside the config file."""
        base = self._source.parent if self._source else Path.cwd()
        return base / ".runbook"

    @property
    def source(self) -> Path | None:
        return self._source


# --- loading -------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, path: str, unset: list[str] | None = None) -> Any:
    """Expand ${VAR} references. An unset variable without a default is an error, unless
    `unset` collects its name (check-config on a machine without the flows' secrets): then it
    expands to an empty string."""
    if isinstance(value, dict):
        return {k: _expand(v, _join(path, str(k)), unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", unset) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        if unset is not None:
            unset.append(name)
            return ""
        raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set")

    return _ENV_REF.sub(substitute, value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _loc_to_path(loc: tuple[Any, ...], data: Any) -> str:
    """('targets','postgres',0,'dsn') -> 'targets.postgres[0].dsn'; drops union tags."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and part in ("local", "s3"):
            continue  # discriminator tag inserted by pydantic, not a key of the file
        out = _join(out, str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return out or "<root>"


def format_validation_error(error: ValidationError, data: Any) -> str:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        message = item["msg"]
        if item["type"] == "string_pattern_mismatch" and item["loc"][-1] == "name":
            message = (
                "use lowercase letters, digits, '-' and '_' (at most 63, starting alphanumeric)"
            )
        elif item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see runbook.example.yaml)"
        elif item["type"] == "missing":
            message = "field required"
        message = message.removeprefix("Value error, ")
        path = _loc_to_path(tuple(item["loc"]), data)
        if message.startswith(("targets.", "storage.")) and ": " in message:
            problems.append(message)  # model validators already name the field
        else:
            problems.append(f"{path}: {message}")
    return "; ".join(problems)


def resolve_config_path(path: str | Path | None) -> Path:
    return Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_config(path: str | Path | None = None, unset: list[str] | None = None) -> Config:
    """Read, expand and validate a config file. Raises ConfigError naming the field at fault.
    With `unset` (a list), unset ${VAR}s are collected there instead of failing."""
    file = resolve_config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: config file not found (pass --config FILE or set ${CONFIG_ENV}; "
            "runbook.example.yaml is a complete example)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from None
    return parse_config(text, source=file, unset=unset)


def parse_config(
    text: str, source: Path | None = None, unset: list[str] | None = None
) -> Config:
    label = str(source) if source else "config"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{label}: {problem}{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{label}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        data = _expand(data, "", unset)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc, data)
        if unset:
            problems += f" (with {', '.join(sorted(set(unset)))} unset, read as empty)"
        raise ConfigError(f"{label}: {problems}") from None
    if source is not None:
        config = _resolve_paths(config, source.resolve())
    return config


def _resolve_paths(config: Config, source: Path) -> Config:
    base = source.parent

    def absolute(path: Path) -> Path:
        path = path.expanduser()
        return path if path.is_absolute() else base / path

    storage = config.storage
    if isinstance(storage, LocalStorage):
        storage = storage.model_copy(update={"path": absolute(storage.path)})
    catalog = config.catalog
    if catalog.startswith("sqlite:///") and not catalog.startswith("sqlite:////"):
        relative = catalog.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            catalog = f"sqlite:///{absolute(Path(relative))}"

    def maybe(path: Path | None) -> Path | None:
        return absolute(path) if path is not None else None

    t = config.targets
    targets = t.model_copy(
        update={
            "files": [
                f.model_copy(update={"paths": [absolute(p) for p in f.paths]}) for f in t.files
            ],
            "logs": [  # globs too: a relative pattern is relative to the config file
                g.model_copy(update={"paths": [str(absolute(Path(p))) for p in g.paths]})
                for g in t.logs
            ],
            "postgres": [p.model_copy(update={"bin_dir": maybe(p.bin_dir)}) for p in t.postgres],
            "http": [h.model_copy(update={"ca_file": maybe(h.ca_file)}) for h in t.http],
            "kubernetes": [
                k.model_copy(update={"kubeconfig": maybe(k.kubeconfig)}) for k in t.kubernetes
            ],
        }
    )
    drills = config.drills.model_copy(update={"data_docs": maybe(config.drills.data_docs)})
    resolved = config.model_copy(
        update={"storage": storage, "catalog": catalog, "targets": targets, "drills": drills}
    )
    resolved._source = source
    return resolved
