"""What the backup, verification and retention flows publish."""

from __future__ import annotations

from typing import Any

from runbook.catalog import BackupRecord
from runbook.formatting import BACKUP_COLUMNS, backup_rows, human_bytes
from runbook.markdown import (
    bold,
    cell,
    markdown_table,
)
from runbook.pins import Pin


def backup_report_markdown(records: list[BackupRecord]) -> str:
    """One row per artifact; a failed backup's error, with the step it failed in, in a list
    under the table."""
    rows = backup_rows(records, lambda text, ok: text if ok else bold(text))
    errors = [(row[0], row[1], row[-1]) for row in rows if row[-1]]
    good = sum(1 for r in records if r.status.value == "verified")
    text = f"# Backups: {good} of {len(records)} verified\n\n" + markdown_table(
        BACKUP_COLUMNS[:-1], [row[:-1] for row in rows]
    )
    labelled = [r for r in records if r.label or r.keep_until]
    if labelled:
        text += "\n\n## Labels and pins\n\n" + "\n".join(
            f"- {r.target} `{r.id}`: {cell(Pin(r.label, r.keep_until).describe())}"
            for r in labelled
        )
    if errors:
        text += "\n\n## Errors\n\n" + "\n".join(
            f"- {target} `{backup_id}`: {cell(error)}" for target, backup_id, error in errors
        )
    return text


def verification_report_markdown(reports: list[Any]) -> str:
    """One row per artifact read back; what to do about each damaged one under the table."""
    rows = []
    for report in reports:
        for check in report.artifacts:
            rows.append(
                [
                    report.target,
                    report.backup_id,
                    check.key,
                    "ok" if check.ok else "**DAMAGED**",
                    check.problem or "",
                    human_bytes(check.bytes_read),
                    check.detail or "",
                ]
            )
    good = sum(1 for r in reports if r.ok)
    head = f"# Verification: {good} of {len(reports)} backups match their manifests\n\n"
    text = head + markdown_table(
        ["target", "backup", "key", "result", "problem", "read", "detail"],
        rows,
        [None, None, 40, None, None, None, 40],
    )
    remedies = [
        f"- {report.target} `{report.backup_id}`, {check.problem}: {cell(check.remedy)}"
        for report in reports
        for check in report.problems
    ]
    if remedies:
        text += "\n\n## What to do\n\n" + "\n".join(dict.fromkeys(remedies))
    return text


def retention_report_markdown(summary: Any) -> str:
    mode = "dry run (nothing deleted)" if summary.dry_run else "applied"
    rows = [
        [d.target, d.id, d.status, d.at.strftime("%Y-%m-%d %H:%M"), d.action, "; ".join(d.reasons)]
        for d in summary.decisions
    ]
    garbage = summary.garbage
    tail = (
        f"\n\nGarbage: {garbage.get('incomplete_uploads', 0)} unfinished upload(s) removed, "
        f"{len(garbage.get('orphans_deleted', []))} uncommitted folder(s) "
        f"{'deleted' if not summary.dry_run else 'to delete'}, "
        f"{len(garbage.get('orphans_imported', []))} committed folder(s) imported."
    )
    return (
        f"# Retention, {mode}\n\n"
        + markdown_table(
            ["target", "backup", "status", "time", "action", "reasons"],
            rows,
            [None, None, None, None, None, 40],
        )
        + tail
    )
