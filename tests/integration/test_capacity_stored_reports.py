"""Copies of capacity reports in storage and the scoring of earlier forecasts: reports built
from a catalog on PostgreSQL 15, stored under `_capacity/`, listed and checked against their
manifests (a truncated chart, a rewritten forecasts.json are caught), kept by a retention plan,
and scored against the levels that came after them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import yaml

from runbook.catalog import Catalog, MetricSamples, Sample
from runbook.config import parse_config
from runbook.storage import LocalStorage, StorageFull
from tasks.capacity.report import build_report, report_html, report_markdown
from tasks.capacity.scoring import predicted_at, score_earlier, scoring_markdown
from tasks.capacity.stored import (
    PREFIX,
    StoredReport,
    StoredReportError,
    earlier_forecasts,
    list_reports,
    plan_report_retention,
    prune_reports,
    read_forecasts,
    store_and_prune,
    store_report,
)

T0 = datetime(2026, 10, 1, 6, 0, tzinfo=UTC)
TB = 1e12


@pytest.fixture
def catalog(pg15) -> Iterator[Catalog]:
    name = pg15.create_database("rbtest_capacityreports")
    catalog = Catalog(pg15.url(name))
    yield catalog
    catalog.close()
    pg15.drop_database(name)


@pytest.fixture
def config(catalog, tmp_path):
    return parse_config(
        yaml.safe_dump(
            {
                "catalog": "sqlite:///" + str(tmp_path / "unused.db"),
                "storage": {"kind": "local", "path": str(tmp_path / "storage")},
                "capacity": {"min_samples": 14, "keep_reports": 2},
            }
        )
    )


def disk(day: int, rng: np.random.Generator, jump: float = 0.0) -> Sample:
    """A disk filling 0.4 % of 1 TB a day with noise, from 40 %; day 0 is T0."""
    value = (0.40 + 0.004 * (day + 60)) * TB + rng.normal(0, 0.0005 * TB) + jump
    return Sample(
        resource="here/disk/data",
        kind="host.disk",
        target="here",
        value=value,
        limit=TB,
        unit="bytes",
        time=T0 + timedelta(days=day),
    )


def table(day: int) -> Sample:
    """A table growing 1 MB a day, then loaded with 500 MB on day 5 (no forecast saw it)."""
    value = 100e6 + 1e6 * (day + 60) + (500e6 if day >= 5 else 0)
    return Sample(
        resource="app/table/public.orders",
        kind="postgres.table",
        target="app",
        value=value,
        unit="bytes",
        time=T0 + timedelta(days=day),
    )


def seed(catalog: Catalog, days: range) -> None:
    rng = np.random.default_rng(100 + days.start)
    MetricSamples(catalog).record(s for d in days for s in (disk(d, rng), table(d)))


def test_a_stored_copy_is_listed_checked_and_read_back(config, catalog, tmp_path):
    seed(catalog, range(-60, 1))
    storage = LocalStorage(tmp_path / "storage")
    report, charts = build_report(config, catalog, now=T0)
    rid = store_report(
        storage, report, report_markdown(report), report_html(report, charts), charts
    )
    assert rid == "20261001T060000Z-month"

    (listed,) = list_reports(storage)
    assert listed.complete and listed.id == rid and listed.resources == 2
    assert listed.generated_at == T0 and listed.worst == report.worst
    assert listed.files == 4 + len(charts) == 6  # md, html, forecasts, manifest, 2 charts
    keys = {info.key for info in storage.list(PREFIX)}
    assert f"{PREFIX}{rid}/charts/here_disk_data.png" in keys
    assert storage.get_bytes(f"{PREFIX}{rid}/report.md").decode().startswith("# Capacity report")

    forecasts = read_forecasts(storage, listed)
    rows = {r["resource"]: r for r in forecasts["resources"]}
    band = rows["here/disk/data"]["band"]
    assert len(band) == 365 and all(p10 <= p50 <= p90 for p10, p50, p90 in band)
    assert band[9][1] == pytest.approx(disk(10, np.random.default_rng(0)).value, rel=0.01)

    # storage is not trusted: a truncated chart and a rewritten forecasts.json are caught
    chart = tmp_path / "storage" / PREFIX / rid / "charts" / "here_disk_data.png"
    chart.write_bytes(chart.read_bytes()[:100])
    forecasts_file = tmp_path / "storage" / PREFIX / rid / "forecasts.json"
    data = forecasts_file.read_bytes()
    forecasts_file.write_bytes(data.replace(b'"month"', b'"quart"'))  # same size
    (listed,) = list_reports(storage)
    assert not listed.complete
    written = len(charts["here_disk_data.png"])
    assert listed.problems == [f"charts/here_disk_data.png: 100 bytes, {written} written"]
    listed.problems.clear()
    with pytest.raises(StoredReportError, match="does not match its manifest"):
        read_forecasts(storage, listed)
    problems: list[str] = []  # a later report does not score a damaged copy, and says so
    assert list(earlier_forecasts(storage, T0 + timedelta(days=1), problems)) == []
    assert problems == [f"{rid}: charts/here_disk_data.png: 100 bytes, {written} written"]


def test_retention_keeps_the_newest_complete_copies_and_removes_the_rest(tmp_path):
    reports = [
        StoredReport(id="20260101T080000Z-month", manifest={"x": 1}),
        StoredReport(id="20260201T080000Z-month", problems=["incomplete: no manifest.json"]),
        StoredReport(id="20260301T080000Z-month", manifest={"x": 1}),
        StoredReport(id="20260401T080000Z-quarter", manifest={"x": 1}),
        StoredReport(id="20260501T080000Z-month", manifest={"x": 1}),
        StoredReport(id="20260601T080000Z-month", problems=["incomplete: no manifest.json"]),
    ]
    plan = {d.id[:8]: d for d in plan_report_retention(reports, keep=2)}
    assert [k for k, d in plan.items() if d.keep] == ["20260401", "20260501", "20260601"]
    assert "older than the newest 2" in plan["20260101"].reason
    assert "no manifest" in plan["20260201"].reason and "20260501" in plan["20260201"].reason
    assert "newer than every complete one" in plan["20260601"].reason

    storage = LocalStorage(tmp_path / "s")
    for report in reports:
        storage.put_bytes(f"{PREFIX}{report.id}/report.md", b"x")
    storage.put_bytes("app/20260101T000000Z/manifest.json", b"{}")  # a backup: not touched
    removed = prune_reports(storage, list(plan.values()))
    assert [r[:8] for r in removed] == ["20260101", "20260201", "20260301"]
    left = sorted({info.key.split("/")[1] for info in storage.list(PREFIX)})
    assert [k[:8] for k in left] == ["20260401", "20260501", "20260601"]
    assert storage.exists("app/20260101T000000Z/manifest.json")


def test_earlier_forecasts_are_scored_against_what_came(config, catalog, tmp_path):
    storage = LocalStorage(tmp_path / "storage")
    problems: list[str] = []
    assert list(earlier_forecasts(storage, T0, problems)) == [] and problems == []
    nothing = score_earlier([], {})
    assert nothing["note"] == "no earlier report" and nothing["hit_rate"] is None
    assert "Not scored: no earlier report." in scoring_markdown(nothing)

    seed(catalog, range(-60, 1))
    first, charts = build_report(config, catalog, now=T0)
    store_report(storage, first, "md", "html", charts)
    seed(catalog, range(1, 11))  # ten more days: the disk keeps its trend, the table jumps
    second, charts = build_report(config, catalog, now=T0 + timedelta(days=10))
    store_report(storage, second, "md", "html", charts)

    now = T0 + timedelta(days=10)
    earlier = list(earlier_forecasts(storage, now + timedelta(hours=1), problems))
    assert problems == [] and [e["id"][:8] for e in earlier] == ["20261001", "20261011"]
    actuals = {i.latest.resource: i.latest for i in MetricSamples(catalog).resources()}
    scoring = score_earlier(earlier, actuals)
    # the report of this same moment is not scored (0 days in); the first one is, at day 10
    assert [r["report"][:8] for r in scoring["reports"]] == ["20261001"]
    checks = {c["resource"]: c for c in scoring["checks"]}
    assert checks["here/disk/data"]["days"] == 10 and checks["here/disk/data"]["within"]
    predicted = checks["here/disk/data"]["predicted"]
    assert predicted["p10"] < actuals["here/disk/data"].value < predicted["p90"]
    assert checks["app/table/public.orders"]["within"] is False  # the bulk load came after
    assert scoring["scored"] == 2 and scoring["within"] == 1 and scoring["hit_rate"] == 0.5
    per = {r["resource"]: r["hit_rate"] for r in scoring["resources"]}
    assert per == {"here/disk/data": 1.0, "app/table/public.orders": 0.0}
    text = "\n".join(scoring_markdown(scoring))
    assert "Overall: 1 of 2 actual levels fell within the predicted P10-P90 band (50%" in text
    assert "| here/disk/data | 1 | 1 | 100% |" in text


def test_predicted_at_interpolates_and_stops_at_the_horizon():
    band = [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]
    assert predicted_at(band, 1.5) == {"p10": 2.0, "p50": 3.0, "p90": 4.0}
    assert predicted_at(band, 0.5) is None and predicted_at(band, 2.5) is None
    assert predicted_at([], 1) is None


class FullAfter(LocalStorage):
    """A local folder that runs out of room after `room` objects (as ENOSPC does)."""

    def __init__(self, path, room: int):
        super().__init__(path)
        self.room = room

    def put(self, key, chunks):
        if self.room <= 0:
            raise StorageFull(f"no space left writing {key}")
        self.room -= 1
        return super().put(key, chunks)


def test_a_copy_that_cannot_be_stored_is_an_error_and_removes_nothing(config, catalog, tmp_path):
    seed(catalog, range(-60, 1))
    report, charts = build_report(config, catalog, now=T0)
    storage = FullAfter(tmp_path / "storage", room=100)
    for day in (1, 2):  # two older complete copies, with keep_reports 1 one would go
        older = report.model_copy(update={"generated_at": T0 - timedelta(days=day)})
        store_report(storage, older, "md", "html", charts)
    storage.room = 3  # report.md, report.html, forecasts.json; then full
    stored, error, plan = store_and_prune(storage, report, "md", "html", charts, keep=1)
    assert stored is None and plan == []
    assert error.startswith(f"local:{tmp_path / 'storage'}: ") and "no space left" in error
    listed = {r.id: r for r in list_reports(storage)}
    assert len(listed) == 3  # nothing removed after a failed copy
    assert listed["20261001T060000Z-month"].problems == [
        "incomplete: no manifest.json (the copy never finished)"
    ]
    storage.room = 100  # room again: the next copy is stored and the old ones go
    stored, error, plan = store_and_prune(storage, report, "md", "html", charts, keep=1)
    assert error is None and stored == "20261001T060000Z-month"
    assert [r.id for r in list_reports(storage)] == [stored]
