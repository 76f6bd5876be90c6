"""What the PostgreSQL procedures (vacuum, analyze_stale, reindex, invalid_indexes) share: the
pg_stat figures of each table, the thresholds that make a table a VACUUM or an ANALYZE
candidate (one home, so analyze_stale leaves alone exactly the tables vacuum takes), the
pgstattuple extension's availability, and the estimate of an action's duration from the size
it works through and from the ledger's past runs of the same action.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from runbook.catalog.maintenance import MaintenanceAction
from runbook.config.maintenance import AnalyzeSettings, MaintenanceSettings, VacuumSettings
from runbook.formatting import span
from tasks.maintenance.procedure import MaintenanceSession

# PostgreSQL's autovacuum_analyze_threshold: fewer changed rows never make statistics stale.
ANALYZE_MIN_CHANGES = 50

# ANALYZE reads at most 300 x default_statistics_target (100) pages, whatever the table size.
ANALYZE_SAMPLE_BYTES = 30_000 * 8192

# What the window's statements run with, so that the clients keep most of the machine: index
# builds and index vacuuming on one core (no parallel workers); full-page images in the WAL
# compressed (a REINDEX writes its whole index to the WAL, and every client commit waits for
# the WAL before it to be flushed); plain VACUUM paced by the cost-based delay (autovacuum's
# mechanism at twice its default budget per pause: about 50 MB/s on the benchmark machine).
# Alternatives are tried in order; a setting the server refuses (wal_compression needs
# superuser or GRANT SET) is left as it is. Not for VACUUM FULL: its exclusive lock is better
# held briefly.
GENTLE_REINDEX: dict[str, tuple[str, ...]] = {
    "max_parallel_maintenance_workers": ("0",),
    "wal_compression": ("lz4", "pglz"),
}
GENTLE_VACUUM: dict[str, tuple[str, ...]] = {
    **GENTLE_REINDEX,
    "vacuum_cost_delay": ("2ms",),
    "vacuum_cost_limit": ("400",),
}

# Throughputs for a first estimate, before the ledger knows how long the action took here:
# deliberately low (cold cache, busy disks) so the window's budget errs towards deferring.
VACUUM_BYTES_PER_SECOND = 40e6  # table + indexes, paced by GENTLE_VACUUM
VACUUM_FULL_BYTES_PER_SECOND = 30e6  # rewrite + index rebuilds
ANALYZE_BYTES_PER_SECOND = 100e6  # of the sampled pages
REINDEX_BYTES_PER_SECOND = 100e6  # table + index: two table scans, a sort and a build


@dataclass(frozen=True)
class TableStats:
    """One table as pg_stat_user_tables and pg_class see it (ages in seconds, None = never)."""

    schema: str
    name: str
    live_tuples: int
    dead_tuples: int
    modified_since_analyze: int
    inserted_since_vacuum: int  # PG13+; 0 on older servers
    reltuples: float  # -1 (PG14+) or 0 when never vacuumed or analyzed
    vacuum_age: float | None  # since the last VACUUM, manual or autovacuum
    analyze_age: float | None
    last_analyzed: str | None  # when (ISO 8601), to tell an ANALYZE since the plan
    stats_age: float  # since the statistics began (stats reset, else server start)
    stats_since: str  # "server start" or "statistics reset"
    table_bytes: int  # pg_table_size: heap, TOAST, free space and visibility maps
    index_bytes: int
    updates: int  # cumulative n_tup_upd, n_tup_hot_upd, n_tup_del
    hot_updates: int
    deletes: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def row_basis(self) -> float:
        """Rows the statistics describe: reltuples once known, else the live count."""
        return self.reltuples if self.reltuples > 0 else float(self.live_tuples)


@dataclass(frozen=True)
class PastRun:
    """A done action of the same procedure on the same object, from the ledger."""

    seconds: float
    work_bytes: int  # the size it worked through (from its `before` figures)


_TABLE_STATS = """
SELECT t.schemaname, t.relname, t.n_live_tup, t.n_dead_tup, t.n_mod_since_analyze,
       coalesce((to_jsonb(t) ->> 'n_ins_since_vacuum')::bigint, 0),
       c.reltuples::float8,
       extract(epoch FROM now() - greatest(t.last_vacuum, t.last_autovacuum))::float8,
       extract(epoch FROM now() - greatest(t.last_analyze, t.last_autoanalyze))::float8,
       to_char(greatest(t.last_analyze, t.last_autoanalyze) AT TIME ZONE 'UTC',
               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       extract(epoch FROM now() - coalesce(d.stats_reset, pg_postmaster_start_time()))::float8,
       CASE WHEN d.stats_reset IS NULL THEN 'server start' ELSE 'statistics reset' END,
       pg_table_size(c.oid), pg_indexes_size(c.oid),
       t.n_tup_upd, t.n_tup_hot_upd, t.n_tup_del
FROM pg_stat_user_tables t
JOIN pg_class c ON c.oid = t.relid
CROSS JOIN (SELECT stats_reset FROM pg_stat_database
            WHERE datname = current_database()) d
WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't'
ORDER BY t.schemaname, t.relname
"""


def table_stats(session: MaintenanceSession) -> list[TableStats]:
    """Every user table and materialized view of the target's database (temporary tables of
    other sessions excluded: no other session can vacuum them)."""
    return [TableStats(*row) for row in session.query(_TABLE_STATS)]


def table_stats_of(session: MaintenanceSession, schema: str, name: str) -> TableStats | None:
    """One table's current figures (after an action), or None when it is gone."""
    for stats in table_stats(session):
        if stats.schema == schema and stats.name == name:
            return stats
    return None


