"""The capacity report: every resource with samples forecast from its history and the events
Runbook caused, ranked by P10 days until 90 % (the nearest to full on top); as JSON (`runbook
capacity report --json`), a markdown table (the Prefect artifact), and a self-contained HTML
page with the charts embedded, beside the PNG files under the configured folder."""

from __future__ import annotations

import base64
import html
import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from runbook.catalog import Catalog, MaintenanceLog, MetricSamples
from runbook.config import Config
from runbook.formatting import human_bytes, quantity
from tasks.capacity.charts import chart_png
from tasks.capacity.collect_backups import retention_deletes
from tasks.capacity.events import catalog_changes
from tasks.capacity.forecast import NOMINAL, forecast_many
from tasks.capacity.history import job_of, settings_of
from tasks.capacity.scoring import RESOURCE_COLUMNS, overall_line, resource_rows, scoring_markdown

STORED_PREFIX = "_capacity/"  # where stored.py keeps the copies
STATUS_ORDER = {"critical": 0, "warn": 1, "ok": 2, "not-growing": 3, "not-enough-history": 4}


class ResourceReport(BaseModel):
    resource: str
    kind: str
    target: str
    current: float | None
    limit: float | None
    unit: str
    samples: int
    status: str
    days_until: dict[str, dict[str, float | None]]
    act_by: date | None = None
    events: list[dict[str, Any]] = []
    method: str | None = None
    growth_per_day: float | None = None
    monthly_growth: float | None = None
    plan: dict[str, float | None] | None = None
    calibration: dict[str, Any] = {}
    chart: str | None = None  # the PNG's file name under the report folder
    # The forecast band (band[k]: P10 / P50 / P90 level k + 1 days on), for the stored copy
    # that later reports score; never in the flow's result or the JSON output (it is large).
    band: Any = Field(default=None, exclude=True)  # numpy (days, 3), or None

    def p10(self, threshold: str = "90") -> float:
        value = (self.days_until.get(threshold) or {}).get("p10")
        return math.inf if value is None else value

    def json_row(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data.pop("chart")
        return data


class CapacityReport(BaseModel):
    generated_at: datetime
    period: str
    resources: list[ResourceReport]
    calibration: dict[str, Any]
    folder: str | None = None
    html: str | None = None  # the HTML report's path
    # How earlier reports' forecasts came true (scoring.py); None: not scored
    scoring: dict[str, Any] | None = None
    stored: str | None = None  # the copy's id under _capacity/ in storage
    storage_error: str | None = None  # why no copy was stored

    @property
    def worst(self) -> str:
        statuses = [r.status for r in self.resources] or ["ok"]
        return min(statuses, key=lambda s: STATUS_ORDER.get(s, 9))

    def json_report(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "period": self.period,
            "resources": [r.json_row() for r in self.resources],
            "calibration": self.calibration,
            "html": self.html,
            "scoring": self.scoring,
            "stored": self.stored,
            "storage_error": self.storage_error,
        }


def report_folder(config: Config) -> Path:
    folder = config.capacity.folder
    base = config.state_dir.parent
    if folder is None:
        return config.state_dir / "capacity"
    return folder if folder.is_absolute() else base / folder


def chart_name(resource: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in resource) + ".png"


def build_report(
    config: Config,
    catalog: Catalog,
    *,
    period: str = "month",
    only: list[str] | None = None,
    now: datetime | None = None,
) -> tuple[CapacityReport, dict[str, bytes]]:
    """The report and its charts (file name -> PNG bytes), nothing written yet."""
    now = now or datetime.now(UTC)
    store = MetricSamples(catalog)
    changes = catalog_changes(MaintenanceLog(catalog), retention_deletes(catalog))
    settings = settings_of(config)
    rows, charts = [], {}
    hits = points = cutoffs = 0
    calibrated_hits = 0.0
    chosen = [i.latest for i in store.resources() if not only or i.latest.resource in only]
    jobs = [job_of(store, latest, changes) for latest in chosen]
    for latest, result in zip(chosen, forecast_many(jobs, settings, now), strict=True):
        name = chart_name(latest.resource)
        charts[name] = chart_png(latest.resource, latest.unit, result)
        calibration = result.calibration
        if calibration.points:
            hits += round(calibration.observed * calibration.points)
            calibrated_hits += calibration.calibrated * calibration.points
            points += calibration.points
            cutoffs += calibration.cutoffs
        rows.append(
            ResourceReport(
                resource=latest.resource,
                kind=latest.kind,
                target=latest.target,
                current=result.current,
                limit=result.limit,
                unit=latest.unit,
                samples=result.samples,
                status=result.status,
                days_until=result.days_until,
                act_by=result.act_by,
                events=[e.json() for e in result.events],
                method=result.method,
                growth_per_day=result.growth_per_day,
                monthly_growth=result.monthly_growth,
                plan=result.plan,
                calibration=calibration.json(),
                chart=name,
                band=result.band,
            )
        )
    rows.sort(key=lambda r: (r.p10("90"), STATUS_ORDER.get(r.status, 9), r.resource))
    overall = {
        "nominal": NOMINAL,
        "observed": round(hits / points, 3) if points else None,
        "calibrated": round(calibrated_hits / points, 3) if points else None,
        "cutoffs": cutoffs,
    }
    report = CapacityReport(generated_at=now, period=period, resources=rows, calibration=overall)
    return report, charts


def write_report(
    report: CapacityReport, charts: dict[str, bytes], folder: Path, html_file: Path | None
) -> CapacityReport:
    """PNGs and `capacity-<date>.html` under the folder (and the HTML at html_file too)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, png in charts.items():
        (folder / name).write_bytes(png)
    page = report_html(report, charts)
    target = folder / f"capacity-{report.generated_at:%Y-%m-%d}.html"
    target.write_text(page, encoding="utf-8")
    if html_file is not None:
        html_file.parent.mkdir(parents=True, exist_ok=True)
        html_file.write_text(page, encoding="utf-8")
        target = html_file
    return report.model_copy(update={"folder": str(folder), "html": str(target)})


# --- text -----------------------------------------------------------------------------------


def shown(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return human_bytes(int(value)) if unit == "bytes" else quantity(round(value, 2), unit)


def days(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def band(row: ResourceReport, threshold: str) -> str:
    q = row.days_until.get(threshold) or {}
    if all(q.get(k) is None for k in ("p10", "p50", "p90")):
        return "-"
    return f"{days(q.get('p10'))} / {days(q.get('p50'))} / {days(q.get('p90'))}"


def used(row: ResourceReport) -> str:
    if row.limit and row.current is not None:
        return f"{100 * row.current / row.limit:.1f} %"
    return "-"


COLUMNS = (
    "#",
    "resource",
    "status",
    "now",
    "limit",
    "used",
    "days to 80 %",
    "days to 90 % (P10/P50/P90)",
    "days to 100 %",
    "act by",
    "events",
)


def table_rows(report: CapacityReport) -> list[list[str]]:
    return [
        [
            str(rank),
            row.resource,
            row.status,
            shown(row.current, row.unit),
            shown(row.limit, row.unit),
            used(row),
            band(row, "80"),
            band(row, "90"),
            band(row, "100"),
            str(row.act_by or "-"),
            str(len(row.events)),
        ]
        for rank, row in enumerate(report.resources, start=1)
    ]


def calibration_line(report: CapacityReport) -> str:
    c = report.calibration
    if not c.get("cutoffs"):
        return "Calibration: no resource has enough history for a backtest yet."
    return (
        f"Calibration of the P10-P90 band: nominal {c['nominal']:.0%}, observed "
        f"{c['observed']:.0%} over {c['cutoffs']} cut-offs, {c['calibrated']:.0%} after "
        "widening or narrowing it per resource."
    )


def report_markdown(report: CapacityReport) -> str:
    lines = [
        f"# Capacity report ({report.period}), {report.generated_at:%Y-%m-%d %H:%M} UTC",
        "",
        "Ranked by P10 days until 90 % of the limit: the resource nearest to full on top. "
        "Days are P10 / P50 / P90; '-' = not reached within the horizon, or not forecast.",
        "",
        calibration_line(report),
        "",
    ]
    if not report.resources:
        lines.append("No samples yet: run `capacity-collect` (or `runbook capacity collect`).")
        return "\n".join(lines)
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    for row in table_rows(report):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    planned = [r for r in report.resources if r.plan]
    if planned:
        lines += ["", "## Growth against the plan", ""]
        for r in planned:
            actual = r.plan.get("monthly_growth_actual")
            lines.append(
                f"- {r.resource}: {'-' if actual is None else f'{actual:.1%}'} a month, planned "
                f"{r.plan['monthly_growth_planned']:.0%}; at the planned rate 100 % in "
                f"{days(r.plan.get('days_until_100_planned'))} days"
            )
    lines += scoring_markdown(report.scoring)
    if report.html:
        lines += ["", f"Charts: {report.html}"]
    if report.stored:
        lines += ["", f"Stored: {STORED_PREFIX}{report.stored}/ in storage"]
    if report.storage_error:
        lines += ["", f"**Not stored in storage**: {report.storage_error}"]
    return "\n".join(lines)


def scoring_html(scoring: dict[str, Any] | None) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in RESOURCE_COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>"
        for row in resource_rows(scoring)
    )
    table = f"<table><tr>{head}</tr>{rows}</table>" if rows else ""
    return f"<h2>How earlier forecasts came true</h2><p>{esc(overall_line(scoring))}</p>{table}"


def report_html(report: CapacityReport, charts: dict[str, bytes]) -> str:
    """One self-contained page: the ranked table, then each resource's chart as an embedded
    PNG with its figures and events."""
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>"
        for row in table_rows(report)
    )
    sections = []
    for row in report.resources:
        png = charts.get(row.chart or "")
        image = (
            f'<img alt="{esc(row.resource)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode()}">'
            if png
            else ""
        )
        events = "".join(
            f"<li>{esc(e['time'][:16])} {esc(e['kind'])}: {esc(e['description'])}</li>"
            for e in row.events
        )
        sections.append(
            f"<section><h2>{esc(row.resource)} <small>{esc(row.status)}</small></h2>{image}"
            f"<p>method {esc(row.method or '-')}; calibration {esc(str(row.calibration))}</p>"
            f"<ul>{events}</ul></section>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Capacity report {report.generated_at:%Y-%m-%d}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}img{max-width:100%}"
        "</style></head><body>"
        f"<h1>Capacity report ({esc(report.period)}), {report.generated_at:%Y-%m-%d %H:%M} UTC"
        f"</h1><p>{esc(calibration_line(report))}</p>"
        f"<table><tr>{head}</tr>{body}</table>{scoring_html(report.scoring)}"
        f"{''.join(sections)}</body></html>"
    )
