"""What a diagnostics bundle tells a person: findings first (failed sections among them),
then one row per section, then where the bundle is and whether it read back."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from runbook.markdown import cell
from tasks.diagnose.sections import Section


class DiagnosticsBundle(BaseModel):
    """The diagnose flow's summary (`runbook diagnose --json` prints it under "bundle")."""

    id: str
    key: str
    incident: str | None = None
    created_at: datetime
    verified: bool
    problems: list[str] = []  # why it did not verify
    bytes: int = 0
    sections: list[Section]
    findings: list[str]
    deleted: list[str] = []  # older bundles retention removed

    def to_json(self) -> dict:
        data = self.model_dump(mode="json")
        data["sections"] = [
            {k: s[k] for k in ("name", "target", "ok", "bytes", "detail", "seconds", "truncated")}
            | {"findings": s["findings"]}
            for s in data["sections"]
        ]
        return data


def all_findings(sections: list[Section]) -> list[str]:
    """Failed sections first, then each section's findings, labelled with where they come from."""
    failed = [f"[{s.name} {s.target}] section failed: {s.detail}" for s in sections if not s.ok]
    found = [f"[{s.name} {s.target}] {f}" for s in sections for f in s.findings]
    return failed + found


def bundle_markdown(bundle: DiagnosticsBundle, stored: bool = True) -> str:
    """The artifact (and, with `stored` false, the README.md inside the bundle itself)."""
    title = f"# Diagnostics {bundle.id}" + (f" ({bundle.incident})" if bundle.incident else "")
    ok = sum(1 for s in bundle.sections if s.ok)
    where = ""
    if stored:
        where = f" Stored as `{bundle.key}` ({bundle.bytes} bytes), " + (
            "verified by reading it back." if bundle.verified else "**NOT verified**."
        )
    lines = [
        title,
        "",
        f"Collected {bundle.created_at:%Y-%m-%d %H:%M:%S} UTC: {len(bundle.sections)} sections, "
        f"{ok} collected, {len(bundle.sections) - ok} failed.{where}",
        "",
        "## Findings",
        "",
    ]
    lines += [f"- {cell(f)}" for f in bundle.findings] or ["- nothing stands out"]
    if bundle.problems:
        lines += ["", "## Storage problems", ""] + [f"- {cell(p)}" for p in bundle.problems]
    lines += [
        "",
        "## Sections",
        "",
        "| section | target | ok | bytes | seconds | detail |",
        "|---|---|---|---|---|---|",
    ]
    for s in bundle.sections:
        lines.append(
            f"| {s.name} | {cell(s.target)} | {'yes' if s.ok else '**no**'} | {s.bytes} "
            f"| {s.seconds:.2f} | {cell(s.detail)} |"
        )
    if bundle.deleted:
        lines += ["", f"Retention removed {len(bundle.deleted)} older bundle(s)."]
    return "\n".join(lines) + "\n"
