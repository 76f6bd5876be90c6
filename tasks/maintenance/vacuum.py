"""vacuum: `VACUUM (ANALYZE)` the tables whose dead-tuple ratio, vacuum age or statistics age
passes the thresholds, worst first (runbook 001's weekly `VACUUM ANALYZE ocr_requests;`, 003's
`VACUUM ANALYZE;`, done only where it is needed).

- measure: pg_stat_user_tables for every table; for the tables whose pg_stat dead-tuple count
  passes the ratio, `pgstattuple_approx` confirms it where the extension is installed (it reads
  only the pages not all-visible); the ledger's past runs for the estimate.
- plan: one action per candidate, its reasons in numbers. A dead-tuple count that
  pgstattuple refutes is no reason to VACUUM: when nothing else calls for one, the action is an
  `ANALYZE`, which corrects the counters autovacuum and the next window go by. `VACUUM FULL`
  (an ACCESS EXCLUSIVE lock for the whole rewrite) only for tables listed in
  `vacuum.full_tables` and no larger than `vacuum.full_max_bytes`.
- apply: the statement through MaintenanceSession.run (lock_timeout, retries), a plain VACUUM
  paced like autovacuum and without parallel workers (relations.GENTLE_VACUUM); after figures
  from the same source as before (pgstattuple_approx or pg_stat).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from psycopg import sql

from runbook.catalog.maintenance import Figure, MaintenanceAction
from runbook.config import MaintenanceSettings, PostgresTarget
from runbook.formatting import human_bytes
from tasks.maintenance.procedure import MaintenanceSession, MeasureContext
from tasks.maintenance.relations import (
    ANALYZE_BYTES_PER_SECOND,
    ANALYZE_SAMPLE_BYTES,
    GENTLE_VACUUM,
    VACUUM_BYTES_PER_SECOND,
    VACUUM_FULL_BYTES_PER_SECOND,
    Extension,
    PastRun,
    TableStats,
    call_pgstattuple,
    dead_ratio_reason,
    estimate_seconds,
    modified_fraction_reason,
    past_runs,
    pgstattuple,
    relation_literal,
    session_settings,
    statistics_age_reason,
    table_stats_of,
    vacuum_age_reason,
    vacuum_reasons,
)
from tasks.maintenance.relations import table_stats as read_table_stats

PLAIN, FULL, ANALYZE = "plain", "full", "analyze"  # the `mode` figure of an action
SIZE_KEYS = ("table_bytes", "index_bytes")


@dataclass(frozen=True)
class DeadCount:
    """pgstattuple_approx of one table: exact for the pages it reads (those not all-visible),
    extrapolated for the rest. Its dead tuples are those not pruned yet: a page pruned by a
    reader keeps only dead line pointers (free space to pgstattuple) until VACUUM clears
    them and their index entries; they can only be on pages not all-visible."""

    live_tuples: int
    dead_tuples: int
    free_percent: float
    scanned_percent: float


@dataclass(frozen=True)
class VacuumFacts:
    tables: tuple[TableStats, ...]
    pgstattuple: Extension
    # schema.table -> pgstattuple_approx, for the tables pg_stat counts over the ratio; None:
    # the extension is usable but could not read this table (locked, gone).
    approx: dict[str, DeadCount | None] = field(default_factory=dict)
    history: dict[str, tuple[PastRun, ...]] = field(default_factory=dict)  # "table mode"


def vacuum_statement(schema: str, table: str, mode: str) -> sql.Composed:
    relation = sql.Identifier(schema, table)
    if mode == FULL:
        return sql.SQL("VACUUM (FULL, ANALYZE) {}").format(relation)
    if mode == ANALYZE:
        return sql.SQL("ANALYZE {}").format(relation)
    return sql.SQL("VACUUM (ANALYZE) {}").format(relation)


def read_dead_count(
    session: MaintenanceSession, extension: Extension, schema: str, table: str
) -> DeadCount | None:
    row = call_pgstattuple(
        session, extension, "pgstattuple_approx", relation_literal(schema, table)
    )
    if row is None:
        return None
    # table_len, scanned_percent, approx_tuple_count, approx_tuple_len, approx_tuple_percent,
    # dead_tuple_count, dead_tuple_len, dead_tuple_percent, approx_free_space, approx_free_percent
    return DeadCount(int(row[2]), int(row[5]), float(row[9]), float(row[1]))


class Vacuum:
    name: ClassVar[str] = "vacuum"
    destructive: ClassVar[bool] = False  # VACUUM FULL actions are marked destructive

    def measure(self, context: MeasureContext) -> VacuumFacts:
        session, settings = context.session, context.settings
        tables = tuple(read_table_stats(session))
        extension = pgstattuple(session)
        approx: dict[str, DeadCount | None] = {}
        history: dict[str, tuple[PastRun, ...]] = {}
        for table in tables:
            if not vacuum_reasons(table, settings):
                continue
            done = context.ledger.history(context.target.name, self.name, table.qualified)
            for mode in (PLAIN, FULL):  # an ANALYZE is estimated from its sample alone
                history[f"{table.qualified} {mode}"] = past_runs(done, SIZE_KEYS, mode)
            pg_stat_ratio = dead_ratio_reason(
                table.live_tuples, table.dead_tuples, "pg_stat", settings.vacuum
            )
            if pg_stat_ratio and extension.usable:
                approx[table.qualified] = read_dead_count(
                    session, extension, table.schema, table.name
                )
        return VacuumFacts(tables, extension, approx, history)

    def plan(
        self, facts: VacuumFacts, settings: MaintenanceSettings, target: PostgresTarget
    ) -> list[MaintenanceAction]:
        planned: list[tuple[tuple[float, int, float], MaintenanceAction]] = []
        for table in facts.tables:
            if not vacuum_reasons(table, settings):
                continue
            action, worst = self._plan_table(table, facts, settings, target)
            planned.append((worst, action))
        planned.sort(key=lambda item: item[0], reverse=True)
        return [action for _, action in planned]

    def _plan_table(
        self,
        table: TableStats,
        facts: VacuumFacts,
        settings: MaintenanceSettings,
        target: PostgresTarget,
    ) -> tuple[MaintenanceAction, tuple[float, int, float]]:
        live, dead, source = table.live_tuples, table.dead_tuples, "pg_stat"
        ratio = dead_ratio_reason(live, dead, source, settings.vacuum)
        notes: list[str] = []
        counted = facts.approx.get(table.qualified)
        if counted is not None:
            approx = (counted.live_tuples, counted.dead_tuples, "pgstattuple_approx")
            confirmed = dead_ratio_reason(*approx, settings.vacuum)
            if confirmed:
                (live, dead, source), ratio = approx, confirmed
            elif counted.scanned_percent < settings.vacuum.dead_tuple_ratio:
                # Dead items are only on pages not all-visible: too few of those to pass.
                notes.append(
                    f"pg_stat counts {_percent(dead, live):.1f} % dead tuples but "
                    f"pgstattuple_approx finds "
                    f"{_percent(counted.dead_tuples, counted.live_tuples):.1f} % "
                    f"({counted.dead_tuples:,}), in {counted.scanned_percent:.0f} % of pages "
                    f"not all-visible"
                )
                (live, dead, source), ratio = approx, None
            else:
                # Readers prune dead tuples to dead line pointers, which pgstattuple counts
                # as free space: VACUUM must still clear them and their index entries.
                notes.append(
                    f"pgstattuple_approx: {counted.dead_tuples:,} dead tuples left in the "
                    f"{counted.scanned_percent:.0f} % of pages not all-visible, the rest "
                    f"pruned to line pointers that VACUUM still has to clear"
                )
        elif ratio and not facts.pgstattuple.usable:
            notes.append(facts.pgstattuple.note)
        elif ratio:
            notes.append("pg_stat figures only: pgstattuple_approx could not read the table")
        reasons = [ratio, vacuum_age_reason(table, settings.vacuum)]
        stale_age = statistics_age_reason(table, settings.analyze_stale)
        if table.dead_tuples > 0 and stale_age:
            reasons.append(f"{stale_age}, with dead tuples to remove")
        reasons = [reason for reason in reasons if reason]
        if not reasons:
            mode = ANALYZE
            notes.append("no VACUUM needed; ANALYZE corrects the counters")
        else:
            mode, full_note = _mode(table, settings)
            if full_note:
                notes.append(full_note)
            stale_changes = modified_fraction_reason(table, settings.analyze_stale)
            if stale_changes and not stale_age:
                notes.append(f"its ANALYZE also refreshes the statistics: {stale_changes}")
        statement = vacuum_statement(table.schema, table.name, mode)
        if mode == ANALYZE:
            work, rate = min(table.table_bytes, ANALYZE_SAMPLE_BYTES), ANALYZE_BYTES_PER_SECOND
        elif mode == FULL:
            work, rate = table.table_bytes + table.index_bytes, VACUUM_FULL_BYTES_PER_SECOND
        else:
            work, rate = table.table_bytes + table.index_bytes, VACUUM_BYTES_PER_SECOND
        past = facts.history.get(f"{table.qualified} {mode}", ())
        action = MaintenanceAction(
            procedure=self.name,
            target=target.name,
            object=table.qualified,
            statement=statement.as_string(None),
            reason="; ".join(reasons + notes),
            destructive=mode == FULL,
            estimate_seconds=estimate_seconds(work, past, rate),
            before={
                "schema": table.schema,
                "table": table.name,
                "mode": mode,
                "dead_tuples": dead,
                "live_tuples": live,
                "dead_source": source,
                "table_bytes": table.table_bytes,
                "index_bytes": table.index_bytes,
            },
        )
        worst = (_percent(dead, live), dead, table.vacuum_age or table.stats_age)
        return action, worst

    def apply(self, session: MaintenanceSession, action: MaintenanceAction) -> dict[str, Figure]:
        schema, table = str(action.before["schema"]), str(action.before["table"])
        mode = str(action.before.get("mode", PLAIN))
        gentle = GENTLE_VACUUM if mode == PLAIN else {}
        with session_settings(session, gentle):
            attempts = session.run(vacuum_statement(schema, table, mode))
        figures = table_figures(session, schema, table, str(action.before.get("dead_source")))
        return {**figures, "attempts": attempts}


def table_figures(
    session: MaintenanceSession, schema: str, table: str, source: str
) -> dict[str, Figure]:
    """dead_tuples, live_tuples (from pgstattuple_approx when `source` says so and it can
    read the table, else pg_stat), table_bytes and index_bytes as they are now."""
    stats = table_stats_of(session, schema, table)
    if stats is None:
        raise LookupError(f"{schema}.{table} is gone")
    figures: dict[str, Figure] = {
        "dead_tuples": stats.dead_tuples,
        "live_tuples": stats.live_tuples,
        "dead_source": "pg_stat",
        "table_bytes": stats.table_bytes,
        "index_bytes": stats.index_bytes,
    }
    if source == "pgstattuple_approx":
        counted = read_dead_count(session, pgstattuple(session), schema, table)
        if counted is not None:
            figures["dead_tuples"] = counted.dead_tuples
            figures["live_tuples"] = counted.live_tuples
            figures["dead_source"] = source
    return figures


def _mode(table: TableStats, settings: MaintenanceSettings) -> tuple[str, str | None]:
    """VACUUM FULL for a listed table within the size limit; plain VACUUM otherwise."""
    if table.qualified not in settings.vacuum.full_tables:
        return PLAIN, None
    limit = settings.vacuum.full_max_bytes
    if table.table_bytes <= limit:
        return FULL, (
            f"listed in vacuum.full_tables and {human_bytes(table.table_bytes)} <= "
            f"{human_bytes(limit)}: VACUUM FULL (exclusive lock while it rewrites)"
        )
    return PLAIN, (
        f"listed in vacuum.full_tables but {human_bytes(table.table_bytes)} > "
        f"{human_bytes(limit)}: plain VACUUM"
    )


def _percent(dead: int, live: int) -> float:
    total = dead + live
    return 100 * dead / total if total > 0 else 0.0
