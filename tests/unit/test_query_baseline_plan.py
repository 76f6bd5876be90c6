"""query_baseline's pure parts against fixed histories: the window mean from two baselines'
counters, resets, the noise floors, the bound, previews without literals, and the plan
(skipped with the reason when pg_stat_statements cannot be read)."""

from __future__ import annotations

import pytest

from runbook.catalog.maintenance import Outcome
from runbook.config import MaintenanceSettings, PostgresTarget
from runbook.config.maintenance import QueryBaselineSettings
from tasks.maintenance.query_baseline import (
    Baseline,
    BaselineFacts,
    QueryBaseline,
    StatementReading,
    StatementStats,
    compare,
    statement_preview,
)

RESET = "2024-06-01T00:00:00+00:00"


def reading(*stats: tuple[int, int, float], stats_reset: str | None = RESET) -> StatementReading:
    return StatementReading(
        "mean_exec_time",
        [StatementStats(qid, calls, total, f"SELECT {qid}") for qid, calls, total in stats],
        stats_reset,
    )


def previous(**statements: tuple[int, float, float]) -> Baseline:
    return Baseline(
        {int(k[1:]): v for k, v in statements.items()}, RESET, "2024-06-02T02:10:00+00:00"
    )


def test_first_baseline_has_no_regressions_and_keeps_the_slowest() -> None:
    baseline, regressions = compare(
        None, reading((1, 10, 10.0), (2, 10, 50.0), (3, 4, 400.0)), top=2, ratio=1.5
    )
    assert regressions == []
    assert baseline.statements == {3: (4, 400.0, 100.0), 2: (10, 50.0, 5.0)}  # bounded by top
    assert baseline.stats_reset == RESET


def test_the_window_mean_comes_from_the_counters_since_the_last_baseline() -> None:
    # 100 calls at 1 ms, then 10 more taking 50 ms in all: 5 ms each (the cumulative mean,
    # 150 / 110 = 1.4 ms, would hide it).
    last = previous(q1=(100, 100.0, 1.0), q2=(100, 100.0, 1.0))
    baseline, regressions = compare(
        last, reading((1, 110, 150.0), (2, 110, 110.0)), top=10, ratio=1.5
    )
    assert [(r.queryid, r.before_ms, r.now_ms, r.calls) for r in regressions] == [(1, 1.0, 5.0, 10)]
    assert regressions[0].describe() == "1 `SELECT 1`: 1 ms -> 5 ms (x5.0, 10 calls)"
    assert baseline.statements[1] == (110, 150.0, 5.0)
    assert baseline.statements[2] == (110, 110.0, 1.0)


@pytest.mark.parametrize(
    ("now", "stats_reset", "regressed"),
    [
        ((1, 12, 60.0), "2024-06-05T00:00:00+00:00", True),  # reset since: 12 calls at 5 ms
        ((1, 12, 60.0), RESET, True),  # fewer calls than before: its counters restarted
        ((1, 104, 140.0), RESET, False),  # 4 calls since: too few to say
        ((1, 200, 109.0), RESET, False),  # faster: 100 calls at 0.09 ms
        ((1, 200, 240.0), RESET, False),  # x1.4, under the ratio of 1.5
    ],
)
def test_resets_too_few_calls_and_under_the_ratio(
    now: tuple[int, int, float], stats_reset: str, regressed: bool
) -> None:
    last = previous(q1=(100, 100.0, 1.0))
    _, regressions = compare(last, reading(now, stats_reset=stats_reset), top=10, ratio=1.5)
    assert bool(regressions) is regressed


def test_a_tiny_slowdown_is_noise_whatever_the_ratio() -> None:
    last = previous(q1=(100, 1.0, 0.01))  # 10 µs
    _, regressions = compare(last, reading((1, 200, 1.0 + 100 * 0.08)), top=10, ratio=1.5)
    assert regressions == []  # 0.01 -> 0.08 ms: x8, but 70 µs
    _, regressions = compare(last, reading((1, 200, 1.0 + 100 * 0.5)), top=10, ratio=1.5)
    assert len(regressions) == 1  # 0.01 -> 0.5 ms


def test_a_statement_not_called_since_keeps_its_reference_mean() -> None:
    last = previous(q1=(100, 100.0, 1.0))
    baseline, regressions = compare(last, reading((1, 100, 100.0)), top=10, ratio=1.5)
    assert regressions == [] and baseline.statements[1] == (100, 100.0, 1.0)


def test_baseline_json_round_trip_and_garbage() -> None:
    last = previous(q1=(100, 100.0, 1.0), q2=(7, 0.5, 0.0714))
    again = Baseline.from_json(last.to_json(), "at")
    assert again == Baseline(last.statements, RESET, "at")
    assert Baseline.from_json(None) is None
    assert Baseline.from_json("not json") is None
    assert Baseline.from_json('{"statements": {"x": [1]}}') is None


@pytest.mark.parametrize(
    ("text", "preview"),
    [
        ("ALTER ROLE app PASSWORD 'se''cret'", "ALTER ROLE app PASSWORD '?'"),
        ("SELECT $1,\n\t  $2 FROM t", "SELECT $1, $2 FROM t"),
        ("SELECT E'it\\'s secret', 'x'", "SELECT E'?', '?'"),
        ("DO $body$ PERFORM 'secret' $body$", "DO '?'"),
        ("COPY t FROM PROGRAM 'curl secret", "COPY t FROM PROGRAM '?'"),  # cut inside
        ("SELECT " + "a, " * 40, ("SELECT " + "a, " * 40)[:80] + "..."),
    ],
)
def test_previews_never_show_a_literal(text: str, preview: str) -> None:
    assert statement_preview(text) == preview


SETTINGS = MaintenanceSettings(query_baseline=QueryBaselineSettings(top=5, regression_ratio=2))
TARGET = PostgresTarget(name="app", dsn="postgresql://localhost/shop")


def test_plan_skips_with_the_reason_when_the_extension_is_missing() -> None:
    why = "pg_stat_statements is installed but not loaded: add it to shared_preload_libraries"
    facts = BaselineFacts("shop", why, None, previous(q1=(1, 1.0, 1.0)))
    (action,) = QueryBaseline().plan(facts, SETTINGS, TARGET)
    assert action.outcome is Outcome.SKIPPED and action.error == why
    assert not action.destructive
    assert action.json_row()["outcome"] == "skipped"
    assert action.json_row()["reason"].endswith(why)


def test_plan_names_the_regressions_it_already_sees() -> None:
    last = previous(q1=(100, 100.0, 1.0), q2=(100, 100.0, 1.0))
    facts = BaselineFacts("shop", None, reading((1, 110, 150.0), (2, 110, 110.0)), last)
    (action,) = QueryBaseline().plan(facts, SETTINGS, TARGET)
    assert action.outcome is Outcome.PLANNED
    assert action.reason == (
        "record the 5 slowest statements of shop by mean time; 1 regression beyond x2 since "
        "the baseline of 2024-06-02 02:10 UTC, worst: 1 `SELECT 1`: 1 ms -> 5 ms "
        "(x5.0, 10 calls)"
    )
    assert action.before["baseline"] == last.to_json()
    assert QueryBaseline().plan(facts, SETTINGS, TARGET) == [action]  # pure
    first = QueryBaseline().plan(
        BaselineFacts("shop", None, reading((1, 1, 1.0)), None), SETTINGS, TARGET
    )
    assert first[0].reason.endswith("; first baseline")
