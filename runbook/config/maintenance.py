"""Maintenance windows: the `maintenance` section (runbook 000's weekly Sunday 2-4 AM and
monthly first Sunday 2-6 AM windows, runbook 001/003's VACUUM ANALYZE and idle connections),
with the runbooks' values as defaults."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from runbook.config.core import Duration, Model

# Every PostgreSQL procedure the windows know (tasks/maintenance/registry.py maps them).
PROCEDURES = ("vacuum", "reindex", "idle_connections", "analyze_stale", "query_baseline")
Procedure = Literal["vacuum", "reindex", "idle_connections", "analyze_stale", "query_baseline"]


class WindowSettings(Model):
    duration: Duration = Field(
        description="the window's budget: no action starts that would overrun it"
    )
    procedures: list[Procedure] = Field(default_factory=lambda: list(PROCEDURES))
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

    @field_validator("windows")
    @classmethod
    def _known_windows(cls, value: dict[str, WindowSettings]) -> dict[str, WindowSettings]:
        # A partial `windows:` keeps the defaults of the windows it does not mention.
        return {**_default_windows(), **value}
