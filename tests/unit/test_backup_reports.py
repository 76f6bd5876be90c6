"""The backups wing's reports as text: a failed backup's step, a damaged artifact's remedy."""

from __future__ import annotations

from datetime import UTC, datetime

from runbook.catalog import BackupRecord, BackupStatus, BackupStep
from runbook.formatting import BACKUP_COLUMNS, backup_rows
from tasks.backups.report import backup_report_markdown, verification_report_markdown
from tasks.backups.verify import REMEDY, ArtifactCheck, VerificationReport

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def failed(backup_id: str, step: BackupStep | None, error: str) -> BackupRecord:
    return BackupRecord(
        id=backup_id,
        target="app",
        kind="postgres",
        status=BackupStatus.FAILED,
        started_at=NOW,
        storage="local",
        error=error,
        failed_step=step,
    )


def test_a_failed_backup_names_its_step_beside_its_error():
    records = [
        failed("b1", BackupStep.DUMP, "ProcessFailed: pg_dump was killed by SIGKILL"),
        failed("b2", None, "imported from storage; not yet verified"),
    ]
    rows = {row[1]: dict(zip(BACKUP_COLUMNS, row, strict=True)) for row in backup_rows(records)}
    assert rows["b1"]["error"] == "failed at dump: ProcessFailed: pg_dump was killed by SIGKILL"
    assert rows["b2"]["error"] == "imported from storage; not yet verified"

    _, _, errors = backup_report_markdown(records).partition("## Errors")
    assert "- app `b1`: failed at dump: ProcessFailed: pg_dump was killed by SIGKILL" in errors


def test_the_verification_report_says_what_to_do_about_each_damage():
    checks = [
        ArtifactCheck(key="app/b1/database.pgdump.zst", ok=True, bytes_read=10),
        ArtifactCheck(
            key="app/b1/schema-shop.pgdump.zst",
            ok=False,
            problem="checksum",
            detail="sha256 differs",
        ),
    ]
    report = VerificationReport(
        backup_id="b1", target="app", ok=False, started_at=NOW, finished_at=NOW, artifacts=checks
    )
    assert checks[0].remedy is None and checks[1].remedy == REMEDY["checksum"]
    markdown = verification_report_markdown([report])
    table, _, remedies = markdown.partition("## What to do")
    assert "sha256 differs" in table
    assert remedies.strip() == f"- app `b1`, checksum: {REMEDY['checksum']}"

    fine = report.model_copy(update={"ok": True, "artifacts": checks[:1]})
    assert "What to do" not in verification_report_markdown([fine])


def test_every_problem_kind_has_a_remedy():
    for problem in ("missing", "size", "checksum", "undecodable", "content", "manifest"):
        check = ArtifactCheck(key="k", ok=False, problem=problem, detail="d")
        assert check.remedy == REMEDY[problem]
