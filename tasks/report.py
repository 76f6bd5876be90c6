"""Human-readable reports: markdown for Prefect artifacts, and the sizes/durations they show.

Reports are built from catalog records and summaries only, which never hold secrets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prefect.artifacts import create_markdown_artifact

from runbook.catalog import BackupRecord
from runbook.formatting import BACKUP_COLUMNS, backup_rows, human_bytes


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def backup_report_markdown(records: list[BackupRecord]) -> str:
    rows = backup_rows(records, lambda text, ok: text if ok else f"**{text}**")
    good = sum(1 for r in records if r.status.value == "verified")
    return f"# Backups: {good} of {len(records)} verified\n\n" + _table(BACKUP_COLUMNS, rows)


def verification_report_markdown(reports: list[Any]) -> str:
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
                    check.detail or "",
                    human_bytes(check.bytes_read),
                ]
            )
    good = sum(1 for r in reports if r.ok)
    head = f"# Verification: {good} of {len(reports)} backups match their manifests\n\n"
    return head + _table(["target", "backup", "key", "result", "problem", "detail", "read"], rows)


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
        + _table(["target", "backup", "status", "time", "action", "reasons"], rows)
        + tail
    )


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A keyed artifact, so the Artifacts page shows the latest version."""
    create_markdown_artifact(markdown=markdown, key=key, description=description)


def health_report_markdown(report: Any) -> str:
    icon = {"ok": "✅", "warn": "⚠️", "critical": "🔴", "unknown": "❔"}
    order = {"critical": 0, "warn": 1, "unknown": 2, "ok": 3}
    rows = [
        [
            icon[r.status.value] + " " + r.status.value,
            r.check,
            r.target,
            "" if r.value is None else r.value,
            r.threshold or "",
            r.message,
        ]
        for r in sorted(report.checks, key=lambda r: (order[r.status.value], r.check, r.target))
    ]
    counts = ", ".join(
        f"{sum(1 for r in report.checks if r.status.value == s)} {s}"
        for s in ("critical", "warn", "unknown", "ok")
    )
    head = (
        f"# Health: {report.status}"
        + (f" ({report.severity})" if report.severity else "")
        + f"\n\n{len(report.checks)} checks: {counts}.\n\n"
    )
    events = [f"- {e}" for e in report.events]
    tail = ("\n\n## Notified\n\n" + "\n".join(events)) if events else ""
    return (
        head + _table(["status", "check", "target", "value", "threshold", "message"], rows) + tail
    )


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    from prefect.artifacts import create_table_artifact

    create_table_artifact(table=rows, key=key, description=description)


def drill_report_markdown(drills: list[Any]) -> str:
    parts = []
    for d in drills:
        verdict = "PASSED" if d.passed else "FAILED"
        rto = f"{d.rto_seconds:.1f}s" if d.rto_seconds is not None else "-"
        rpo = f"{d.rpo_seconds:.0f}s" if d.rpo_seconds is not None else "-"
        rto_goal = f" (target {d.rto_target_seconds:.0f}s)" if d.rto_target_seconds else ""
        rpo_goal = f" (target {d.rpo_target_seconds:.0f}s)" if d.rpo_target_seconds else ""
        lines = [
            f"## {d.target}: {verdict}",
            "",
            f"- drill `{d.id}`, backup `{d.backup_id or '-'}`"
            + (
                f", **fell back from corrupt backup `{d.fell_back_from}`**"
                if d.fell_back_from
                else ""
            ),
            f"- RTO {rto}{rto_goal}, RPO {rpo}{rpo_goal}",
            "- steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in d.timings.items()),
        ]
        if d.data_docs:
            lines.append(f"- Great Expectations Data Docs: `{d.data_docs}`")
        if d.kept and d.scratch:
            lines.append(f"- kept for forensics: `{d.scratch}`")
        if d.error:
            lines.append(f"- error: {d.error}")
        rows = [["✅" if c.ok else "❌", c.name, c.detail] for c in d.checks]
        parts.append("\n".join(lines) + "\n\n" + _table(["ok", "check", "detail"], rows))
    passed = sum(1 for d in drills if d.passed)
    return f"# DR drills: {passed} of {len(drills)} passed\n\n" + "\n\n".join(parts)
