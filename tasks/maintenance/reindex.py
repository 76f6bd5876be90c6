"""reindex and invalid_indexes: rebuild bloated indexes without blocking writes, and clean up
what an interrupted concurrent build left behind (pg_index_watch and pg_repack's habits).

reindex
- measure: every valid index of at least `reindex.min_bytes` with its table's live and dead
  tuples; `pgstatindex` for btree indexes where pgstattuple is installed; from the ledger, the
  bytes per row recorded after the index's last rebuild (pg_index_watch's baseline) and how
  long past rebuilds took.
- plan (PostgreSQL >= 12): `REINDEX INDEX CONCURRENTLY` for each index whose size against
  what a fresh build would take passes `reindex.bloat_ratio`, most bytes to reclaim first. A
  fresh build's size comes from pgstatindex (leaf pages, their density, the fillfactor; entries
  of the table's dead rows count as bloat: a rebuild, or the window's VACUUM before it, drops
  them), else from the baseline bytes per row times today's rows. An index with neither (not
  btree or no pgstattuple, and never rebuilt by a window) is not judged.
- apply: the REINDEX through MaintenanceSession.run (lock_timeout, retries), built on one core
  (no parallel workers: the clients keep the others). A lock timeout
  in its later phases leaves the unfinished `_ccnew` copy behind: every invalid index that
  appeared on the table during the apply is dropped again (DROP INDEX CONCURRENTLY). After
  figures: index bytes, rows, bytes per row (the next windows' baseline).

invalid_indexes (first in every window)
- measure: indexes with `indisvalid = false` (not those of a build running now).
- plan: `DROP INDEX CONCURRENTLY` each, the reason saying what left it: an interrupted REINDEX
  CONCURRENTLY (`_ccnew`: the unfinished new copy; `_ccold`: the old copy after the swap) or a
  failed CREATE INDEX CONCURRENTLY.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import ClassVar

from psycopg import sql

from runbook.catalog.maintenance import Figure, MaintenanceAction
from runbook.config import MaintenanceSettings, PostgresTarget
from runbook.formatting import human_bytes
from tasks.maintenance.procedure import MaintenanceSession, MeasureContext
from tasks.maintenance.relations import (
    GENTLE_REINDEX,
    REINDEX_BYTES_PER_SECOND,
    Extension,
    PastRun,
    call_pgstattuple,
    estimate_seconds,
    past_runs,
    pgstattuple,
    session_settings,
)

MIN_MAJOR = 12  # REINDEX CONCURRENTLY
SIZE_KEYS = ("table_bytes", "index_bytes")
DEFAULT_FILLFACTOR = 90  # btree
_LEFTOVER = re.compile(r"^(?P<base>.*)_cc(?P<kind>new|old)\d*$")


@dataclass(frozen=True)
class IndexPages:
    """pgstatindex of a btree index."""

    internal_pages: int
    leaf_pages: int
    empty_pages: int
    deleted_pages: int
    leaf_density: float | None  # % of leaf page space used; None for an empty index


@dataclass(frozen=True)
class Baseline:
    """Bytes per row recorded right after the index's last rebuild by a window."""

    bytes_per_row: float
    recorded: str  # when, for the reason


