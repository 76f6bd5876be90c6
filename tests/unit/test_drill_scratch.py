"""Where a drill restores, plainly: the one rule that refuses the source database
(tasks.drills.scratch.refuse_source), the scratch record's form, the archive's pg_dump major
(runbook.manifest.Manifest.dump_major) and the drill report's failed step."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from runbook.catalog import DrillRecord
from runbook.config import PostgresTarget
from runbook.manifest import Manifest
from tasks.drills.report import drill_report_markdown
from tasks.drills.scratch import DrillRefused, ScratchPlace, refuse_source

SOURCE_DSN = "postgresql://app@db.internal:5432/shop"
SOURCE = {"system_identifier": "7301", "database": "shop"}


def target(drill_dsn: str | None = None) -> PostgresTarget:
    drill = {"dsn": SecretStr(drill_dsn)} if drill_dsn else {}
    return PostgresTarget(name="shop-db", dsn=SecretStr(SOURCE_DSN), drill=drill)


def test_the_source_dsn_is_refused_before_connecting():
    with pytest.raises(DrillRefused, match=r"points at the source database 'shop'"):
        refuse_source(target(SOURCE_DSN), SOURCE_DSN)
    refuse_source(target(), "postgresql://app@db.internal:5432/postgres")  # another database
    refuse_source(target(), "postgresql://app@drills.internal:5432/shop")  # another server


def test_the_source_server_under_another_name_is_refused_once_connected():
    other_spelling = "postgresql://app@10.0.0.7:5432/shop"
    refuse_source(target(), other_spelling)  # the DSNs differ: nothing to tell yet
    with pytest.raises(DrillRefused, match="source database 'shop' on the source server"):
        refuse_source(target(), other_spelling, server=("7301", "shop"), source=SOURCE)
    # Same server, another database: a scratch database may live there...
    refuse_source(
        target(), other_spelling, server=("7301", "postgres"), source=SOURCE, scratch="rb_x"
    )
    # ...unless it would carry the source database's name.
    with pytest.raises(DrillRefused, match="scratch database 'shop'"):
        refuse_source(
            target(), other_spelling, server=("7301", "postgres"), source=SOURCE, scratch="shop"
        )
    # Another server whose current database happens to share the name: fine.
    refuse_source(target(), other_spelling, server=("9999", "shop"), source=SOURCE)


def test_scratch_places_read_back_as_written():
    for text in (
        "embedded:/tmp/runbook-drill-app-1/pg|runbook_drill_app_x|/tmp/runbook-drill-app-1",
        "postgres:drills.internal:5432|runbook_drill_app_x|/tmp/runbook-drill-app-2",
        "redis-server||/tmp/runbook-drill-cache-3",
    ):
        place = ScratchPlace.parse(text)
        assert str(place) == text
    assert ScratchPlace.parse(text).what == "/tmp/runbook-drill-cache-3"
    assert ScratchPlace("postgres:h:1", "runbook_drill_a", Path("/w")).what == "runbook_drill_a"


def manifest(tools: dict[str, str], source: dict) -> Manifest:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    return Manifest(
        backup_id="b",
        target="app",
        kind="postgres",
        started_at=at,
        finished_at=at,
        artifacts=[],
        tools=tools,
        source=source,
    )


def test_the_archive_major_is_the_pg_dump_that_wrote_it():
    assert (
        manifest({"pg_dump": "pg_dump 18.6 (/usr/bin/pg_dump)"}, {"server_major": 15}).dump_major
        == 18
    )
    assert manifest({}, {"server_major": 15}).dump_major == 15  # older manifests
    assert manifest({}, {}).dump_major == 0


def test_the_drill_report_names_the_step_a_drill_failed_at():
    at = datetime(2026, 12, 1, tzinfo=UTC)
    failed = DrillRecord(
        id="d1",
        target="app",
        status="failed",
        failed_step="restore",
        error="PermanentError: pg_restore failed",
        started_at=at,
        host="h",
        pid=1,
    )
    passed = failed.model_copy(
        update={"id": "d2", "status": "passed", "failed_step": None, "error": None}
    )

    markdown = drill_report_markdown([failed, passed])

    failed_part, _, passed_part = markdown.partition("## app: PASSED")
    assert "## app: FAILED" in failed_part and "failed at step `restore`" in failed_part
    assert "failed at step" not in passed_part
