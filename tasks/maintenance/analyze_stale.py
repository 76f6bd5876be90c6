"""analyze_stale: `ANALYZE` the tables whose statistics are older than
`analyze_stale.stale_after` (with rows changed since) or missing, or after which more than
`analyze_stale.modified_fraction` of the rows changed (at least 50, as autovacuum counts).

- measure: pg_stat_user_tables (change counters, last analyze); the ledger's past runs.
- plan: one action per stale table, most stale first, its reasons in numbers. A table the
  vacuum procedure also takes is planned here too, with a note: a window without vacuum must
  still refresh its statistics.
- apply: when the table's statistics were refreshed after the plan (the window's `VACUUM
  (ANALYZE)` of it ran first) and no longer pass the thresholds, the ANALYZE is not repeated
  and the after figures say so (`analyzed: false`); otherwise `ANALYZE` through
  MaintenanceSession.run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from psycopg import sql

from runbook.catalog.maintenance import Figure, MaintenanceAction
from runbook.config import MaintenanceSettings, PostgresTarget
from tasks.maintenance.procedure import MaintenanceSession, MeasureContext
from tasks.maintenance.relations import (
    ANALYZE_BYTES_PER_SECOND,
    ANALYZE_SAMPLE_BYTES,
    PastRun,
    TableStats,
    estimate_seconds,
    past_runs,
    stale_statistics_reasons,
    table_stats,
    table_stats_of,
    vacuum_reasons,
)

SIZE_KEYS = ("sampled_bytes",)


@dataclass(frozen=True)
class AnalyzeFacts:
    tables: tuple[TableStats, ...]
    history: dict[str, tuple[PastRun, ...]] = field(default_factory=dict)  # schema.table


def analyze_statement(schema: str, table: str) -> sql.Composed:
    return sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table))


class AnalyzeStale:
    name: ClassVar[str] = "analyze_stale"
    destructive: ClassVar[bool] = False

    def measure(self, context: MeasureContext) -> AnalyzeFacts:
        tables = tuple(table_stats(context.session))
        history = {
            table.qualified: past_runs(
                context.ledger.history(context.target.name, self.name, table.qualified),
                SIZE_KEYS,
            )
            for table in tables
            if stale_statistics_reasons(table, context.settings.analyze_stale)
        }
        return AnalyzeFacts(tables, history)

    def plan(
        self, facts: AnalyzeFacts, settings: MaintenanceSettings, target: PostgresTarget
    ) -> list[MaintenanceAction]:
        planned: list[tuple[tuple[bool, float], MaintenanceAction]] = []
        for table in facts.tables:
            reasons = stale_statistics_reasons(table, settings.analyze_stale)
            if not reasons:
                continue
            if vacuum_reasons(table, settings):
                reasons.append("also in the vacuum plan: not repeated after its VACUUM (ANALYZE)")
            sampled = min(table.table_bytes, ANALYZE_SAMPLE_BYTES)
            action = MaintenanceAction(
                procedure=self.name,
                target=target.name,
                object=table.qualified,
                statement=analyze_statement(table.schema, table.name).as_string(None),
                reason="; ".join(reasons),
                estimate_seconds=estimate_seconds(
                    sampled, facts.history.get(table.qualified, ()), ANALYZE_BYTES_PER_SECOND
                ),
                before={
                    "schema": table.schema,
                    "table": table.name,
                    "last_analyzed": table.last_analyzed,
                    "statistics_age_days": _days(table.analyze_age),
                    "modified_since_analyze": table.modified_since_analyze,
                    "live_tuples": table.live_tuples,
                    "sampled_bytes": sampled,
                },
            )
            changed = table.modified_since_analyze / max(table.row_basis, 1.0)
            planned.append(((table.analyze_age is None, changed), action))
        planned.sort(key=lambda item: item[0], reverse=True)
        return [action for _, action in planned]

    def apply(self, session: MaintenanceSession, action: MaintenanceAction) -> dict[str, Figure]:
        schema, table = str(action.before["schema"]), str(action.before["table"])
        current = table_stats_of(session, schema, table)
        if current is None:
            raise LookupError(f"{schema}.{table} is gone")
        refreshed = (
            current.last_analyzed is not None
            and current.last_analyzed != action.before.get("last_analyzed")
            and not stale_statistics_reasons(current, session.settings.analyze_stale)
        )
        if refreshed:
            return {**_figures(current), "analyzed": False, "attempts": 0}
        attempts = session.run(analyze_statement(schema, table))
        after = table_stats_of(session, schema, table)
        if after is None:
            raise LookupError(f"{schema}.{table} is gone")
        return {**_figures(after), "analyzed": True, "attempts": attempts}


def _figures(table: TableStats) -> dict[str, Figure]:
    return {
        "last_analyzed": table.last_analyzed,
        "statistics_age_days": _days(table.analyze_age),
        "modified_since_analyze": table.modified_since_analyze,
        "live_tuples": table.live_tuples,
    }


def _days(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 86400, 4)