# --- pgstattuple -------------------------------------------------------------------------


@dataclass(frozen=True)
class Extension:
    """Whether pgstattuple's functions can be called here, and if not, what to do about it."""

    schema: str | None  # where its functions live; None = cannot be used
    note: str  # for reasons: what the figures come from

    @property
    def usable(self) -> bool:
        return self.schema is not None


def pgstattuple(session: MaintenanceSession) -> Extension:
    row = session.query(
        """
        SELECT n.nspname,
               has_function_privilege(
                   quote_ident(n.nspname) || '.pgstattuple_approx(regclass)', 'execute'),
               (SELECT count(*) FROM pg_available_extensions WHERE name = 'pgstattuple') > 0
        FROM (SELECT 1) one
        LEFT JOIN pg_extension e ON e.extname = 'pgstattuple'
        LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
        """
    )[0]
    schema, allowed, available = row
    if schema is not None and allowed:
        return Extension(schema, "pgstattuple")
    if schema is not None:
        return Extension(
            None,
            "pg_stat figures only: this role may not run pgstattuple (GRANT pg_stat_scan_tables)",
        )
    if available:
        return Extension(
            None,
            "pg_stat figures only: pgstattuple is not installed in this database "
            "(CREATE EXTENSION pgstattuple confirms the estimates)",
        )
    return Extension(None, "pg_stat figures only: pgstattuple is not available on this server")


def call_pgstattuple(
    session: MaintenanceSession, extension: Extension, function: str, relation: sql.Composable
) -> tuple[Any, ...] | None:
    """`SELECT * FROM <schema>.<function>(relation)`, or None when it cannot answer (the
    relation is gone, locked beyond lock_timeout, not of a kind it reads): the procedure then
    plans on the pg_stat figures. A broken connection still raises."""
    if extension.schema is None:
        return None
    statement = sql.SQL("SELECT * FROM {}({}::regclass)").format(
        sql.Identifier(extension.schema, function), relation
    )
    try:
        rows = session.query(statement)
    except psycopg.Error:
        if session.conn.broken:
            raise
        return None
    return rows[0] if rows else None


@contextmanager
def session_settings(
    session: MaintenanceSession, settings: dict[str, tuple[str, ...]]
) -> Iterator[dict[str, str]]:
    """SET each setting to the first of its values the server accepts, for the statements
    inside; then put back what was there. Yields what was set."""
    applied: dict[str, str] = {}
    previous: dict[str, str] = {}
    for name, values in settings.items():
        (current,) = session.query("SELECT current_setting(%s, true)", (name,))[0]
        if current is None:
            continue  # not a setting of this server
        for value in values:
            try:
                session.execute(
                    sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
                )
            except psycopg.Error:
                if session.conn.broken:
                    raise
                continue
            previous[name], applied[name] = current, value
            break
    try:
        yield applied
    finally:
        # Not after a stop closed the session: a second error here would hide the stop.
        if session.usable:
            for name, value in previous.items():
                session.execute(
                    sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
                )


def relation_literal(schema: str, name: str) -> sql.Composable:
    """A regclass argument built from identifiers: '"schema"."name"'."""
    return sql.Literal(sql.Identifier(schema, name).as_string(None))


# --- what makes a table a candidate --------------------------------------------------------


def dead_ratio_reason(live: int, dead: int, source: str, settings: VacuumSettings) -> str | None:
    """Dead tuples over the ratio (and over the minimum count), in numbers."""
    total = live + dead
    if total <= 0 or dead < settings.min_dead_tuples:
        return None
    percent = 100 * dead / total
    if percent < settings.dead_tuple_ratio:
        return None
    return (
        f"dead tuples {percent:.1f} % of {total:,} ({dead:,} dead, {source}) "
        f">= {settings.dead_tuple_ratio:g} %"
    )


