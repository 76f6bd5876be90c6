"""PostgreSQL's capacity figures: the database's size, its largest tables (runbook 003's
`pg_total_relation_size`: heap, TOAST and indexes) and indexes, connections against
max_connections."""

from __future__ import annotations

from datetime import datetime

from runbook.catalog import Sample
from runbook.config import PostgresTarget
from runbook.systems.postgres import connect
from tasks.capacity.samples import sample

_DATABASE = "SELECT pg_database_size(current_database())"
_CONNECTIONS = """
    SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
           current_setting('max_connections')::int
"""
# Runbook 003: SELECT ... pg_total_relation_size(schemaname||'.'||tablename) ... ORDER BY 3 DESC
_TABLES = """
    SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
    ORDER BY 2 DESC, 1 LIMIT %s
"""
_INDEXES = """
    SELECT n.nspname || '.' || c.relname, pg_relation_size(c.oid)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'i' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%%'
    ORDER BY 2 DESC, 1 LIMIT %s
"""


def collect_postgres(target: PostgresTarget, top: int, at: datetime) -> list[Sample]:
    """Samples of one PostgreSQL target, all measured in one read-only session."""
    dsn = target.dsn.get_secret_value()
    with connect(dsn, connect_timeout=target.connect_timeout.total_seconds()) as conn:
        conn.read_only = True
        size = conn.execute(_DATABASE).fetchone()[0]
        used, allowed = conn.execute(_CONNECTIONS).fetchone()
        tables = conn.execute(_TABLES, (top,)).fetchall() if top else []
        indexes = conn.execute(_INDEXES, (top,)).fetchall() if top else []
    name = target.name
    found = [
        sample(name, "database", "postgres.database", size, at=at, unit="bytes"),
        sample(
            name,
            "connections",
            "postgres.connections",
            used,
            at=at,
            limit=allowed,
            unit="connections",
        ),
    ]
    found += [
        sample(name, f"table/{table}", "postgres.table", bytes_, at=at, unit="bytes")
        for table, bytes_ in tables
    ]
    found += [
        sample(name, f"index/{index}", "postgres.index", bytes_, at=at, unit="bytes")
        for index, bytes_ in indexes
    ]
    return found
