"""query_baseline: runbook 003's "Check slow queries"

    SELECT query, calls, mean_time FROM pg_stat_statements ORDER BY mean_time DESC LIMIT 10;

recorded every window and compared with the previous window's record, so a query that got
slower shows up in the window's report instead of in an incident.

- measure: where pg_stat_statements lives (its schema and version), then the target
  database's statements: the `top` N by mean time (`mean_exec_time`, `total_exec_time` from
  extension 1.8 = PostgreSQL 13; `mean_time`, `total_time` before), plus the statements of the
  previous baseline wherever they rank now. The previous baseline is the `after` of the last
  done query_baseline action of this target in the ledger.
- plan (pure): one action, never destructive. Its reason already names the regressions
  against the previous baseline as of planning (what a dry run shows); `before` carries the
  previous baseline for apply.
- apply: reads the statements again (the end of the window counts), compares them with the
  previous baseline and returns `after`: the new baseline, the regressions and the slowest
  statements. The next window compares with that.

Comparing: a statement's mean for the window is (total time now - total time then) / (calls
now - calls then), from the cumulative counters both baselines recorded, not the mean since the
statistics were reset (which would dilute a new slowness in months of history); after a reset
(`pg_stat_statements_info.stats_reset` changed, or fewer calls than before) the counters since
the reset are the window's. A regression: a statement of the previous baseline with at least
MIN_WINDOW_CALLS calls since, whose window mean is at least `regression_ratio` times its previous
mean and at least MIN_SLOWDOWN_MS slower (below that it is timer noise). Statements are
aggregated by queryid over users, within the target's database only (the view is
server-wide); the statements reading pg_stat_statements itself (this procedure, monitoring) are
left out.

The baseline is bounded: a compact JSON string `{"stats_reset": ..., "statements": {queryid:
[calls, total_ms, mean_ms]}}` of at most `top` statements (the slowest by their window mean),
with no query text. Query texts can hold secrets: pg_stat_statements replaces the constants of
planned statements by $1, $2, ..., but keeps utility statements (ALTER ROLE ... PASSWORD) as
written, so a preview is whitespace-collapsed, has every quoted literal replaced by '?', and
is cut at PREVIEW_CHARS; full texts are never stored, logged or reported.

Missing extension: not installed in the target's database, or installed but not loaded
(`shared_preload_libraries`, which needs a restart). The plan then holds one action whose
outcome is already `skipped`, with the reason and the fix in `error`: a window applies only
`planned` actions, so the report lists it as skipped, not failed, and the ledger gains no
baseline (the next window compares with the last real one).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import psycopg
from psycopg import sql

from runbook.catalog.maintenance import Figure, MaintenanceAction, Outcome
from runbook.config import MaintenanceSettings, PostgresTarget
from tasks.maintenance.procedure import MaintenanceSession, MeasureContext

EXTENSION = "pg_stat_statements"
PREVIEW_CHARS = 80  # of a statement's normalized text, literals redacted
MIN_WINDOW_CALLS = 5  # fewer calls since the last baseline say nothing about a mean
MIN_SLOWDOWN_MS = 0.1  # a smaller slowdown is timer noise, whatever the ratio
LISTED = 10  # regressions named in `after`; the count says how many there are
SLOWEST_LISTED = 3

_STATEMENTS = """
    WITH s AS (
        SELECT queryid, sum(calls)::bigint AS calls, sum({total})::float8 AS total_ms,
               min(left(query, 1000)) AS query
        FROM {view}
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND queryid IS NOT NULL AND query NOT ILIKE '%%pg\\_stat\\_statements%%'
        GROUP BY queryid HAVING sum(calls) > 0
    )
    SELECT queryid, calls, total_ms, query FROM s
    WHERE queryid = ANY(%(previous)s)
       OR queryid IN (SELECT queryid FROM s ORDER BY total_ms / calls DESC LIMIT %(top)s)
    ORDER BY total_ms / calls DESC
