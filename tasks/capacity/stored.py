"""Copies of each capacity report in the configured storage, under `_capacity/<id>/` (the
orphan sweep of retention leaves `_`-prefixed folders alone):

- `report.md`: the ranked table and the scoring of earlier forecasts, as the artifact shows it;
- `report.html`: the self-contained page with the charts embedded;
- `charts/<resource>.png`: each resource's chart;
- `forecasts.json`: every resource's figures and its forecast band (`band[k]`: the P10 / P50 /
  P90 level k + 1 days after `generated_at`), what later reports score;
- `manifest.json`, written last: each file's size and SHA-256. A folder without one is an
  incomplete copy; anything read back is checked against it.

`keep_reports` (capacity.keep_reports) complete copies are kept, the newest; the plan says why
each other one goes (`plan_report_retention`), and `prune_reports` deletes what it says.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runbook.storage import ObjectNotFound, Storage, StorageError
from tasks.capacity.report import STORED_PREFIX, CapacityReport

PREFIX = STORED_PREFIX
MANIFEST = "manifest.json"
FORECASTS = "forecasts.json"


class StoredReportError(Exception):
    """A stored copy that does not match its manifest (or has none)."""


def report_id(report: CapacityReport) -> str:
    """Sorts by time: `20261201T080000Z-month`."""
    return f"{report.generated_at:%Y%m%dT%H%M%SZ}-{report.period}"


def _significant(value: float) -> float:
    return float(f"{value:.6g}")


def forecasts_json(report: CapacityReport) -> dict[str, Any]:
    data = report.json_report()
    for row, resource in zip(data["resources"], report.resources, strict=True):
        band = [] if resource.band is None else resource.band.tolist()
        row["band"] = [[_significant(v) for v in day] for day in band]
    return data


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def store_report(
    storage: Storage,
    report: CapacityReport,
    markdown: str,
    html: str,
    charts: dict[str, bytes],
) -> str:
    """Put the report's copy under `_capacity/<id>/`, manifest last; its id."""
    folder = f"{PREFIX}{report_id(report)}/"
    files = {
        "report.md": markdown.encode(),
        "report.html": html.encode(),
        FORECASTS: _json_bytes(forecasts_json(report)),
        **{f"charts/{name}": png for name, png in charts.items()},
    }
    written = {}
    for name, data in files.items():
        info = storage.put_bytes(folder + name, data)
        if info.size != len(data):
            raise StoredReportError(
                f"{storage.describe()}: {folder}{name} stored {info.size} bytes of {len(data)}"
            )
        written[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "id": report_id(report),
        "generated_at": report.generated_at.isoformat(),
        "period": report.period,
        "resources": len(report.resources),
        "worst": report.worst,
        "files": written,
    }
    storage.put_bytes(folder + MANIFEST, _json_bytes(manifest))
    return report_id(report)


@dataclass
class StoredReport:
    """One `_capacity/<id>/` folder as listed, checked against its manifest."""

    id: str
    files: int = 0
    bytes: int = 0
    generated_at: datetime | None = None
    period: str | None = None
    resources: int | None = None
    worst: str | None = None
    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def complete(self) -> bool:
        return bool(self.manifest) and not self.problems

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "generated_at": self.generated_at.isoformat() if self.generated_at else None,
            "period": self.period,
            "resources": self.resources,
            "worst": self.worst,
            "files": self.files,
            "bytes": self.bytes,
            "complete": self.complete,
            "problems": self.problems,
        }