@dataclass(frozen=True)
class IndexStats:
    schema: str
    table: str
    name: str
    access_method: str
    index_bytes: int
    table_bytes: int
    live_tuples: int  # of the table (pg_stat), the rows bytes per row count
    dead_tuples: int
    reltuples: float  # of the table, when pg_stat has no live count
    hot_share: float  # share of the table's updates and deletes that were HOT updates
    fillfactor: int
    pages: IndexPages | None  # pgstatindex (btree with pgstattuple)
    baseline: Baseline | None
    past: tuple[PastRun, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def rows(self) -> float:
        return float(self.live_tuples) if self.live_tuples > 0 else max(self.reltuples, 0.0)


@dataclass(frozen=True)
class ReindexFacts:
    server_major: int
    block_size: int
    pgstattuple: Extension
    indexes: tuple[IndexStats, ...]


@dataclass(frozen=True)
class Bloat:
    ratio: float  # index bytes / bytes of a fresh build
    expected_bytes: int  # of a fresh build
    method: str  # "pgstatindex" or "bytes per row"
    detail: str


_INDEXES = """
SELECT n.nspname, t.relname, ic.relname, am.amname, pg_relation_size(ic.oid),
       pg_table_size(t.oid), coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
       t.reltuples::float8,
       coalesce(s.n_tup_hot_upd::float8 / nullif(s.n_tup_upd + s.n_tup_del, 0), 0),
       coalesce((SELECT option_value::int FROM pg_options_to_table(ic.reloptions)
                 WHERE option_name = 'fillfactor'), %s),
       ic.oid
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_am am ON am.oid = ic.relam
LEFT JOIN pg_stat_user_tables s ON s.relid = t.oid
WHERE ic.relkind = 'i' AND ic.relpersistence <> 't'
  AND i.indisvalid AND i.indisready AND i.indislive
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
  AND pg_relation_size(ic.oid) >= %s
  -- REINDEX CONCURRENTLY cannot rebuild an exclusion constraint's index
  AND NOT EXISTS (SELECT 1 FROM pg_constraint x WHERE x.conindid = ic.oid AND x.contype = 'x')
ORDER BY 1, 2, 3
"""


def index_bloat(index: IndexStats, block_size: int) -> Bloat | None:
    """How much larger the index is than a fresh build of it would be, or None when neither
    pgstatindex nor a baseline can tell."""
    pages = index.pages
    if pages is not None and pages.leaf_pages > 0 and pages.leaf_density is not None:
        dead_entries = index.dead_tuples * (1 - index.hot_share)  # HOT rows have no entry
        entries = index.live_tuples + dead_entries
        live_share = index.live_tuples / entries if index.live_tuples > 0 else 1.0
        if index.live_tuples == 0 and dead_entries > 0:
            live_share = 0.0  # every row is dead: a fresh build is nearly empty
        used_leaf = pages.leaf_pages * pages.leaf_density / 100
        fresh_leaf = used_leaf * live_share / (index.fillfactor / 100)
        fresh_pages = fresh_leaf * (1 + pages.internal_pages / pages.leaf_pages) + 1
        expected = int(max(fresh_pages, 2) * block_size)
        detail = f"pgstatindex: {pages.leaf_pages:,} leaf pages {pages.leaf_density:.0f} % full"
        if dead_entries >= 1:
            detail += (
                f", ~{100 * (1 - live_share):.0f} % of entries for dead rows "
                f"({index.dead_tuples:,} dead in the table)"
            )
        detail += f" -> a fresh build takes ~{human_bytes(expected)}"
        return Bloat(index.index_bytes / expected, expected, "pgstatindex", detail)
    if index.baseline is not None and index.rows > 0 and index.baseline.bytes_per_row > 0:
        per_row = index.index_bytes / index.rows
        expected = int(index.baseline.bytes_per_row * index.rows)
        detail = (
            f"{per_row:.1f} bytes per row ({index.rows:,.0f} rows) vs "
            f"{index.baseline.bytes_per_row:.1f} after its last rebuild "
            f"({index.baseline.recorded})"
        )
        return Bloat(per_row / index.baseline.bytes_per_row, expected, "bytes per row", detail)
    return None


def _baseline(history: list[MaintenanceAction]) -> Baseline | None:
    """The bytes per row recorded after the newest rebuild (history is newest first)."""
    for action in history:
        value = action.after.get("bytes_per_row")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            when = action.finished_at or action.started_at
            return Baseline(float(value), when.date().isoformat() if when else "a past window")
    return None


def _read_pages(session: MaintenanceSession, extension: Extension, oid: int) -> IndexPages | None:
    row = call_pgstattuple(session, extension, "pgstatindex", sql.Literal(oid))
    if row is None:
        return None
    # version, tree_level, index_size, root_block_no, internal_pages, leaf_pages, empty_pages,
    # deleted_pages, avg_leaf_density, leaf_fragmentation
    density = float(row[8])
    return IndexPages(
        int(row[4]), int(row[5]), int(row[6]), int(row[7]), None if density != density else density
    )


def reindex_statement(schema: str, index: str) -> sql.Composed:
    return sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(sql.Identifier(schema, index))


def drop_index_statement(schema: str, index: str) -> sql.Composed:
    return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, index))


