"""A benchmark database of at least 1.5 GB that compresses like real data.

`pgbench -i -s 30` (3 million narrow account rows) plus an `events` table: 3 million rows
(more if the size target needs them) with an md5 digest, a short label and a small jsonb
document each. A marker table records the build parameters; a database without a matching,
complete marker is dropped and rebuilt.

Run: python -m benchmarks.dataset
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DBNAME = "runbook_bench"
MIN_SIZE = 1_500_000_000  # bytes, pg_database_size
PARAMS = {"version": 1, "pgbench_scale": 30, "event_rows": 3_000_000, "batch_rows": 500_000}

_EVENTS_DDL = """
CREATE TABLE events (
    id bigint PRIMARY KEY,
    account_id integer NOT NULL,
    created_at timestamptz NOT NULL,
    digest text NOT NULL,
    label text NOT NULL,
    doc jsonb NOT NULL
)
"""

# Deterministic but varied rows: md5 digests barely compress, labels and jsonb keys do.
_EVENTS_FILL = """
INSERT INTO events
SELECT i,
       1 + (i * 7919) %% 3000000,
       timestamptz '2024-01-01' + i * interval '997 milliseconds',
       md5(i::text),
       (ARRAY['login', 'logout', 'purchase', 'refund', 'view', 'search'])[1 + i %% 6]
           || ' from ' || (ARRAY['web', 'ios', 'android', 'api'])[1 + (i / 7) %% 4],
       jsonb_build_object(
           'kind', (ARRAY['a', 'b', 'c', 'd'])[1 + i %% 4],
           'amount', round(((i * 37) %% 100000) / 100.0, 2),
           'tags', jsonb_build_array('t' || i %% 17, 't' || i %% 23),
           'ok', i %% 7 <> 0,
           'ref', substr(md5((i * 3)::text), 1, 12))
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
"""


def _bench_dsn(dsn_admin: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn_admin)
    params["dbname"] = dbname
    return make_conninfo(**params)


def scaled_params(scale: float) -> dict:
    """PARAMS for a database `scale` times the full size (benchmarks that only need a few
    hundred MB, e.g. the validation breakdown, build one at 0.25)."""
    if scale == 1:
        return dict(PARAMS)
    return {
        **PARAMS,
        "pgbench_scale": max(1, round(PARAMS["pgbench_scale"] * scale)),
        "event_rows": max(1, round(PARAMS["event_rows"] * scale)),
        "batch_rows": max(1, round(PARAMS["batch_rows"] * scale)),
        "scale": scale,
    }


def _marker(dsn: str, params: dict) -> dict | None:
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            row = conn.execute("SELECT params, facts FROM bench_marker WHERE complete").fetchone()
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return None
    if row is None:
        return None
    found, facts = row
    return facts if found == params else None


def _size_facts(conn: psycopg.Connection, dbname: str) -> dict:
    size = conn.execute("SELECT pg_database_size(%s)", (dbname,)).fetchone()[0]
    tables = dict(
        conn.execute(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        ).fetchall()
    )
    events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    return {"dbname": dbname, "database_bytes": size, "event_rows": events, "tables": tables}


def _build(dsn_admin: str, dbname: str, dsn: str, params: dict, min_size: int) -> dict:
    started = time.monotonic()
    with psycopg.connect(dsn_admin, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    print(f"[dataset] pgbench -i -s {params['pgbench_scale']}", file=sys.stderr, flush=True)
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(params["pgbench_scale"]), dsn],
        check=True,
        timeout=3600,
        stdout=subprocess.DEVNULL,
    )
    batch = params["batch_rows"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_EVENTS_DDL)
        conn.execute(
            "CREATE TABLE bench_marker (params jsonb, facts jsonb, complete boolean NOT NULL)"
        )
        rows = 0
        while True:
            if rows >= params["event_rows"]:
                size = conn.execute("SELECT pg_database_size(%s)", (dbname,)).fetchone()[0]
                if size >= min_size:
                    break
            conn.execute(_EVENTS_FILL, {"first": rows + 1, "last": rows + batch})
            rows += batch
            print(f"[dataset] events: {rows} rows", file=sys.stderr, flush=True)
        # Hint bits and visibility maps now, so the first timed pg_dump does not write pages.
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("CHECKPOINT")
        facts = _size_facts(conn, dbname)
        facts["build_seconds"] = round(time.monotonic() - started, 1)
        conn.execute(
            "INSERT INTO bench_marker VALUES (%s, %s, true)",
            (json.dumps(params), json.dumps(facts)),
        )
    return facts


def ensure_dataset(dsn_admin: str = ADMIN_DSN, dbname: str = DBNAME, scale: float = 1) -> dict:
    """Build the benchmark database unless a complete one with these parameters exists;
    `scale` < 1 builds a smaller one (about scale x 1.5 GB) for breakdowns.

    Returns size facts: database_bytes, event_rows, per-table bytes, dsn.
    """
    dsn = _bench_dsn(dsn_admin, dbname)
    params, min_size = scaled_params(scale), int(MIN_SIZE * scale)
    facts = _marker(dsn, params)
    if facts is None:
        facts = _build(dsn_admin, dbname, dsn, params, min_size)
    if facts["database_bytes"] < min_size:
        raise RuntimeError(f"{dbname} is only {facts['database_bytes']} bytes; drop it to rebuild")
    return {**facts, "dsn": dsn}


if __name__ == "__main__":
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
    print(json.dumps(ensure_dataset(), indent=2))