"""

# Quoted literals, standard or E'' (backslash escapes) or dollar-quoted; an unterminated one
# (the text was cut) runs to the end.
_LITERALS = re.compile(r"'(?:[^'\\]|''|\\.)*(?:'|$)|\$([A-Za-z_]\w*)?\$.*?(?:\$\1\$|$)", re.DOTALL)


@dataclass(frozen=True)
class StatementStats:
    queryid: int
    calls: int  # cumulative, since the statistics' reset
    total_ms: float  # cumulative
    preview: str  # normalized, literals redacted, bounded


@dataclass(frozen=True)
class Baseline:
    """What a window recorded: queryid -> (calls, total_ms, mean_ms of that window)."""

    statements: dict[int, tuple[int, float, float]] = field(default_factory=dict)
    stats_reset: str | None = None
    recorded_at: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "stats_reset": self.stats_reset,
                "statements": {
                    str(qid): [calls, round(total, 3), round(mean, 4)]
                    for qid, (calls, total, mean) in self.statements.items()
                },
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: Any, recorded_at: str | None = None) -> Baseline | None:
        """The baseline a ledger row holds; None when it holds none (or not one we can read)."""
        if not isinstance(text, str):
            return None
        try:
            data = json.loads(text)
            statements = {
                int(qid): (int(calls), float(total), float(mean))
                for qid, (calls, total, mean) in data["statements"].items()
            }
        except (ValueError, KeyError, TypeError):
            return None
        return cls(statements, data.get("stats_reset"), recorded_at)


@dataclass(frozen=True)
class Regression:
    queryid: int
    preview: str
    before_ms: float
    now_ms: float
    calls: int  # since the previous baseline

    def describe(self) -> str:
        return (
            f"{self.queryid} `{self.preview}`: {_ms(self.before_ms)} -> {_ms(self.now_ms)} "
            f"(x{self.now_ms / self.before_ms:.1f}, {self.calls} calls)"
        )


@dataclass(frozen=True)
class StatementReading:
    column: str  # mean_exec_time or mean_time: the runbook's ordering
    statements: list[StatementStats]
    stats_reset: str | None


@dataclass(frozen=True)
class BaselineFacts:
    database: str
    unavailable: str | None  # why pg_stat_statements cannot be read, with the fix
    reading: StatementReading | None
    previous: Baseline | None


def _ms(value: float) -> str:
    """4.38 ms, 0.0043 ms, 1,234 ms."""
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.3g} ms"


def _when(iso: str | None) -> str:
    """A baseline's time as people read it: 2024-06-02 02:14 UTC."""
    if iso is None:
        return "the last window"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return iso


def statement_preview(text: str | None) -> str:
    """Whitespace collapsed, every quoted literal replaced by '?', cut at PREVIEW_CHARS."""
    redacted = _LITERALS.sub("'?'", " ".join((text or "").split()))
    if len(redacted) <= PREVIEW_CHARS:
        return redacted
    return redacted[:PREVIEW_CHARS] + "..."


def compare(
    previous: Baseline | None, reading: StatementReading, top: int, ratio: float
) -> tuple[Baseline, list[Regression]]:
    """The window's baseline (at most `top` statements, slowest window mean first) and the
    statements that regressed against `previous`, worst first."""
    reset = (
        previous is not None
        and reading.stats_reset is not None
        and previous.stats_reset != reading.stats_reset
    )
    seen = previous.statements if previous is not None else {}
    means: dict[int, tuple[StatementStats, float]] = {}
    regressions = []
    for stats in reading.statements:
        before = seen.get(stats.queryid)
        if before is not None and not reset and stats.calls >= before[0]:
            calls, total = stats.calls - before[0], stats.total_ms - before[1]
        else:  # first seen, or its counters started again since
            calls, total = stats.calls, stats.total_ms
        if calls:
            mean = total / calls
        elif before is not None:
            mean = before[2]  # not called since: keep the reference
        else:
            continue
        means[stats.queryid] = (stats, mean)
        if (
            before is not None
            and calls >= MIN_WINDOW_CALLS
            and before[2] > 0
            and mean >= ratio * before[2]
            and mean - before[2] >= MIN_SLOWDOWN_MS
        ):
            regressions.append(Regression(stats.queryid, stats.preview, before[2], mean, calls))
    kept = sorted(means.items(), key=lambda item: -item[1][1])[:top]
    baseline = Baseline(
        {qid: (stats.calls, stats.total_ms, mean) for qid, (stats, mean) in kept},
        reading.stats_reset,
    )
    regressions.sort(key=lambda r: -r.now_ms / r.before_ms)
    return baseline, regressions


def _listed(regressions: list[Regression]) -> str:
    text = "; ".join(r.describe() for r in regressions[:LISTED])
    more = len(regressions) - LISTED
    return text + (f"; and {more} more" if more > 0 else "")


class ExtensionUnavailable(Exception):
    """pg_stat_statements cannot be read: not installed, or not preloaded. The message says
    which, and the fix."""


def _text(value: Figure) -> str | None:
    return value if isinstance(value, str) else None


def _preloaded(session: MaintenanceSession) -> bool | None:
    """Whether shared_preload_libraries names pg_stat_statements; None when this role may not
    read the setting (pg_settings hides it without pg_read_all_settings)."""
    rows = session.query("SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'")
    if not rows:
        return None
    names = {part.strip().strip('"').lower() for part in (rows[0][0] or "").split(",")}
    return EXTENSION in names


