"""The daily report (runbook 001, 6 PM): one local day of health (status changes, worst checks,
time spent critical), backups and verifications (verified, failed, sizes and growth), drills
and maintenance actions, read from the catalog and written as markdown.

`day_bounds` turns a date in the config's timezone into UTC bounds; `build_daily_report`
reads the catalog (read only); `daily_markdown` writes it for people.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from runbook.catalog import (
    COMMITTED,
    Catalog,
    DrillLog,
    HealthHistory,
    MaintenanceLog,
)
from runbook.formatting import human_bytes, human_duration
from runbook.health import RANK, Status
from runbook.markdown import cell


class StatusChange(BaseModel):
    at: datetime
    check: str
    target: str
    before: str
    after: str


class CheckDay(BaseModel):
    check: str
    target: str
    worst: str
    failing_runs: int
    critical_seconds: float
    last_message: str


class BackupDay(BaseModel):
    id: str
    target: str
    status: str
    bytes_stored: int | None
    growth_percent: float | None  # against the target's previous committed backup
    error: str | None = None


class VerificationDay(BaseModel):
    backup_id: str
    ok: bool
    at: datetime
    problems: int


class DrillDay(BaseModel):
    id: str
    target: str
    status: str
    rto_seconds: float | None
    rpo_seconds: float | None


class MaintenanceDay(BaseModel):
    id: str
    window: str
    dry_run: bool
    status: str
    counts: dict[str, int]
    applied: list[str]  # "vacuum public.orders on app: done"


class DailyReport(BaseModel):
    day: date
    timezone: str
    start: datetime
    end: datetime
    health_runs: int
    worst_status: str | None
    changes: list[StatusChange]
    worst_checks: list[CheckDay]
    backups: list[BackupDay]
    verifications: list[VerificationDay]
    drills: list[DrillDay]
    maintenance: list[MaintenanceDay]

    @property
    def filename(self) -> str:
        return f"daily_{self.day:%Y%m%d}.md"


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """[local midnight, next local midnight) of `day` in `timezone`, as UTC."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, time(0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def today(timezone: str, now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(ZoneInfo(timezone)).date()


def _health(history: HealthHistory, start: datetime, end: datetime, now: datetime) -> dict:
    """Status changes, and per failing check its worst status and time spent critical (a
    critical result lasts until the check's next result, or the end of the day / now)."""
    runs = history.runs_between(start, end)
    results = history.results_between(start, end)
    by_key: dict[tuple[str, str], list] = defaultdict(list)
    for r in results:
        by_key[(r.check, r.target)].append(r)
    changes, days = [], []
    until = min(end, now)
    for (check, target), series in by_key.items():
        for before, after in zip(series, series[1:], strict=False):
            if before.status != after.status:
                changes.append(
                    StatusChange(
                        at=after.at,
                        check=check,
                        target=target,
                        before=before.status.value,
                        after=after.status.value,
                    )
                )
        failing = [r for r in series if r.status != Status.OK]
        if not failing:
            continue
        critical = 0.0
        for index, r in enumerate(series):
            if r.status == Status.CRITICAL:
                following = series[index + 1].at if index + 1 < len(series) else until
                critical += max(0.0, (following - r.at).total_seconds())
        worst = max((r.status for r in failing), key=RANK.__getitem__)
        days.append(
            CheckDay(
                check=check,
                target=target,
                worst=worst.value,
                failing_runs=len(failing),
                critical_seconds=round(critical, 1),
                last_message=failing[-1].message,
            )
        )
    days.sort(key=lambda d: (-RANK[Status(d.worst)], -d.critical_seconds, -d.failing_runs))
    changes.sort(key=lambda c: c.at)
    finished = [Status(r.status.value) for r in runs if r.status.value != "running"]
    worst_run = max(finished, key=RANK.__getitem__).value if finished else None
    return {"runs": len(runs), "worst": worst_run, "changes": changes, "checks": days}


def _backups(catalog: Catalog, start: datetime, end: datetime) -> list[BackupDay]:
    found = []
    everything = catalog.list_backups(include_deleted=True)
    for record in reversed(everything):  # oldest first
        if not start <= record.started_at < end:
            continue
        earlier = [
            b
            for b in everything
            if b.target == record.target
            and b.started_at < record.started_at
            and b.status in COMMITTED
            and b.bytes_stored
        ]
        growth = None
        if earlier and record.bytes_stored:
            previous = earlier[0].bytes_stored  # newest first
            growth = round((record.bytes_stored - previous) / previous * 100, 1)
        found.append(
            BackupDay(
                id=record.id,
                target=record.target,
                status=record.status.value,
                bytes_stored=record.bytes_stored,
                growth_percent=growth,
                error=record.error,
            )
        )
    return found


