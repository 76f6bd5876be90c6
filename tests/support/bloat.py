"""A small bloated database for the maintenance window's tests: two tables over the vacuum
thresholds (autovacuum off, most rows deleted) and one under every threshold."""

from __future__ import annotations

import psycopg
from psycopg import sql

# table -> (rows, the share deleted after the load)
TABLES = {"big": (200_000, 0.6), "small": (20_000, 0.9), "healthy": (20_000, 0.0)}
OVER_THRESHOLDS = {"public.big", "public.small"}


def fill_bloated(dsn: str) -> None:
    """Load each table, VACUUM ANALYZE it (so only the deletes count), then delete; the
    statistics are flushed so the next session sees the dead tuples."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table, (rows, _) in TABLES.items():
            name = sql.Identifier(table)
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id bigint PRIMARY KEY, payload text NOT NULL)"
                    " WITH (autovacuum_enabled = false)"
                ).format(name)
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} SELECT i, md5(i::text) FROM generate_series(1, %s) i"
                ).format(name),
                (rows,),
            )
            conn.execute("SELECT pg_stat_force_next_flush()")
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(name))
        for table, (_, share) in TABLES.items():
            if share:
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE id %% 10 < %s").format(sql.Identifier(table)),
                    (round(share * 10),),
                )
        conn.execute("SELECT pg_stat_force_next_flush()")


def dead_tuples(dsn: str) -> dict[str, tuple[int, int]]:
    """schema.table -> (live, dead) as pg_stat_user_tables counts them."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || relname, n_live_tup, n_dead_tup FROM pg_stat_user_tables"
        ).fetchall()
    return {name: (live, dead) for name, live, dead in rows}
