"""runbook.yaml as pydantic models, one module per area:

- core: durations, names, the strict base model, Threshold
- storage, backups (backup settings, schedules, retention), drills, health (settings and the
  per-target health thresholds), notifications
- targets (PostgreSQL, Redis, files, and the `targets` section), health_targets (HTTP, logs,
  Prometheus, Kubernetes, Docker, host)
- root (Config, the whole file), loading (find, expand, validate, resolve paths)

- `${VAR}` and `${VAR:-default}` are expanded in every string value (`$$` is a literal `$`).
- DSNs, URLs with passwords and keys are `SecretStr`: they print as `**********`.
- Relative paths (local storage, SQLite catalog, files to back up) are resolved against the
  folder of the config file, so the command works from any working directory.
- Every error names the field path, e.g. `targets.postgres[0].dsn: field required`.

Everything is importable from `runbook.config` itself.
"""

from runbook.config.backups import DEFAULT_SCHEDULE, BackupSettings, Retention, ScheduleName
from runbook.config.capacity import CapacityPlan, CapacitySeries, CapacitySettings
from runbook.config.core import Duration, Model, Name, Threshold, parse_duration, threshold_field
from runbook.config.diagnostics import DebugEndpoint, DiagnosticsSettings
from runbook.config.drills import DrillServer, DrillSettings
from runbook.config.health import HealthSettings, PostgresHealth, RedisHealth
from runbook.config.health_targets import (
    AlertmanagerTarget,
    DockerLogSource,
    DockerTarget,
    HostTarget,
    HttpExpect,
    HttpTarget,
    KubernetesLogSource,
    KubernetesTarget,
    LogPattern,
    LogsTarget,
    PrometheusTarget,
    PromQuery,
)
from runbook.config.loading import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    format_validation_error,
    load_config,
    parse_config,
    resolve_config_path,
)
from runbook.config.maintenance import (
    PROCEDURES,
    AlertmanagerSilence,
    AnalyzeSettings,
    CommandSettings,
    CommandStep,
    ConfigDriftSettings,
    DockerCleanupSettings,
    HttpCall,
    IdleConnectionSettings,
    LogArchiveSettings,
    MaintenanceMode,
    MaintenanceSettings,
    QueryBaselineSettings,
    RedisCleanupSettings,
    ReindexSettings,
    RolloutRestartSettings,
    RolloutSelection,
    SecurityAuditSettings,
    VacuumSettings,
    WindowSettings,
)
from runbook.config.notifications import (
    EmailChannel,
    JsonWebhookChannel,
    Notifications,
    PushgatewaySettings,
    Route,
    SlackChannel,
    WebhookSettings,
)
from runbook.config.report import DailyReportSettings, ReportSettings
from runbook.config.restore import RedisRestoreSettings, RestoreHook, RestoreSettings
from runbook.config.root import Config
from runbook.config.storage import LocalStorage, ResultStorage, S3Storage, Storage
from runbook.config.targets import (
    ALL_KINDS,
    BACKUP_KINDS,
    TARGET_KIND,
    FilesTarget,
    KubernetesObjectsTarget,
    PostgresTarget,
    PrometheusTsdbTarget,
    RedisTarget,
    TargetConfig,
    Targets,
)

__all__ = [
    "RestoreHook",
    "RedisRestoreSettings",
    "RestoreSettings",
    "PROCEDURES",
    "AlertmanagerSilence",
    "CommandSettings",
    "CommandStep",
    "ConfigDriftSettings",
    "DockerCleanupSettings",
    "LogArchiveSettings",
    "RedisCleanupSettings",
    "SecurityAuditSettings",
    "AnalyzeSettings",
    "HttpCall",
    "IdleConnectionSettings",
    "QueryBaselineSettings",
    "ReindexSettings",
    "RolloutRestartSettings",
    "RolloutSelection",
    "VacuumSettings",
    "MaintenanceMode",
    "MaintenanceSettings",
    "WindowSettings",
    "ALL_KINDS",
    "BACKUP_KINDS",
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "DEFAULT_SCHEDULE",
    "TARGET_KIND",
    "BackupSettings",
    "CapacityPlan",
    "CapacitySeries",
    "CapacitySettings",
    "Config",
    "DailyReportSettings",
    "DebugEndpoint",
    "ReportSettings",
    "DiagnosticsSettings",
    "DockerTarget",
    "AlertmanagerTarget",
    "DockerLogSource",
    "KubernetesLogSource",
    "EmailChannel",
    "JsonWebhookChannel",
    "Route",
    "SlackChannel",
    "DrillServer",
    "DrillSettings",
    "Duration",
    "FilesTarget",
    "PrometheusTsdbTarget",
    "KubernetesObjectsTarget",
    "HealthSettings",
    "HostTarget",
    "HttpExpect",
    "HttpTarget",
    "KubernetesTarget",
    "LocalStorage",
    "LogPattern",
    "LogsTarget",
    "Model",
    "Name",
    "Notifications",
    "PostgresHealth",
    "PostgresTarget",
    "PromQuery",
    "PrometheusTarget",
    "PushgatewaySettings",
    "RedisHealth",
    "RedisTarget",
    "ResultStorage",
    "Retention",
    "S3Storage",
    "ScheduleName",
    "Storage",
    "TargetConfig",
    "Targets",
    "Threshold",
    "WebhookSettings",
    "format_validation_error",
    "load_config",
    "parse_config",
    "parse_duration",
    "resolve_config_path",
    "threshold_field",
]