def build_daily_report(
    catalog: Catalog, day: date, timezone: str, now: datetime | None = None
) -> DailyReport:
    now = now or datetime.now(UTC)
    start, end = day_bounds(day, timezone)
    health = _health(HealthHistory(catalog), start, end, now)
    drills = [
        DrillDay(
            id=d.id,
            target=d.target,
            status=d.status.value,
            rto_seconds=d.rto_seconds,
            rpo_seconds=d.rpo_seconds,
        )
        for d in reversed(DrillLog(catalog).list(limit=None))
        if start <= d.started_at < end
    ]
    maintenance = [
        MaintenanceDay(
            id=run.id,
            window=run.window,
            dry_run=run.dry_run,
            status=run.status.value,
            counts=run.counts(),
            applied=[
                f"{a.procedure} {a.object or '(target)'} on {a.target}: {a.outcome.value}"
                for a in run.actions
                if a.outcome.value in ("done", "failed")
            ],
        )
        for run in reversed(MaintenanceLog(catalog).list(limit=None))
        if start <= run.started_at < end
    ]
    verifications = [
        VerificationDay(backup_id=v.backup_id, ok=v.ok, at=v.finished_at, problems=len(v.problems))
        for v in catalog.verifications_between(start, end)
    ]
    return DailyReport(
        day=day,
        timezone=timezone,
        start=start,
        end=end,
        health_runs=health["runs"],
        worst_status=health["worst"],
        changes=health["changes"],
        worst_checks=health["checks"],
        backups=_backups(catalog, start, end),
        verifications=verifications,
        drills=drills,
        maintenance=maintenance,
    )


def _critical_for(seconds: float) -> str:
    return human_duration(timedelta(seconds=seconds)) if seconds else "-"


def daily_markdown(report: DailyReport) -> str:
    zone = ZoneInfo(report.timezone)

    def local(moment: datetime) -> str:
        return moment.astimezone(zone).strftime("%H:%M")

    lines = [
        f"# Daily report {report.day:%Y-%m-%d} ({report.timezone})",
        "",
        f"Health: {report.health_runs} runs, worst {report.worst_status or 'none'}; "
        f"backups: {sum(1 for b in report.backups if b.status == 'verified')} verified of "
        f"{len(report.backups)}; verifications: {sum(1 for v in report.verifications if v.ok)} "
        f"ok of {len(report.verifications)}; drills: {len(report.drills)}; maintenance runs: "
        f"{len(report.maintenance)}.",
        "",
        "## Health",
        "",
    ]
    if report.worst_checks:
        lines += ["| check | target | worst | failing runs | critical for | last message |"]
        lines += ["|---|---|---|---|---|---|"]
        lines += [
            f"| {cell(c.check)} | {cell(c.target)} | {c.worst} | {c.failing_runs} | "
            f"{_critical_for(c.critical_seconds)} | {cell(c.last_message)} |"
            for c in report.worst_checks[:20]
        ]
    else:
        lines.append("Every check was ok." if report.health_runs else "No health run today.")
    if report.changes:
        lines += ["", "Status changes:", ""]
        lines += [
            f"- {local(c.at)} `{cell(c.check)}` on {cell(c.target)}: {c.before} -> {c.after}"
            for c in report.changes[:50]
        ]
    lines += ["", "## Backups", ""]
    if report.backups:
        lines += ["| backup | target | status | stored | growth |", "|---|---|---|---|---|"]
        for b in report.backups:
            growth = "-" if b.growth_percent is None else f"{b.growth_percent:+.1f} %"
            size = human_bytes(b.bytes_stored) if b.bytes_stored else "-"
            status = b.status if b.status in ("verified", "stored") else f"**{b.status}**"
            lines.append(f"| {b.id} | {cell(b.target)} | {status} | {size} | {growth} |")
    else:
        lines.append("No backup today.")
    if report.verifications:
        bad = [v for v in report.verifications if not v.ok]
        lines += [
            "",
            f"Verifications: {len(report.verifications) - len(bad)} ok"
            + (f", **{len(bad)} failed**: " + ", ".join(v.backup_id for v in bad) if bad else ""),
        ]
    lines += ["", "## Drills", ""]
    lines += [
        f"- {d.id} {cell(d.target)}: {d.status}"
        + (f", RTO {d.rto_seconds:.0f}s" if d.rto_seconds is not None else "")
        + (f", RPO {d.rpo_seconds:.0f}s" if d.rpo_seconds is not None else "")
        for d in report.drills
    ] or ["No drill today."]
    lines += ["", "## Maintenance", ""]
    for run in report.maintenance:
        kind = "dry run" if run.dry_run else "applied"
        lines.append(f"- {run.id} ({run.window}, {kind}): {run.status}, {run.counts}")
        lines += [f"  - {cell(a)}" for a in run.applied[:30]]
    if not report.maintenance:
        lines.append("No maintenance window today.")
    return "\n".join(lines) + "\n"
