"""The catalog: Runbook's system of record (SQLAlchemy 2, SQLite by default, PostgreSQL too),
one module per aggregate: backups (with their artifacts and verifications), drills, health.
"""

from runbook.catalog.backups import (
    COMMITTED,
    UNSUCCESSFUL,
    ArtifactRecord,
    BackupRecord,
    BackupStatus,
    Catalog,
    VerificationRecord,
)
from runbook.catalog.db import HEAD_REVISION, MIGRATIONS, Base, current_revision, migrate, utcnow
from runbook.catalog.drills import DrillCheckRecord, DrillLog, DrillRecord
from runbook.catalog.health import HealthHistory, StoredCheck

__all__ = [
    "COMMITTED",
    "HEAD_REVISION",
    "MIGRATIONS",
    "current_revision",
    "UNSUCCESSFUL",
    "ArtifactRecord",
    "BackupRecord",
    "BackupStatus",
    "Base",
    "Catalog",
    "DrillCheckRecord",
    "DrillLog",
    "DrillRecord",
    "HealthHistory",
    "StoredCheck",
    "VerificationRecord",
    "migrate",
    "utcnow",
]