class Reindex:
    name: ClassVar[str] = "reindex"
    destructive: ClassVar[bool] = False

    def measure(self, context: MeasureContext) -> ReindexFacts:
        session = context.session
        extension = pgstattuple(session)
        block_size = int(session.query("SELECT current_setting('block_size')")[0][0])
        indexes = []
        rows = session.query(_INDEXES, (DEFAULT_FILLFACTOR, context.settings.reindex.min_bytes))
        for schema, table, name, method, *figures, fillfactor, oid in rows:
            history = context.ledger.history(context.target.name, self.name, f"{schema}.{name}")
            pages = _read_pages(session, extension, oid) if method == "btree" else None
            indexes.append(
                IndexStats(
                    schema,
                    table,
                    name,
                    method,
                    *figures,
                    fillfactor=fillfactor,
                    pages=pages,
                    baseline=_baseline(history),
                    past=past_runs(history, SIZE_KEYS),
                )
            )
        return ReindexFacts(session.server_major, block_size, extension, tuple(indexes))

    def plan(
        self, facts: ReindexFacts, settings: MaintenanceSettings, target: PostgresTarget
    ) -> list[MaintenanceAction]:
        if facts.server_major < MIN_MAJOR:
            return []  # no REINDEX CONCURRENTLY: a plain REINDEX would block writes
        limit = settings.reindex.bloat_ratio
        planned: list[tuple[int, MaintenanceAction]] = []
        for index in facts.indexes:
            if index.index_bytes < settings.reindex.min_bytes:
                continue
            bloat = index_bloat(index, facts.block_size)
            if bloat is None or bloat.ratio < limit:
                continue
            reclaim = max(0, index.index_bytes - bloat.expected_bytes)
            statement = reindex_statement(index.schema, index.name)
            planned.append(
                (
                    reclaim,
                    MaintenanceAction(
                        procedure=self.name,
                        target=target.name,
                        object=index.qualified,
                        statement=statement.as_string(None),
                        reason=(
                            f"{bloat.detail}: {human_bytes(index.index_bytes)} now, bloat "
                            f"{bloat.ratio:.1f}x >= {limit:g}x, ~{human_bytes(reclaim)} to "
                            f"reclaim"
                        ),
                        estimate_seconds=estimate_seconds(
                            index.table_bytes + index.index_bytes,
                            index.past,
                            REINDEX_BYTES_PER_SECOND,
                        ),
                        before={
                            "schema": index.schema,
                            "table": index.table,
                            "index": index.name,
                            "method": bloat.method,
                            "bloat_ratio": round(bloat.ratio, 2),
                            "expected_bytes": bloat.expected_bytes,
                            "index_bytes": index.index_bytes,
                            "table_bytes": index.table_bytes,
                            "rows": int(index.rows),
                            "bytes_per_row": _per_row(index.index_bytes, index.rows),
                        },
                    ),
                )
            )
        planned.sort(key=lambda item: item[0], reverse=True)
        return [action for _, action in planned]

    def apply(self, session: MaintenanceSession, action: MaintenanceAction) -> dict[str, Figure]:
        schema, table = str(action.before["schema"]), str(action.before["table"])
        index = str(action.before["index"])
        invalid_before = _invalid_indexes_of(session, schema, table)
        try:
            with session_settings(session, GENTLE_REINDEX):
                attempts = session.run(reindex_statement(schema, index))
        except Exception:
            if session.usable:
                # What cannot be dropped now, the next window's invalid_indexes drops.
                with contextlib.suppress(Exception):
                    _drop_new_invalid(session, schema, table, invalid_before)
            raise
        dropped = _drop_new_invalid(session, schema, table, invalid_before)
        index_bytes, rows = session.query(
            """
            SELECT pg_relation_size(ic.oid),
                   coalesce(nullif(s.n_live_tup, 0)::float8, greatest(t.reltuples, 0))
            FROM pg_class ic
            JOIN pg_namespace n ON n.oid = ic.relnamespace
            JOIN pg_index i ON i.indexrelid = ic.oid
            JOIN pg_class t ON t.oid = i.indrelid
            LEFT JOIN pg_stat_user_tables s ON s.relid = t.oid
            WHERE n.nspname = %s AND ic.relname = %s
            """,
            (schema, index),
        )[0]
        return {
            "index_bytes": index_bytes,
            "rows": int(rows),
            "bytes_per_row": _per_row(index_bytes, rows),
            "attempts": attempts,
            "leftovers_dropped": dropped,
        }


