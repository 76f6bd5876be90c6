"""The plans of vacuum, analyze_stale, reindex and invalid_indexes as pure functions of their
facts: every threshold on both sides, the reasons, the order and the estimates. No server:
the facts are written out here (the other maintenance test files measure real ones)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from runbook.config import MaintenanceSettings, PostgresTarget
from tasks.maintenance.analyze_stale import AnalyzeFacts, AnalyzeStale
from tasks.maintenance.reindex import (
    Baseline,
    IndexPages,
    IndexStats,
    InvalidIndex,
    InvalidIndexes,
    InvalidIndexFacts,
    Reindex,
    ReindexFacts,
)
from tasks.maintenance.relations import VACUUM_BYTES_PER_SECOND, Extension, PastRun, TableStats
from tasks.maintenance.vacuum import DeadCount, Vacuum, VacuumFacts

DAY = 86400.0
TARGET = PostgresTarget(name="app", dsn="postgresql://u@h/app")
SETTINGS = MaintenanceSettings()
WITH_PGSTATTUPLE = Extension("public", "pgstattuple")
WITHOUT = Extension(None, "pg_stat figures only: pgstattuple is not installed in this database")


def table(name: str = "t", **figures) -> TableStats:
    """A quiet, recently vacuumed and analyzed table of 100,000 rows, changed by `figures`."""
    base = TableStats(
        schema="public",
        name=name,
        live_tuples=100_000,
        dead_tuples=0,
        modified_since_analyze=0,
        inserted_since_vacuum=0,
        reltuples=100_000.0,
        vacuum_age=DAY,
        analyze_age=DAY,
        last_analyzed="2026-11-30T00:00:00.000000Z",
        stats_age=30 * DAY,
        stats_since="server start",
        table_bytes=10_000_000,
        index_bytes=2_000_000,
        updates=0,
        hot_updates=0,
        deletes=0,
    )
    return replace(base, **figures)


def vacuum_plan(*tables: TableStats, settings=SETTINGS, extension=WITHOUT, **facts):
    return Vacuum().plan(VacuumFacts(tuple(tables), extension, **facts), settings, TARGET)


def test_vacuum_dead_ratio_needs_both_the_ratio_and_the_minimum_count() -> None:
    over = table("over", dead_tuples=30_000, modified_since_analyze=5_000)
    few = table("few", live_tuples=1_000, reltuples=1_000.0, dead_tuples=900)  # 47 %, 900
    low = table("low", dead_tuples=20_000)  # 16.7 %
    (action,) = vacuum_plan(over, few, low)
    assert action.object == "public.over"
    assert action.reason.startswith("dead tuples 23.1 % of 130,000 (30,000 dead, pg_stat) >= 20 %")
    assert "pgstattuple is not installed" in action.reason
    assert action.statement == 'VACUUM (ANALYZE) "public"."over"'
    assert action.before["dead_source"] == "pg_stat" and action.before["mode"] == "plain"


def test_vacuum_age_counts_only_tables_that_changed() -> None:
    old_changed = table("old_changed", vacuum_age=8 * DAY, dead_tuples=5)
    old_inserted = table("old_inserted", vacuum_age=8 * DAY, inserted_since_vacuum=1_000)
    old_quiet = table("old_quiet", vacuum_age=30 * DAY)
    never = table("never", vacuum_age=None, dead_tuples=1, stats_age=10 * DAY)
    never_recent = table("never_recent", vacuum_age=None, dead_tuples=1, stats_age=DAY)
    actions = {
        a.object: a for a in vacuum_plan(old_changed, old_inserted, old_quiet, never, never_recent)
    }
    assert set(actions) == {"public.old_changed", "public.old_inserted", "public.never"}
    assert "last vacuumed 8d ago >= 7d (5 dead)" in actions["public.old_changed"].reason
    assert "1,000 inserted since" in actions["public.old_inserted"].reason
    assert "never vacuumed in the 10d since server start" in actions["public.never"].reason


def test_vacuum_takes_stale_statistics_only_with_dead_tuples_to_remove() -> None:
    stale_dirty = table(
        "stale_dirty", analyze_age=9 * DAY, modified_since_analyze=10, dead_tuples=10
    )
    stale_clean = table("stale_clean", analyze_age=9 * DAY, modified_since_analyze=10)
    (action,) = vacuum_plan(stale_dirty, stale_clean)
    assert action.object == "public.stale_dirty"
    assert (
        "statistics 9d old >= 7d, 10 rows changed since, with dead tuples to remove"
        in action.reason
    )
    # analyze_stale plans both; the one vacuum takes says its ANALYZE may not be repeated.
    analyze = AnalyzeStale().plan(AnalyzeFacts((stale_dirty, stale_clean)), SETTINGS, TARGET)
    notes = {a.object: "also in the vacuum plan" in a.reason for a in analyze}
    assert notes == {"public.stale_dirty": True, "public.stale_clean": False}


def test_pgstattuple_confirms_or_refutes_the_pg_stat_count() -> None:
    confirmed = table("confirmed", dead_tuples=50_000)
    refuted = table("refuted", dead_tuples=50_000)
    refuted_old = table("refuted_old", dead_tuples=50_000, vacuum_age=8 * DAY)
    pruned = table("pruned", dead_tuples=50_000)
    unread = table("unread", dead_tuples=50_000)
    approx = {
        "public.confirmed": DeadCount(100_000, 45_000, 5.0, 100.0),
        # few dead tuples, and 3 % of pages not all-visible: no room for 33 % dead items
        "public.refuted": DeadCount(100_000, 2_000, 5.0, 3.0),
        "public.refuted_old": DeadCount(100_000, 2_000, 5.0, 3.0),
        # few dead tuples left but every page not all-visible: readers pruned them
        "public.pruned": DeadCount(100_000, 2_000, 30.0, 100.0),
        "public.unread": None,
    }
    tables = (confirmed, refuted, refuted_old, pruned, unread)
    plan = vacuum_plan(*tables, extension=WITH_PGSTATTUPLE, approx=approx)
    actions = {a.object: a for a in plan}
    assert (
        "31.0 % of 145,000 (45,000 dead, pgstattuple_approx)" in actions["public.confirmed"].reason
    )
    assert actions["public.confirmed"].before["dead_tuples"] == 45_000
    analyze_only = actions["public.refuted"]
    assert analyze_only.statement == 'ANALYZE "public"."refuted"'
    assert analyze_only.before["mode"] == "analyze"
    assert (
        "pg_stat counts 33.3 % dead tuples but pgstattuple_approx finds 2.0 % (2,000), "
        "in 3 % of pages not all-visible" in analyze_only.reason
    )
    assert "ANALYZE corrects the counters" in analyze_only.reason
    still = actions["public.refuted_old"]  # refuted, but not vacuumed for 8 days
    assert still.statement.startswith("VACUUM (ANALYZE)") and "last vacuumed 8d ago" in still.reason
    kept = actions["public.pruned"]
    assert kept.statement.startswith("VACUUM (ANALYZE)")
    assert kept.reason.startswith("dead tuples 33.3 % of 150,000 (50,000 dead, pg_stat)")
    assert "pruned to line pointers that VACUUM still has to clear" in kept.reason
    assert kept.before["dead_tuples"] == 50_000 and kept.before["dead_source"] == "pg_stat"
    assert "could not read the table" in actions["public.unread"].reason
    order = list(actions)
    assert order.index("public.confirmed") < order.index("public.refuted")


def test_vacuum_orders_worst_ratio_first() -> None:
    a = table("a", dead_tuples=30_000)  # 23 %
    b = table("b", dead_tuples=400_000)  # 80 %
    c = table("c", dead_tuples=100_000)  # 50 %
    assert [x.object for x in vacuum_plan(a, b, c)] == ["public.b", "public.c", "public.a"]


def test_vacuum_full_only_for_listed_tables_within_the_size_limit() -> None:
    settings = MaintenanceSettings(
        vacuum={"full_tables": ["public.small", "public.big"], "full_max_bytes": 50_000_000}
    )
    small = table("small", dead_tuples=50_000)
    big = table("big", dead_tuples=50_000, table_bytes=80_000_000)
    unlisted = table("unlisted", dead_tuples=50_000)
    actions = {a.object: a for a in vacuum_plan(small, big, unlisted, settings=settings)}
    assert actions["public.small"].statement == 'VACUUM (FULL, ANALYZE) "public"."small"'
    assert actions["public.small"].destructive
    assert "76.3 MiB > 47.7 MiB: plain VACUUM" in actions["public.big"].reason
    assert not actions["public.big"].destructive
    assert actions["public.unlisted"].before["mode"] == "plain"
    # A FULL rewrite is estimated slower than a plain VACUUM of the same bytes.
    assert actions["public.small"].estimate_seconds > actions["public.unlisted"].estimate_seconds


def test_estimates_scale_the_ledger_history_of_the_same_action() -> None:
    t = table("t", dead_tuples=50_000)
    (first,) = vacuum_plan(t)
    assert first.estimate_seconds == pytest.approx(12_000_000 / VACUUM_BYTES_PER_SECOND)
    history = {
        "public.t plain": (PastRun(60.0, 6_000_000), PastRun(40.0, 6_000_000)),
        "public.t full": (PastRun(1.0, 6_000_000),),
    }
    (known,) = vacuum_plan(t, history=history)
    assert known.estimate_seconds == pytest.approx(100.0)  # median 50 s per 6 MB, now 12 MB


def test_analyze_stale_thresholds() -> None:
    tables = (
        table("aged", analyze_age=8 * DAY, modified_since_analyze=1),
        table("aged_unchanged", analyze_age=30 * DAY),
        table("changed", modified_since_analyze=12_000),  # 12 %
        table("changed_little", modified_since_analyze=9_000),  # 9 %
        table("tiny_changed", live_tuples=40, reltuples=40.0, modified_since_analyze=40),
        table("never", analyze_age=None, last_analyzed=None, live_tuples=5_000),
        table("never_tiny", analyze_age=None, last_analyzed=None, live_tuples=10, reltuples=-1.0),
    )
    actions = AnalyzeStale().plan(AnalyzeFacts(tables), SETTINGS, TARGET)
    assert [a.object for a in actions] == ["public.never", "public.changed", "public.aged"]
    reasons = {a.object: a.reason for a in actions}
    assert reasons["public.never"] == "never analyzed (5,000 live rows, no statistics)"
    assert reasons["public.changed"].startswith("12.0 % of rows changed since the last analyze")
    assert reasons["public.aged"] == "statistics 8d old >= 7d, 1 rows changed since"
    assert actions[0].statement == 'ANALYZE "public"."never"'


def index(name: str = "i", **figures) -> IndexStats:
    """A 100 MB btree index of a 100,000-row table, 90 % full like a fresh build."""
    base = IndexStats(
        schema="public",
        table="t",
        name=name,
        access_method="btree",
        index_bytes=100 * 8192 * 125,
        table_bytes=500_000_000,
        live_tuples=100_000,
        dead_tuples=0,
        reltuples=100_000.0,
        hot_share=0.0,
        fillfactor=90,
        pages=IndexPages(
            internal_pages=24, leaf_pages=12_475, empty_pages=0, deleted_pages=0, leaf_density=90.0
        ),
        baseline=None,
        past=(),
    )
    return replace(base, **figures)


def reindex_plan(*indexes: IndexStats, major: int = 15, settings=SETTINGS):
    return Reindex().plan(ReindexFacts(major, 8192, WITH_PGSTATTUPLE, indexes), settings, TARGET)


def test_reindex_by_pgstatindex_density_and_pending_dead_entries() -> None:
    fresh = index("fresh")
    sparse = index("sparse", pages=replace(fresh.pages, leaf_density=30.0))
    dead = index("dead", live_tuples=40_000, dead_tuples=60_000)  # dense, 60 % entries dead
    hot = replace(dead, name="hot", hot_share=1.0)  # every dead row a HOT update: no entries
    actions = {a.object: a for a in reindex_plan(fresh, sparse, dead, hot)}
    assert set(actions) == {"public.sparse", "public.dead"}
    assert actions["public.sparse"].before["bloat_ratio"] == pytest.approx(3.0, rel=0.01)
    assert "12,475 leaf pages 30 % full" in actions["public.sparse"].reason
    assert actions["public.dead"].before["bloat_ratio"] == pytest.approx(2.5, rel=0.01)
    assert "~60 % of entries for dead rows" in actions["public.dead"].reason
    assert actions["public.dead"].statement == 'REINDEX INDEX CONCURRENTLY "public"."dead"'


def test_reindex_by_bytes_per_row_against_the_last_rebuild() -> None:
    baseline = Baseline(bytes_per_row=100.0, recorded="2026-11-24")
    gin = index("gin", access_method="gin", pages=None, baseline=baseline)  # 1,024 per row
    unknown = index("unknown", access_method="gin", pages=None)
    near = index("near", pages=None, baseline=Baseline(800.0, "2026-11-24"))  # 1.28x
    actions = reindex_plan(gin, unknown, near)
    (action,) = actions
    assert action.object == "public.gin" and action.before["method"] == "bytes per row"
    assert action.before["bloat_ratio"] == pytest.approx(10.24)
    assert (
        "1024.0 bytes per row (100,000 rows) vs 100.0 after its last rebuild (2026-11-24)"
        in action.reason
    )


def test_reindex_size_floor_order_and_server_version() -> None:
    small = index("small", index_bytes=5 << 20, pages=IndexPages(0, 640, 0, 0, 20.0))
    big = index("big", pages=IndexPages(24, 12_475, 0, 0, 20.0))
    medium = index("medium", index_bytes=50 << 20, pages=IndexPages(12, 6_400, 0, 0, 30.0))
    assert [a.object for a in reindex_plan(small, big, medium)] == ["public.big", "public.medium"]
    assert reindex_plan(big, major=11) == []  # no REINDEX CONCURRENTLY before PostgreSQL 12
    bigger_floor = MaintenanceSettings(reindex={"min_bytes": 60 << 20})
    assert [a.object for a in reindex_plan(small, big, medium, settings=bigger_floor)] == [
        "public.big"
    ]


def test_invalid_indexes_say_what_left_them() -> None:
    facts = InvalidIndexFacts(
        (
            InvalidIndex("public", "t", "t_a_idx_ccnew", 8192, False, None),
            InvalidIndex("public", "t", "t_a_idx_ccnew2", 8192, True, None),
            InvalidIndex("public", "t", "t_b_idx_ccold", 1 << 20, True, None),
            InvalidIndex("public", "t", "t_c_uniq", 0, False, None),
            InvalidIndex("public", "u", "u_building", 0, False, 4711),
        )
    )
    actions = InvalidIndexes().plan(facts, SETTINGS, TARGET)
    reasons = {a.object: a.reason for a in actions}
    assert set(reasons) == {
        "public.t_a_idx_ccnew",
        "public.t_a_idx_ccnew2",
        "public.t_b_idx_ccold",
        "public.t_c_uniq",
    }
    assert (
        "interrupted REINDEX CONCURRENTLY of t_a_idx (which is intact)"
        in reasons["public.t_a_idx_ccnew"]
    )
    assert "never updated" in reasons["public.t_a_idx_ccnew"]
    assert "still updated by every write" in reasons["public.t_a_idx_ccnew2"]
    assert (
        "interrupted after the swap (t_b_idx is the rebuilt index)"
        in reasons["public.t_b_idx_ccold"]
    )
    assert "failed or interrupted CREATE INDEX CONCURRENTLY" in reasons["public.t_c_uniq"]
    assert all(
        not a.destructive and a.statement.startswith("DROP INDEX CONCURRENTLY IF EXISTS")
        for a in actions
    )


def test_settings_durations_are_what_the_reasons_quote() -> None:
    settings = MaintenanceSettings(vacuum={"vacuum_age": timedelta(days=2)})
    (action,) = vacuum_plan(table("t", vacuum_age=3 * DAY, dead_tuples=1), settings=settings)
    assert "last vacuumed 3d ago >= 2d" in action.reason
