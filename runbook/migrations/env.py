"""Alembic environment: runs on the connection the catalog hands over (runbook.catalog.migrate).

For `alembic revision --autogenerate` during development, set RUNBOOK_CATALOG_URL.
"""

import os

from alembic import context
from sqlalchemy import create_engine

from runbook.catalog.db import Base

target_metadata = Base.metadata


def run_with(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch ALTERs
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_with(connection)
else:
    engine = create_engine(os.environ.get("RUNBOOK_CATALOG_URL", "sqlite:///.runbook/catalog.db"))
    with engine.begin() as conn:
        run_with(conn)
