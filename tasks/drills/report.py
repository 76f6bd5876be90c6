"""What the DR drill flow publishes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runbook.formatting import seconds, span
from runbook.markdown import (
    DRILL_CHECK_WIDTH,
    bold,
    cell,
    markdown_table,
    text_width,
)

# Checks a drill records about its own steps (tasks/drills/steps.py); every other check is one of
# the validation checks that the drill's log counts ("validation: 18 of 18 validation checks
# passed"); all of them make its closing "drill passed: 22 of 22 checks passed".
DRILL_STEP_CHECKS = ("leftovers", "backup integrity", "restore", "rto", "rpo", "drill")


def _drill_rows(checks: Iterable[Any]) -> list[list[str]]:
    return [["ok" if c.ok else bold("FAIL"), c.name, c.detail] for c in checks]


def drill_report_markdown(drills: list[Any]) -> str:
    """Per drill: the verdict, RTO and RPO against their targets (as configured: 1h), the
    drill's own steps, then its validation checks (failures first) under the count the drill
    logged."""
    parts = []
    for d in drills:
        verdict = "PASSED" if d.passed else "FAILED"
        steps = [c for c in d.checks if c.name in DRILL_STEP_CHECKS]
        validation = [c for c in d.checks if c.name not in DRILL_STEP_CHECKS]
        validation.sort(key=lambda c: c.ok)  # stable: failures first, then in drill order
        passed = sum(1 for c in validation if c.ok)
        rto_goal = f" (target {span(d.rto_target_seconds)})" if d.rto_target_seconds else ""
        rpo_goal = f" (target {span(d.rpo_target_seconds)})" if d.rpo_target_seconds else ""
        lines = [
            f"## {d.target}: {verdict}",
            "",
            f"- drill `{d.id}`, backup `{d.backup_id or '-'}`"
            + (
                f", **fell back from corrupt backup `{d.fell_back_from}`**"
                if d.fell_back_from
                else ""
            ),
            f"- RTO {span(d.rto_seconds)}{rto_goal}, RPO {span(d.rpo_seconds)}{rpo_goal}",
            "- steps: " + ", ".join(f"{k} {seconds(v)}" for k, v in d.timings.items()),
            f"- drill {d.status}: {sum(1 for c in d.checks if c.ok)} of {len(d.checks)} checks "
            f"passed ({len(steps)} drill steps, {len(validation)} validation checks)",
        ]
        if d.data_docs:
            lines.append(f"- Great Expectations Data Docs: `{d.data_docs}`")
        if d.kept and d.scratch:
            lines.append(f"- kept for forensics: `{d.scratch}`")
        if d.failed_step:
            lines.append(f"- **failed at step `{d.failed_step}`**")
        if d.error:
            lines.append(f"- error: {cell(d.error)}")
        names = ([c.name for c in d.checks], DRILL_CHECK_WIDTH)
        widths = [None, DRILL_CHECK_WIDTH, text_width((["FAIL"], 4), names)]
        text = "\n".join(lines)
        if steps:
            text += "\n\n### Drill steps\n\n" + markdown_table(
                ["result", "check", "detail"], _drill_rows(steps), widths
            )
        if validation:
            text += (
                f"\n\n### Validation: {passed} of {len(validation)} validation checks passed\n\n"
                + markdown_table(["result", "check", "detail"], _drill_rows(validation), widths)
            )
        parts.append(text)
    passed_drills = sum(1 for d in drills if d.passed)
    return f"# DR drills: {passed_drills} of {len(drills)} passed\n\n" + "\n\n".join(parts)