def read_statements(
    session: MaintenanceSession, top: int, previous: Baseline | None
) -> StatementReading:
    """The database's `top` statements by mean time plus those of `previous`. Raises
    ExtensionUnavailable when pg_stat_statements is not installed or not preloaded."""
    rows = session.query(
        "SELECT n.nspname, e.extversion,"
        " EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid AND c.relname = %s)"
        " FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = %s",
        (f"{EXTENSION}_info", EXTENSION),
    )
    if not rows:
        database = session.query("SELECT current_database()")[0][0]
        preload = (
            f" and add {EXTENSION} to shared_preload_libraries (restart)"
            if _preloaded(session) is False
            else ""
        )
        raise ExtensionUnavailable(
            f"{EXTENSION} is not installed in database {database}: "
            f"CREATE EXTENSION {EXTENSION} there{preload}"
        )
    schema, version, has_info = rows[0]
    # Extension 1.8 (PostgreSQL 13) split planning from execution: *_exec_time.
    if tuple(int(part) for part in version.split(".")[:2]) >= (1, 8):
        total, mean = "total_exec_time", "mean_exec_time"
    else:
        total, mean = "total_time", "mean_time"
    query = sql.SQL(_STATEMENTS).format(
        total=sql.Identifier(total), view=sql.Identifier(schema, EXTENSION)
    )
    known = list(previous.statements) if previous is not None else []
    try:
        found = session.query(query, {"previous": known, "top": top})
    except psycopg.errors.ObjectNotInPrerequisiteState:
        raise ExtensionUnavailable(
            f"{EXTENSION} is installed but not loaded: add it to shared_preload_libraries "
            "and restart the server"
        ) from None
    stats_reset = None
    if has_info:  # extension 1.9+ (PostgreSQL 14): when the counters last started again
        reset = session.query(
            sql.SQL("SELECT stats_reset FROM {}").format(
                sql.Identifier(schema, f"{EXTENSION}_info")
            )
        )[0][0]
        stats_reset = reset.isoformat() if isinstance(reset, datetime) else None
    statements = [
        StatementStats(int(qid), int(calls), float(total_ms), statement_preview(text))
        for qid, calls, total_ms, text in found
    ]
    return StatementReading(mean, statements, stats_reset)


class QueryBaseline:
    name: ClassVar[str] = "query_baseline"
    destructive: ClassVar[bool] = False

    def measure(self, context: MeasureContext) -> BaselineFacts:
        session = context.session
        database = session.query("SELECT current_database()")[0][0]
        history = context.ledger.history(context.target.name, self.name, limit=1)
        previous = None
        if history:
            last = history[0]
            when = last.finished_at or last.started_at
            previous = Baseline.from_json(
                last.after.get("baseline"), when.isoformat() if when else None
            )
        unavailable, reading = None, None
        try:
            reading = read_statements(session, context.settings.query_baseline.top, previous)
        except ExtensionUnavailable as exc:
            unavailable = str(exc)
        return BaselineFacts(database, unavailable, reading, previous)

    def plan(
        self, facts: BaselineFacts, settings: MaintenanceSettings, target: PostgresTarget
    ) -> list[MaintenanceAction]:
        top, ratio = settings.query_baseline.top, settings.query_baseline.regression_ratio
        previous = facts.previous
        column = facts.reading.column if facts.reading else "mean_exec_time"
        action = MaintenanceAction(
            procedure=self.name,
            target=target.name,
            object="",
            statement=f"SELECT query, calls, {column} FROM {EXTENSION} ORDER BY {column} DESC "
            f"LIMIT {top} -- database {facts.database} only, texts as previews",
            reason=f"record the {top} slowest statements of {facts.database} by mean time",
            estimate_seconds=0.5,
            before={
                "baseline": previous.to_json() if previous else None,
                "baseline_at": previous.recorded_at if previous else None,
                "statements": len(previous.statements) if previous else 0,
            },
        )
        if facts.reading is None:
            return [
                action.model_copy(update={"outcome": Outcome.SKIPPED, "error": facts.unavailable})
            ]
        if previous is None:
            return [action.model_copy(update={"reason": action.reason + "; first baseline"})]
        _, regressions = compare(previous, facts.reading, top, ratio)
        since = f"since the baseline of {_when(previous.recorded_at)}"
        if regressions:
            found = (
                f"; {len(regressions)} regression{'' if len(regressions) == 1 else 's'} "
                f"beyond x{ratio:g} {since}, worst: {regressions[0].describe()}"
            )
        else:
            found = f"; no regression beyond x{ratio:g} {since}"
        return [action.model_copy(update={"reason": action.reason + found})]

    def apply(self, session: MaintenanceSession, action: MaintenanceAction) -> dict[str, Figure]:
        if action.outcome is Outcome.SKIPPED:
            return {}  # nothing to read: the plan said why
        settings = session.settings.query_baseline
        previous = Baseline.from_json(
            action.before.get("baseline"), _text(action.before.get("baseline_at"))
        )
        reading = read_statements(session, settings.top, previous)
        baseline, regressions = compare(previous, reading, settings.top, settings.regression_ratio)
        previews = {s.queryid: s.preview for s in reading.statements}
        slowest = "; ".join(
            f"{qid} `{previews[qid]}`: {_ms(mean)}"
            for qid, (_, _, mean) in list(baseline.statements.items())[:SLOWEST_LISTED]
        )
        return {
            "baseline": baseline.to_json(),
            "statements": len(baseline.statements),
            "ordered_by": reading.column,
            "compared_with": previous.recorded_at if previous else None,
            "regressions": len(regressions),
            "regressed": _listed(regressions),
            "slowest": slowest,
        }