def vacuum_age_reason(table: TableStats, settings: VacuumSettings) -> str | None:
    """Not vacuumed for `vacuum_age` while rows changed (a never-vacuumed table counts from
    the start of the statistics: PostgreSQL does not record when a table was created)."""
    changed = table.dead_tuples > 0 or table.inserted_since_vacuum > 0
    limit = settings.vacuum_age.total_seconds()
    age = table.vacuum_age if table.vacuum_age is not None else table.stats_age
    if not changed or age < limit:
        return None
    if table.vacuum_age is None:
        when = f"never vacuumed in the {span(age)} since {table.stats_since}"
    else:
        when = f"last vacuumed {span(age)} ago"
    changes = f"{table.dead_tuples:,} dead"
    if table.inserted_since_vacuum:
        changes += f", {table.inserted_since_vacuum:,} inserted since"
    return f"{when} >= {span(limit)} ({changes})"


def statistics_age_reason(table: TableStats, settings: AnalyzeSettings) -> str | None:
    """Statistics older than `stale_after` while rows changed, or none at all."""
    if table.analyze_age is None:
        rows = max(table.live_tuples, table.modified_since_analyze)
        if rows < ANALYZE_MIN_CHANGES:
            return None
        return f"never analyzed ({table.live_tuples:,} live rows, no statistics)"
    limit = settings.stale_after.total_seconds()
    if table.analyze_age < limit or table.modified_since_analyze <= 0:
        return None
    return (
        f"statistics {span(table.analyze_age)} old >= {span(limit)}, "
        f"{table.modified_since_analyze:,} rows changed since"
    )


def modified_fraction_reason(table: TableStats, settings: AnalyzeSettings) -> str | None:
    """More than `modified_fraction` of the rows changed since the last ANALYZE."""
    changed = table.modified_since_analyze
    if table.analyze_age is None or changed < ANALYZE_MIN_CHANGES:
        return None
    fraction = changed / max(table.row_basis, 1.0)
    if fraction < settings.modified_fraction:
        return None
    return (
        f"{100 * fraction:.1f} % of rows changed since the last analyze "
        f"({changed:,} of {table.row_basis:,.0f}) >= {100 * settings.modified_fraction:g} %"
    )


def vacuum_reasons(table: TableStats, settings: MaintenanceSettings) -> list[str]:
    """Why VACUUM (ANALYZE) this table, judged on pg_stat figures: dead-tuple ratio, vacuum
    age, or statistics age with dead tuples to remove (one pass does both)."""
    reasons = [
        dead_ratio_reason(table.live_tuples, table.dead_tuples, "pg_stat", settings.vacuum),
        vacuum_age_reason(table, settings.vacuum),
    ]
    if table.dead_tuples > 0:
        stale = statistics_age_reason(table, settings.analyze_stale)
        if stale:
            reasons.append(f"{stale}, with {table.dead_tuples:,} dead tuples to remove")
    return [reason for reason in reasons if reason]


def stale_statistics_reasons(table: TableStats, settings: AnalyzeSettings) -> list[str]:
    reasons = [statistics_age_reason(table, settings), modified_fraction_reason(table, settings)]
    return [reason for reason in reasons if reason]


# --- estimates ---------------------------------------------------------------------------


def past_runs(
    history: Sequence[MaintenanceAction], size_keys: Sequence[str], mode: str | None = None
) -> tuple[PastRun, ...]:
    """Durations of done runs of an action (the ledger's history of it, newest first), each
    with the size it worked through (the sum of `size_keys` of its `before`); `mode` keeps
    only runs of the same kind (a VACUUM FULL is not a plain VACUUM)."""
    runs = []
    for action in history[:5]:
        if mode is not None and action.before.get("mode") != mode:
            continue
        sizes = [action.before.get(key) for key in size_keys]
        if action.duration is None or not all(
            isinstance(size, int | float) and not isinstance(size, bool) for size in sizes
        ):
            continue
        work = int(sum(sizes))  # type: ignore[arg-type]
        if work > 0:
            runs.append(PastRun(float(action.duration), work))
    return tuple(runs)


def estimate_seconds(work_bytes: int, past: Sequence[PastRun], bytes_per_second: float) -> float:
    """Seconds for an action over `work_bytes`: at the median rate of its past runs on this
    object when the ledger has any, else at a conservative default rate."""
    rates = [run.seconds / run.work_bytes for run in past if run.work_bytes > 0]
    per_byte = statistics.median(rates) if rates else 1 / bytes_per_second
    return round(max(0.1, work_bytes * per_byte), 2)
