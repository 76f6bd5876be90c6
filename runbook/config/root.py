"""The root of runbook.yaml: every section, the checks that span sections (target names
unique, schedules known) and the lookups the flows and the CLI use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, field_validator, model_validator

from runbook.config.backups import DEFAULT_SCHEDULE, BackupSettings, Retention
from runbook.config.capacity import CapacitySettings
from runbook.config.core import Model
from runbook.config.diagnostics import DiagnosticsSettings
from runbook.config.drills import DrillSettings
from runbook.config.health import HealthSettings
from runbook.config.maintenance import MaintenanceSettings
from runbook.config.notifications import Notifications
from runbook.config.report import ReportSettings
from runbook.config.storage import LocalStorage, ResultStorage, Storage
from runbook.config.targets import ALL_KINDS, BACKUP_KINDS, TargetConfig, Targets
from runbook.errors import NotFoundError


class Config(Model):
    catalog: str = "sqlite:///.runbook/catalog.db"
    storage: Storage = Field(
        default_factory=lambda: LocalStorage(kind="local", path=Path(".runbook/backups"))
    )
    result_storage: ResultStorage | None = None  # Prefect's results (README, "Deploy")
    retention: Retention = Field(default_factory=Retention)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    timezone: str = "UTC"
    targets: Targets = Field(default_factory=Targets)
    health: HealthSettings = Field(default_factory=HealthSettings)
    drills: DrillSettings = Field(default_factory=DrillSettings)
    notifications: Notifications = Field(default_factory=Notifications)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    diagnostics: DiagnosticsSettings = Field(default_factory=DiagnosticsSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    _source: Path | None = PrivateAttr(default=None)  # the file it came from

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
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

    def _target_references(self) -> Iterator[tuple[str, str, str]]:
        """(field, kind, name) for every name elsewhere in the config that must be a target
        of that kind."""
        for index, objects in enumerate(self.targets.kubernetes_objects):
            yield f"targets.kubernetes_objects[{index}].cluster", "kubernetes", objects.cluster
        for index, series in enumerate(self.capacity.series):
            yield f"capacity.series[{index}].prometheus", "prometheus", series.prometheus
        drift = self.maintenance.config_drift
        for kind in ("postgres", "redis", "prometheus"):
            for name in getattr(drift, kind):
                yield f"maintenance.config_drift.{kind}.{name}", kind, name
        for name in self.maintenance.rollout_restart.targets:
            yield f"maintenance.rollout_restart.targets.{name}", "kubernetes", name
        for index, logs in enumerate(self.targets.logs):
            for kind in ("docker", "kubernetes"):
                for number, source in enumerate(getattr(logs, kind)):
                    yield f"targets.logs[{index}].{kind}[{number}].target", kind, source.target

    @model_validator(mode="after")
    def _known_target_references(self) -> Config:
        for where, kind, name in self._target_references():
            known = [t.name for t in getattr(self.targets, kind)]
            if name not in known:
                raise ValueError(
                    f"{where}: no {kind} target named {name!r} "
                    f"(targets.{kind}: {', '.join(known) or 'none'})"
                )
        return self

    @model_validator(mode="after")
    def _known_hourly_sources(self) -> Config:
        known = [s.name for s in self.capacity.series]
        for kind in ("postgres", "redis", "host", "kubernetes", "docker"):
            known += [t.name for t in getattr(self.targets, kind)]
        for index, name in enumerate(self.capacity.hourly):
            if name not in known:
                raise ValueError(
                    f"capacity.hourly[{index}]: no postgres, redis, host, kubernetes or docker "
                    f"target and no capacity.series named {name!r} "
                    f"(known: {', '.join(known) or 'none'})"
                )
        return self

    @model_validator(mode="after")
    def _known_report_routes(self) -> Config:
        known = [r.name for r in self.notifications.routes_in_effect()]
        for index, name in enumerate(self.report.daily.routes):
            if name not in known:
                raise ValueError(
                    f"report.daily.routes[{index}]: no notification route named {name!r} "
                    f"(routes: {', '.join(known) or 'none'})"
                )
        return self

    # --- lookups ------------------------------------------------------------------------

    def backup_targets(self) -> list[TargetConfig]:
        targets = self.targets
        return [
            *targets.postgres,
            *targets.redis,
            *targets.files,
            *targets.prometheus_tsdb,
            *targets.kubernetes_objects,
        ]

    def target(self, name: str) -> TargetConfig:
        """A backup target by name (postgres, redis, files, prometheus_tsdb or
        kubernetes_objects)."""
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
