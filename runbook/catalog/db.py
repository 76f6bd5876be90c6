"""The catalog's database: engine, UTC timestamps, the declarative base and the Alembic
migrations (runbook/migrations) that create and upgrade the schema.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DateTime,
    TypeDecorator,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import (
    DeclarativeBase,
)

from runbook.errors import RunbookError


class CatalogUnreadable(RunbookError):
    """The catalog's file exists but is not an SQLite database (a wrong `catalog:` path)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


MIGRATIONS = Path(__file__).parents[1] / "migrations"


# The newest migration; a test keeps it equal to Alembic's head. When the database is already
# there, opening the catalog skips importing Alembic (read-only commands must start fast).
HEAD_REVISION = "0010"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def current_revision(engine: Engine) -> str | None:
    try:
        connection = engine.connect()
    except DatabaseError as exc:
        raise _unreadable(engine, exc) from None
    with connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _unreadable(engine: Engine, exc: DatabaseError) -> Exception:
    """A catalog file that SQLite cannot open as a database: one line naming it; anything
    else (a PostgreSQL server that refuses us) is re-raised as it is."""
    problem = str(getattr(exc, "orig", exc))
    if engine.dialect.name != "sqlite" or "not a database" not in problem:
        return exc
    return CatalogUnreadable(
        f"catalog {engine.url.database}: not a database ({problem}); point `catalog` in "
        "runbook.yaml at the catalog's SQLite file, or move this file away to start a new one"
    )


MIGRATION_LOCK_SECONDS = 300.0


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision; one process at a time (a worker that
    starts two flow runs on a new catalog would otherwise create its tables twice)."""
    if current_revision(engine) == HEAD_REVISION:
        return
    # Alembic only when there is something to migrate: read-only commands must start fast.
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415

    from runbook.locks import named_lock  # noqa: PLC0415 - psycopg, only when migrating

    url = engine.url.render_as_string(hide_password=False)
    with named_lock(url, "catalog-migration", MIGRATION_LOCK_SECONDS):
        if current_revision(engine) == HEAD_REVISION:
            return  # another process migrated it while this one waited
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
