"""Human-readable reports: markdown and table artifacts for the Prefect UI.

Reports are built from catalog records and summaries only, which never hold secrets.

Both front ends of Prefect 3.8's UI show them at about 1400 px: V1 never wraps a table cell
(white-space: nowrap) and shows about 830 px of a table before it scrolls; V2 (the default)
wraps cells at spaces inside a column of about 690 px and lets a wider table run under the
side panel. So the columns people read first (status, what, target, message) come first,
long cells are wrapped here into short lines joined by <br> (both render it), nothing long
sits in a column at the far right, and long errors go in a list under the table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from prefect.artifacts import create_markdown_artifact

from runbook.catalog import BackupRecord
from runbook.formatting import BACKUP_COLUMNS, backup_rows, human_bytes, seconds, span
from runbook.health import CheckResult

# Reading order of statuses: what needs a person first.
SEVERITY_ORDER = {"critical": 0, "warn": 1, "unknown": 2, "ok": 3}

# A table row holds about 96 characters of text at a 1400 px window in either UI (V1: ~830 px
# with wide cell padding, V2: ~690 px with narrow padding). Short columns are capped at these
# widths (longer text wraps); the message or detail column gets what is left, within limits.
ROW_CHARS = 96
STATUS_CHARS = 8  # "critical"
CHECK_WIDTH, TARGET_WIDTH, VALUE_WIDTH = 30, 20, 12
TEXT_WIDTH = (30, 60)  # the message or detail column, at least and at most
DRILL_CHECK_WIDTH = 36

# A word is a run of non-space characters; a `code span` counts as one word, spaces and all.
_WORD = re.compile(r"(?:`[^`\n]*`|[^\s`]|`)+")
_BREAK_AFTER = "/.,:;_-=&?"  # where a word too long for its line is cut


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters; a longer word is cut, after a separator where it
    can be, and starts on the line it follows."""
    lines: list[str] = []
    line = ""
    for word in _WORD.findall(text):
        while word:
            room = width - len(line) - (1 if line else 0)
            if len(word) <= room:
                line, word = (f"{line} {word}" if line else word), ""
            elif len(word) > width and "`" not in word and room >= 8:
                cut = max(word.rfind(c, room // 2, room) for c in _BREAK_AFTER) + 1 or room
                lines.append(f"{line} {word[:cut]}" if line else word[:cut])
                line, word = "", word[cut:]
            elif line:
                lines.append(line)
                line = ""
            else:  # a code span wider than the line stays whole
                line, word = word, ""
    if line or not lines:
        lines.append(line)
    return lines


def _escape(line: str) -> str:
    """Pipes end a cell and `<` starts an HTML tag the UIs would swallow: escape both (inside a
    code span only the pipe, as GFM tables want)."""
    parts = line.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans
        return line.replace("|", "\\|").replace("<", "&lt;")
    return "`".join(
        part.replace("|", "\\|") if index % 2 else part.replace("|", "\\|").replace("<", "&lt;")
        for index, part in enumerate(parts)
    )


def cell(value: Any, width: int | None = None) -> str:
    """One markdown table cell: whitespace collapsed, wrapped to `width` characters per line
    with <br> (None: one line), escaped."""
    text = " ".join(str(value).split())
    lines = _wrap(text, width) if width else [text]
    return "<br>".join(_escape(line) for line in lines)


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], widths: Sequence[int | None] = ()
) -> str:
    """A markdown table; `widths[i]` wraps column i (see cell)."""
    sizes = list(widths) + [None] * (len(header) - len(widths))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(cell(v, w) for v, w in zip(row, sizes, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def _bold(text: str) -> str:
    return f"**{text}**"


def _text_width(*columns: tuple[Iterable[str], int]) -> int:
    """Characters per line left for the long-text column beside these (texts, cap) columns."""
    used = sum(min(cap, max((len(t) for t in texts), default=0)) for texts, cap in columns)
    low, high = TEXT_WIDTH
    return max(low, min(high, ROW_CHARS - used))


# --- backups, verification, retention -------------------------------------------------------


def backup_report_markdown(records: list[BackupRecord]) -> str:
    """One row per artifact; a failed backup's error in a list under the table."""
    rows = backup_rows(records, lambda text, ok: text if ok else _bold(text))
    errors = [(row[0], row[1], row[-1]) for row in rows if row[-1]]
    good = sum(1 for r in records if r.status.value == "verified")
    text = f"# Backups: {good} of {len(records)} verified\n\n" + _table(
        BACKUP_COLUMNS[:-1], [row[:-1] for row in rows]
    )
    if errors:
        text += "\n\n## Errors\n\n" + "\n".join(
            f"- {target} `{backup_id}`: {cell(error)}" for target, backup_id, error in errors
        )
    return text


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
                    human_bytes(check.bytes_read),
                    check.detail or "",
                ]
            )
    good = sum(1 for r in reports if r.ok)
    head = f"# Verification: {good} of {len(reports)} backups match their manifests\n\n"
    return head + _table(
        ["target", "backup", "key", "result", "problem", "read", "detail"],
        rows,
        [None, None, 40, None, None, None, 40],
    )


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
        + _table(
            ["target", "backup", "status", "time", "action", "reasons"],
            rows,
            [None, None, None, None, None, 40],
        )
        + tail
    )


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A keyed artifact, so the Artifacts page shows the latest version."""
    create_markdown_artifact(markdown=markdown, key=key, description=description)


# --- health ----------------------------------------------------------------------------------


def _checks(checks: Iterable[CheckResult | dict[str, Any]]) -> list[CheckResult]:
    results = [c if isinstance(c, CheckResult) else CheckResult.model_validate(c) for c in checks]
    return sorted(results, key=lambda r: (SEVERITY_ORDER[r.status.value], r.check, r.target))


def health_report_markdown(report: Any) -> str:
    """Worst first: status (a word), check, target, value with its unit, then the message
    with the threshold under it."""
    checks = _checks(report.checks)
    width = _text_width(
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
                status if status == "ok" else _bold(status),
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


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A keyed table artifact (the Artifacts page shows the latest version)."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(table=rows, key=key, description=description)


# --- drills ----------------------------------------------------------------------------------

# Checks a drill records about its own steps (tasks/restore.py); every other check is one of
# the validation checks that the drill's log counts ("validation: 18 of 18 validation checks
# passed"); all of them make its closing "drill passed: 22 of 22 checks passed".
DRILL_STEP_CHECKS = ("leftovers", "backup integrity", "restore", "rto", "rpo", "drill")


def _drill_rows(checks: Iterable[Any]) -> list[list[str]]:
    return [["ok" if c.ok else _bold("FAIL"), c.name, c.detail] for c in checks]


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
        if d.error:
            lines.append(f"- error: {cell(d.error)}")
        names = ([c.name for c in d.checks], DRILL_CHECK_WIDTH)
        widths = [None, DRILL_CHECK_WIDTH, _text_width((["FAIL"], 4), names)]
        text = "\n".join(lines)
        if steps:
            text += "\n\n### Drill steps\n\n" + _table(
                ["result", "check", "detail"], _drill_rows(steps), widths
            )
        if validation:
            text += (
                f"\n\n### Validation: {passed} of {len(validation)} validation checks passed\n\n"
                + _table(["result", "check", "detail"], _drill_rows(validation), widths)
            )
        parts.append(text)
    passed_drills = sum(1 for d in drills if d.passed)
    return f"# DR drills: {passed_drills} of {len(drills)} passed\n\n" + "\n\n".join(parts)