def list_reports(storage: Storage) -> list[StoredReport]:
    """Every stored copy, oldest first, each checked against its manifest: a file missing, a
    size that differs, or no manifest at all is a problem of that copy."""
    found: dict[str, dict[str, int]] = {}
    for info in storage.list(PREFIX):
        report, _, name = info.key[len(PREFIX) :].partition("/")
        if name:
            found.setdefault(report, {})[name] = info.size
    reports = []
    for rid in sorted(found):
        sizes = found[rid]
        stored = StoredReport(id=rid, files=len(sizes), bytes=sum(sizes.values()))
        reports.append(stored)
        if MANIFEST not in sizes:
            stored.problems.append("incomplete: no manifest.json (the copy never finished)")
            continue
        try:
            manifest = json.loads(storage.get_bytes(f"{PREFIX}{rid}/{MANIFEST}"))
            stored.generated_at = datetime.fromisoformat(manifest["generated_at"])
            stored.period, stored.resources = manifest["period"], manifest["resources"]
            stored.worst, files = manifest["worst"], manifest["files"]
        except (ObjectNotFound, ValueError, KeyError, TypeError) as exc:
            stored.problems.append(f"unreadable manifest.json: {type(exc).__name__}: {exc}")
            continue
        stored.manifest = manifest
        for name, expected in sorted(files.items()):
            size = sizes.get(name)
            if size is None:
                stored.problems.append(f"{name}: missing")
            elif size != expected["size"]:
                stored.problems.append(f"{name}: {size} bytes, {expected['size']} written")
    return reports


def read_forecasts(storage: Storage, stored: StoredReport) -> dict[str, Any]:
    """A complete copy's forecasts.json, checked against the SHA-256 its manifest recorded."""
    expected = stored.manifest["files"][FORECASTS]
    data = storage.get_bytes(f"{PREFIX}{stored.id}/{FORECASTS}")
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise StoredReportError(f"{stored.id}/{FORECASTS} does not match its manifest's SHA-256")
    return json.loads(data)


@dataclass(frozen=True)
class Decision:
    id: str
    keep: bool
    reason: str


def plan_report_retention(reports: list[StoredReport], keep: int) -> list[Decision]:
    """Keep the newest `keep` complete copies, and an incomplete one newer than all of them (a
    copy that may still be being written); remove the rest, each with its reason."""
    complete = [r.id for r in reports if r.complete]
    kept = set(complete[-keep:])
    newest = complete[-1] if complete else ""
    plan = []
    for report in reports:
        if report.id in kept:
            plan.append(Decision(report.id, True, f"one of the newest {keep} complete reports"))
        elif report.complete:
            plan.append(Decision(report.id, False, f"older than the newest {keep} reports"))
        elif report.id > newest:
            plan.append(Decision(report.id, True, "incomplete, newer than every complete one"))
        else:
            problem = report.problems[0] if report.problems else "incomplete"
            plan.append(Decision(report.id, False, f"{problem}; {newest} superseded it"))
    return plan


def prune_reports(storage: Storage, plan: list[Decision]) -> list[str]:
    """Delete the copies the plan removes; their ids."""
    removed = []
    for decision in plan:
        if decision.keep:
            continue
        folder = f"{PREFIX}{decision.id}/"
        keys = [info.key for info in storage.list(folder)]
        # The manifest first: a prune that dies half-way leaves an incomplete copy, not a
        # complete-looking one with files missing.
        for key in sorted(keys, key=lambda k: k != folder + MANIFEST):
            storage.delete(key)
        removed.append(decision.id)
    return removed


def earlier_forecasts(
    storage: Storage, before: datetime, problems: list[str]
) -> Iterator[dict[str, Any]]:
    """The forecasts.json of every complete copy made before `before`, oldest first, read one
    at a time (a year's band of 500 resources is tens of MB once parsed); a copy that cannot
    be read is added to `problems` with why."""
    for stored in list_reports(storage):
        if not stored.complete:
            problems.append(f"{stored.id}: {'; '.join(stored.problems)}")
            continue
        if stored.generated_at is None or stored.generated_at >= before:
            continue
        try:
            data = read_forecasts(storage, stored)
        except (StoredReportError, ObjectNotFound, ValueError) as exc:
            problems.append(f"{stored.id}: {exc}")
            continue
        data["id"] = stored.id
        yield data


def store_and_prune(
    storage: Storage,
    report: CapacityReport,
    markdown: str,
    html: str,
    charts: dict[str, bytes],
    keep: int,
) -> tuple[str | None, str | None, list[Decision]]:
    """Store the report's copy, then remove the copies past `keep`: (its id, None, the plan
    applied), or (None, why not, []) when storage failed (nothing removed then)."""
    try:
        stored = store_report(storage, report, markdown, html, charts)
        plan = plan_report_retention(list_reports(storage), keep)
        prune_reports(storage, plan)
    except (StorageError, StoredReportError) as exc:
        return None, f"{storage.describe()}: {exc}", []
    return stored, None, plan
