"""What a maintenance window publishes: the plan before anything is applied (each action,
its reason, its estimated cost) and the window's report (what was done, deferred, skipped or
failed, and a before/after table of the figures the actions measured).

Built from the ledger's records only, which never hold secrets.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from runbook.catalog import MaintenanceAction, MaintenanceRun, Outcome
from runbook.formatting import human_bytes, human_duration, quantity, seconds
from runbook.markdown import bold, cell, markdown_table

OBJECT_WIDTH, REASON_WIDTH = 36, 60


def _estimate(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else human_duration(timedelta(seconds=value))


def _object(action: MaintenanceAction) -> str:
    return action.object or "(whole target)"


def _header(run: MaintenanceRun, title: str) -> list[str]:
    kind = "dry run: nothing is applied" if run.dry_run else "applied"
    return [
        f"# {title}",
        "",
        f"- run `{run.id}` ({kind}), targets {', '.join(run.targets)}",
        f"- procedures: {', '.join(run.procedures)}",
        f"- started {run.started_at:%Y-%m-%d %H:%M:%S} UTC; the window ends "
        f"{run.ends_at:%Y-%m-%d %H:%M:%S} UTC (its budget)",
    ]


def diff_sections(actions: list[MaintenanceAction]) -> list[str]:
    """A `diff` block per action that carries one (config_drift's changed text files; the
    diff's secret-looking values are masked already, secret files have none)."""
    lines: list[str] = []
    for a in actions:
        diff = a.before.get("diff")
        if not isinstance(diff, str) or not diff:
            continue
        longest = max((len(run) for run in re.findall(r"`+", diff)), default=0)
        fence = "`" * max(3, longest + 1)  # a diff holding ``` cannot close the block
        lines += ["", f"### {cell(a.target)} {cell(_object(a))}", "", f"{fence}diff", diff, fence]
    return ["", "## File changes since the last verified backup", *lines] if lines else []


def plan_markdown(run: MaintenanceRun) -> str:
    """The plan, before anything is applied: every action with its reason and estimate."""
    proposed = [a for a in run.actions if a.outcome == Outcome.PLANNED]
    total = sum(a.estimate_seconds for a in proposed)
    lines = _header(run, f"Maintenance plan: {run.window}")
    lines.append(
        f"- {len(proposed)} action(s) proposed, estimated {_estimate(total)} in all"
        + (
            f"; {len(run.actions) - len(proposed)} not applicable"
            if len(proposed) < len(run.actions)
            else ""
        )
    )
    if not run.actions:
        return "\n".join([*lines, "", "Nothing is over its threshold: nothing to do."])
    rows = []
    for a in run.actions:
        plan = "proposed" if a.outcome == Outcome.PLANNED else bold(a.outcome.value)
        if a.destructive and a.outcome == Outcome.PLANNED:
            plan += " (destructive)"
        reason = a.reason if a.error is None else f"{a.reason}; {a.error}"
        rows.append(
            [plan, a.procedure, a.target, _object(a), reason, _estimate(a.estimate_seconds)]
        )
    table = markdown_table(
        ["plan", "procedure", "target", "object", "reason", "estimate"],
        rows,
        [None, None, None, OBJECT_WIDTH, REASON_WIDTH, None],
    )
    statements = [
        f"- `{a.procedure}` {cell(_object(a))}: `{cell(a.statement)}`"
        for a in proposed
        if a.statement
    ]
    text = "\n".join(lines) + "\n\n" + table
    if statements:
        text += "\n\n### Statements\n\n" + "\n".join(statements)
    return "\n".join([text, *diff_sections(run.actions)])


def _figure(name: str, value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and name.endswith("bytes"):
        return human_bytes(int(value))
    return quantity(value)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def before_after_rows(actions: list[MaintenanceAction]) -> list[list[str]]:
    """target, object, procedure, figure, before, after, change: the numeric figures that
    done actions measured both before and after (text figures, a baseline's JSON, stay in the
    ledger)."""
    rows = []
    for a in actions:
        if a.outcome != Outcome.DONE:
            continue
        for name, before in a.before.items():
            after = a.after.get(name)
            if not (_numeric(before) and _numeric(after)):
                continue
            delta = after - before
            change = ("+" if delta > 0 else "") + _figure(name, delta)
            rows.append(
                [
                    a.target,
                    _object(a),
                    a.procedure,
                    name,
                    _figure(name, before),
                    _figure(name, after),
                    change,
                ]
            )
    return rows


def window_markdown(run: MaintenanceRun) -> str:
    """The window's report: verdict, notes, every action's outcome, before/after figures."""
    verdict = run.status.value.upper()
    lines = _header(run, f"Maintenance window {run.window}: {verdict}")
    finished = f"{run.finished_at:%H:%M:%S} UTC" if run.finished_at else "-"
    counts = ", ".join(f"{n} {outcome}" for outcome, n in run.counts().items()) or "no actions"
    lines += [f"- finished {finished}: {counts}"]
    if run.error:
        lines.append(f"- {bold('error')}: {cell(run.error)}")
    if run.notes:
        lines += ["", "## What the window did", ""] + [f"- {cell(n)}" for n in run.notes]
    if run.actions:
        rows = [
            [
                a.outcome.value if a.outcome == Outcome.DONE else bold(a.outcome.value),
                a.procedure,
                a.target,
                _object(a),
                a.reason if a.error is None else f"{a.reason}; {a.error}",
                seconds(a.duration),
            ]
            for a in run.actions
        ]
        lines += [
            "",
            "## Actions",
            "",
            markdown_table(
                ["outcome", "procedure", "target", "object", "reason", "took"],
                rows,
                [None, None, None, OBJECT_WIDTH, REASON_WIDTH, None],
            ),
        ]
    lines += diff_sections(run.actions)
    figures = before_after_rows(run.actions)
    if figures:
        lines += [
            "",
            "## Before and after",
            "",
            markdown_table(
                ["target", "object", "procedure", "figure", "before", "after", "change"],
                figures,
                [None, OBJECT_WIDTH, None, None, None, None, None],
            ),
        ]
    return "\n".join(lines)
