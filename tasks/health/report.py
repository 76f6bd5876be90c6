"""What the health flow publishes: the report (markdown) and the checks (table)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runbook.formatting import seconds
from runbook.health import CheckResult
from runbook.markdown import (
    CHECK_WIDTH,
    SEVERITY_ORDER,
    STATUS_CHARS,
    TARGET_WIDTH,
    VALUE_WIDTH,
    bold,
    cell,
    text_width,
)


def _checks(checks: Iterable[CheckResult | dict[str, Any]]) -> list[CheckResult]:
    results = [c if isinstance(c, CheckResult) else CheckResult.model_validate(c) for c in checks]
    return sorted(results, key=lambda r: (SEVERITY_ORDER[r.status.value], r.check, r.target))


def health_report_markdown(report: Any) -> str:
    """Worst first: status (a word), check, target, value with its unit, then the message
    with the threshold under it."""
    checks = _checks(report.checks)
    width = text_width(
        (["critical"], STATUS_CHARS),
        ([r.check for r in checks], CHECK_WIDTH),
        ([r.target for r in checks], TARGET_WIDTH),
        ([r.display_value for r in checks], VALUE_WIDTH),
    )
    rows = []
    for r in checks:
        status = r.status.value
        message = cell(r.message, width)
        if r.threshold:
            message += "<br>" + cell(f"threshold: {r.threshold}", width)
        rows.append(
            [
                status if status == "ok" else bold(status),
                cell(r.check, CHECK_WIDTH),
                cell(r.target, TARGET_WIDTH),
                cell(r.display_value, VALUE_WIDTH),
                message,
            ]
        )
    counts = ", ".join(
        f"{sum(1 for r in report.checks if r.status.value == s)} {s}" for s in SEVERITY_ORDER
    )
    head = (
        f"# Health: {report.status}"
        + (f" ({report.severity})" if report.severity else "")
        + f"\n\n{len(report.checks)} checks: {counts}.\n\n"
    )
    table = "\n".join(
        ["| status | check | target | value | message |", "|---|---|---|---|---|"]
        + ["| " + " | ".join(row) + " |" for row in rows]
    )
    events = [f"- {cell(e)}" for e in report.events]
    tail = ("\n\n## Notified\n\n" + "\n".join(events)) if events else ""
    return head + table + tail


HEALTH_TABLE_COLUMNS = ("status", "check", "target", "message", "value", "threshold", "duration")


def health_table_rows(checks: Iterable[CheckResult | dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the `health-checks` table artifact: worst first (critical, warn, unknown, ok),
    columns in HEALTH_TABLE_COLUMNS order, the value with its unit. Table cells never wrap in
    either UI, so the message comes right after what and where; the rest after it. (V1 renders
    each cell as markdown, V2 as plain text.)"""
    return [
        {
            "status": r.status.value,
            "check": r.check,
            "target": r.target,
            "message": r.message,
            "value": "" if r.value is None else r.display_value,  # V1: "-" is a markdown list
            "threshold": r.threshold or "",
            "duration": seconds(r.duration),
        }
        for r in _checks(checks)
    ]
