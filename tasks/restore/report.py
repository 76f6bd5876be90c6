"""What the restore flow publishes (artifact `restore-report`), and the JSON shape of a
restore (`runbook restore --json`, stable: fields may be added, none removed)."""

from __future__ import annotations

from typing import Any

from runbook.catalog import RestoreRecord
from runbook.formatting import seconds
from runbook.markdown import bold, markdown_table


def restore_json(r: RestoreRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "target": r.target,
        "kind": r.kind,
        "backup_id": r.backup_id,
        "fell_back_from": r.fell_back_from,
        "into": r.into,
        "schema": r.schema_name,
        "status": str(r.status),
        "started_at": r.started_at.isoformat(),
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        "rto_seconds": r.rto_seconds,
        "timings": r.timings,
        "checks": [c.model_dump() for c in r.checks],
        "hooks": [h.model_dump() for h in r.hooks],
        "plan": r.plan,
        "next_steps": r.next_steps,
        "error": r.error,
        "failed_step": str(r.failed_step) if r.failed_step else None,
    }


def restore_markdown(r: RestoreRecord) -> str:
    verdict = "RESTORED" if r.restored else str(r.status).upper()
    lines = [
        f"# Restore of {r.target}: {verdict}",
        "",
        f"Backup {r.backup_id or '-'}"
        + (f" (fell back from corrupt {r.fell_back_from})" if r.fell_back_from else "")
        + f" into {r.into}"
        + (f", schema {r.schema_name}" if r.schema_name else "")
        + f"; RTO {seconds(r.rto_seconds)}.",
    ]
    if r.error:
        lines += [
            "",
            f"**{'Failed at ' + str(r.failed_step) if r.failed_step else 'Error'}**: {r.error}",
        ]
    if r.timings:
        lines += ["", "Steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items())]
    lines += ["", "## Plan", ""] + [f"- {action}" for action in r.plan]
    if r.next_steps:
        lines += ["", "## Next steps", ""]
        lines += [f"{n}. {step}" for n, step in enumerate(r.next_steps, start=1)]
    if r.hooks:
        rows = [["ok" if h.ok else bold("FAIL"), h.name, h.detail] for h in r.hooks]
        lines += ["", "## Hooks", "", markdown_table(["", "step", "detail"], rows)]
    checks = sorted(r.checks, key=lambda c: c.ok)
    rows = [["ok" if c.ok else bold("FAIL"), c.name, c.detail] for c in checks]
    passed = sum(1 for c in r.checks if c.ok)
    lines += ["", f"## Checks: {passed} of {len(r.checks)} passed", ""]
    lines += [markdown_table(["", "check", "detail"], rows)] if rows else []
    return "\n".join(lines) + "\n"
