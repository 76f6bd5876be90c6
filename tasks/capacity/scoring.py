"""How well earlier reports' forecasts came true: for each earlier report whose horizon has
partly passed, each resource's P10 / P50 / P90 level it predicted for the moment of the newest
sample, against that sample; whether it fell within the P10-P90 band; and the hit rate per
resource, per report and overall (nominal 80 %). Plain functions: the earlier forecasts come
from the stored copies (stored.py), the actual levels from the catalog."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np

from runbook.catalog import Sample
from tasks.capacity.forecast import NOMINAL

DAY = 86400.0


def predicted_at(band: list[list[float]], days: float) -> dict[str, float] | None:
    """The band's P10 / P50 / P90 `days` after its report (band[k] is day k + 1, linear in
    between); None before day 1 or past the band's end."""
    if not band or days < 1 or days > len(band):
        return None
    levels = np.asarray(band, dtype=float)
    x = np.arange(1, len(band) + 1)
    return {
        name: float(np.interp(days, x, levels[:, column]))
        for column, name in enumerate(("p10", "p50", "p90"))
    }


def _rate(hits: int, scored: int) -> float | None:
    return round(hits / scored, 3) if scored else None


def score_earlier(
    earlier: Iterable[dict[str, Any]],
    actuals: dict[str, Sample],
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """The scoring of earlier reports' forecasts (their forecasts.json, oldest first; each
    dropped once scored) against the actual levels (each resource's newest sample).
    `problems`: copies that could not be read, said in the result."""
    reports, checks = [], []
    count = 0
    for data in earlier:
        count += 1
        made = datetime.fromisoformat(data["generated_at"])
        scored = hits = 0
        for row in data.get("resources", []):
            actual = actuals.get(row["resource"])
            if actual is None:
                continue
            days = (actual.time - made).total_seconds() / DAY
            predicted = predicted_at(row.get("band") or [], days)
            if predicted is None:
                continue
            within = predicted["p10"] <= actual.value <= predicted["p90"]
            scored, hits = scored + 1, hits + within
            checks.append(
                {
                    "resource": row["resource"],
                    "report": data.get("id") or data["generated_at"],
                    "generated_at": data["generated_at"],
                    "days": round(days, 1),
                    "predicted": {k: round(v, 3) for k, v in predicted.items()},
                    "actual": actual.value,
                    "unit": actual.unit,
                    "within": within,
                }
            )
        if scored:
            reports.append(
                {
                    "report": data.get("id") or data["generated_at"],
                    "generated_at": data["generated_at"],
                    "period": data.get("period"),
                    "scored": scored,
                    "within": hits,
                    "hit_rate": _rate(hits, scored),
                }
            )
    per_resource: dict[str, list[bool]] = {}
    for check in checks:
        per_resource.setdefault(check["resource"], []).append(check["within"])
    resources = [
        {"resource": r, "scored": len(w), "within": sum(w), "hit_rate": _rate(sum(w), len(w))}
        for r, w in sorted(per_resource.items())
    ]
    hits = sum(c["within"] for c in checks)
    note = None
    if not count:
        note = "no earlier report"
    elif not checks:
        note = "no earlier forecast to score yet (none made a day or more ago within its horizon)"
    return {
        "nominal": NOMINAL,
        "earlier_reports": count,
        "scored": len(checks),
        "within": hits,
        "hit_rate": _rate(hits, len(checks)),
        "note": note,
        "reports": reports,
        "resources": resources,
        "checks": checks,
        "problems": problems or [],
    }


RESOURCE_COLUMNS = (
    "resource",
    "scored",
    "within",
    "hit rate",
    "latest: predicted P10 / P50 / P90",
    "actual",
    "within band",
)


def overall_line(scoring: dict[str, Any] | None) -> str:
    if not scoring:
        return "Not scored: the earlier reports' stored copies could not be read."
    if scoring["note"]:
        return f"Not scored: {scoring['note']}."
    return (
        f"Overall: {scoring['within']} of {scoring['scored']} actual levels fell within the "
        f"predicted P10-P90 band ({scoring['hit_rate']:.0%}; nominal {scoring['nominal']:.0%}), "
        f"from {len(scoring['reports'])} earlier reports."
    )


def resource_rows(scoring: dict[str, Any] | None) -> list[list[str]]:
    """Per resource: its hit rate, and the newest earlier report's prediction against now."""
    if not scoring:
        return []
    newest = {c["resource"]: c for c in scoring["checks"]}  # checks are oldest report first
    rows = []
    for r in scoring["resources"]:
        c = newest[r["resource"]]
        p = c["predicted"]
        rows.append(
            [
                r["resource"],
                str(r["scored"]),
                str(r["within"]),
                f"{r['hit_rate']:.0%}",
                f"{p['p10']:g} / {p['p50']:g} / {p['p90']:g} ({c['days']:g} d after {c['report']})",
                f"{c['actual']:g}",
                "yes" if c["within"] else "no",
            ]
        )
    return rows


def scoring_markdown(scoring: dict[str, Any] | None) -> list[str]:
    """The report's section on its earlier forecasts."""
    lines = ["", "## How earlier forecasts came true", "", overall_line(scoring)]
    if scoring and not scoring["note"]:
        lines += [
            "",
            "| earlier report | scored | within P10-P90 | hit rate |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['report']} | {r['scored']} | {r['within']} | {r['hit_rate']:.0%} |"
            for r in scoring["reports"]
        ]
        lines += ["", "| " + " | ".join(RESOURCE_COLUMNS) + " |", "|" + "---|" * 7]
        for row in resource_rows(scoring):
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines += [f"- {problem}" for problem in (scoring or {}).get("problems", [])]
    return lines
