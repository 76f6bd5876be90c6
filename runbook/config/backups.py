"""How backups are taken and kept: the `backup` section (compression, locks, timeouts, retries,
named schedules) and the `retention` policy (grandfather-father-son)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from cronsim import CronSim, CronSimError
from pydantic import Field, field_validator

from runbook.config.core import Duration, Model, Name

DEFAULT_SCHEDULE = "nightly"  # prefect.yaml's backup-nightly: every target's unless set
ScheduleName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="the backup schedule this target follows: nightly or a name of "
        "backup.schedules",
    ),
]


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