def _per_row(index_bytes: int, rows: float) -> float | None:
    return round(index_bytes / rows, 3) if rows > 0 else None


def _invalid_indexes_of(session: MaintenanceSession, schema: str, table: str) -> set[str]:
    rows = session.query(
        """
        SELECT ic.relname FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = %s AND t.relname = %s AND NOT i.indisvalid
        """,
        (schema, table),
    )
    return {name for (name,) in rows}


def _drop_new_invalid(
    session: MaintenanceSession, schema: str, table: str, invalid_before: set[str]
) -> int:
    """Drop the invalid indexes that appeared on the table since `invalid_before`: copies
    left by our own attempts that hit lock_timeout mid-way."""
    leftovers = sorted(_invalid_indexes_of(session, schema, table) - invalid_before)
    for name in leftovers:
        session.run(drop_index_statement(schema, name))
    return len(leftovers)


# --- invalid_indexes ---------------------------------------------------------------------


@dataclass(frozen=True)
class InvalidIndex:
    schema: str
    table: str
    name: str
    index_bytes: int
    ready: bool  # still updated by every write (indisready)
    building_pid: int | None  # a CREATE INDEX / REINDEX running now on the table


@dataclass(frozen=True)
class InvalidIndexFacts:
    indexes: tuple[InvalidIndex, ...]


_INVALID = """
SELECT n.nspname, t.relname, ic.relname, pg_relation_size(ic.oid), i.indisready,
       (SELECT p.pid FROM pg_stat_progress_create_index p
        WHERE p.relid = t.oid
          AND p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
        LIMIT 1)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
WHERE NOT i.indisvalid AND ic.relkind = 'i' AND ic.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ic.oid)
ORDER BY 1, 2, 3
"""


def left_by(index: InvalidIndex) -> str:
    """What left the invalid index, in words."""
    match = _LEFTOVER.match(index.name)
    if match and match["kind"] == "new":
        return (
            f"the unfinished new copy left by an interrupted REINDEX CONCURRENTLY of "
            f"{match['base']} (which is intact)"
        )
    if match:
        return (
            f"the old copy left by a REINDEX CONCURRENTLY of {match['base']} interrupted "
            f"after the swap ({match['base']} is the rebuilt index)"
        )
    return (
        "left by a failed or interrupted CREATE INDEX CONCURRENTLY (create it again if it "
        "is wanted)"
    )


class InvalidIndexes:
    name: ClassVar[str] = "invalid_indexes"
    destructive: ClassVar[bool] = False  # an invalid index serves no query

    def measure(self, context: MeasureContext) -> InvalidIndexFacts:
        rows = context.session.query(_INVALID)
        return InvalidIndexFacts(tuple(InvalidIndex(*row) for row in rows))

    def plan(
        self, facts: InvalidIndexFacts, settings: MaintenanceSettings, target: PostgresTarget
    ) -> list[MaintenanceAction]:
        actions = []
        for index in facts.indexes:
            if index.building_pid is not None:
                continue  # a build in progress right now (pid building_pid): not a leftover
            cost = "still updated by every write" if index.ready else "never updated"
            actions.append(
                MaintenanceAction(
                    procedure=self.name,
                    target=target.name,
                    object=f"{index.schema}.{index.name}",
                    statement=drop_index_statement(index.schema, index.name).as_string(None),
                    reason=(
                        f"invalid index on {index.schema}.{index.table} "
                        f"({human_bytes(index.index_bytes)}, never used by queries, {cost}): "
                        f"{left_by(index)}"
                    ),
                    estimate_seconds=round(1.0 + index.index_bytes / 1e9, 2),
                    before={
                        "schema": index.schema,
                        "table": index.table,
                        "index": index.name,
                        "index_bytes": index.index_bytes,
                        "valid": False,
                        "ready": index.ready,
                    },
                )
            )
        return actions

    def apply(self, session: MaintenanceSession, action: MaintenanceAction) -> dict[str, Figure]:
        schema, index = str(action.before["schema"]), str(action.before["index"])
        attempts = session.run(drop_index_statement(schema, index))
        exists = session.query(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (schema, index),
        )[0][0]
        if exists:
            raise RuntimeError(f"{schema}.{index} still exists after DROP INDEX CONCURRENTLY")
        return {"index_bytes": 0, "exists": False, "attempts": attempts}
