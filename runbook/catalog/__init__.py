"""The catalog: Runbook's system of record (SQLAlchemy 2, SQLite by default, PostgreSQL too),
one module per aggregate: backups (with their artifacts and verifications), drills, health.
"""

from runbook.catalog.backups import (
    COMMITTED,
    UNSUCCESSFUL,
    ArtifactRecord,
    BackupRecord,
    BackupStatus,
    BackupStep,
    BackupTransitionError,
    Catalog,
    VerificationRecord,
)
from runbook.catalog.db import HEAD_REVISION, MIGRATIONS, Base, current_revision, migrate, utcnow
from runbook.catalog.drills import (
    DrillCheck,
    DrillLog,
    DrillRecord,
    DrillResults,
    DrillStatus,
    DrillStep,
    DrillTransitionError,
)
from runbook.catalog.health import (
    HealthHistory,
    HealthRun,
    HealthRunStatus,
    HealthRunTransitionError,
    StoredCheck,
)

__all__ = [
    "COMMITTED",
    "HEAD_REVISION",
    "MIGRATIONS",
    "current_revision",
    "UNSUCCESSFUL",
    "ArtifactRecord",
    "BackupRecord",
    "BackupStatus",
    "BackupStep",
    "BackupTransitionError",
    "Base",
    "Catalog",
    "DrillCheck",
    "DrillLog",
    "DrillRecord",
    "DrillResults",
    "DrillStatus",
    "DrillStep",
    "DrillTransitionError",
    "HealthHistory",
    "HealthRun",
    "HealthRunStatus",
    "HealthRunTransitionError",
    "StoredCheck",
    "VerificationRecord",
    "migrate",
    "utcnow",
]
