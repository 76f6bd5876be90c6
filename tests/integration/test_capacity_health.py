"""The `capacity` health check against a real SQLite catalog seeded with known histories:
disks that reach 90 % of their size in about 6 and about 20 days (critical and warn under the
default thresholds, and warn/ok when the thresholds are configured), one that does not within
a year (ok), a resource with too little history (ok, saying so) and one already past 90 %
with little history (critical without a forecast); the registry plans the check only for a
config with a `capacity:` section and runs it through `run_kind`, as the health flow does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from runbook.catalog import MetricSamples, Sample
from runbook.health import Status
from runbook.runtime import open_runtime
from tasks.health.capacity import CHECK, check_capacity
from tasks.health.registry import CHECK_KINDS, check_plan, run_kind

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
TB = 1e12


def disk(target: str, name: str, start: float, per_day: float, days: int, seed: int):
    """`days` daily samples of a 1 TB disk from `start` (a share of it) growing `per_day`
    (a share a day), with noise of a tenth of the daily growth."""
    rng = np.random.default_rng(seed)
    return [
        Sample(
            resource=f"{target}/disk/{name}",
            kind="host.disk",
            target=target,
            value=(start + per_day * day + rng.normal(0, per_day / 10)) * TB,
            limit=TB,
            unit="bytes",
            time=NOW - timedelta(days=days - 1 - day),
        )
        for day in range(days)
    ]


def table(target: str, days: int):
    """A table: no limit, so never part of the check."""
    return [
        Sample(
            resource=f"{target}/table/public.orders",
            kind="postgres.table",
            target=target,
            value=1e9 + 1e7 * day,
            unit="bytes",
            time=NOW - timedelta(days=days - 1 - day),
        )
        for day in range(days)
    ]


@pytest.fixture
def seeded(write_config):
    def make(**capacity):
        config = write_config(capacity={"min_samples": 14, **capacity})
        runtime = open_runtime(config)
        MetricSamples(runtime.catalog).record(
            disk("db1", "data", 0.58, 0.005, 60, 1)  # ends at 0.875: 90 % in ~5 days
            + disk("db1", "logs", 0.30, 0.001, 60, 2)  # 90 % in ~600 days: past the horizon
            + disk("web", "data", 0.50, 0.005, 60, 3)  # ends at 0.795: 90 % in ~21 days
            + disk("new", "data", 0.40, 0.01, 5, 4)  # 5 of 14 days
            + disk("full", "data", 0.93, 0.001, 3, 5)  # already past 90 %, 3 days known
            + table("db1", 60)
        )
        return runtime

    return make


def by_target(results):
    assert all(r.check == CHECK for r in results)
    found = {r.target: r for r in results}
    assert len(found) == len(results), "one result per target"
    return found


def test_warn_critical_ok_and_not_enough_history(seeded):
    runtime = seeded()
    results = by_target(check_capacity(runtime.config, runtime.catalog, NOW))
    assert set(results) == {"db1", "web", "new", "full"}  # the table's target has no limit

    db1 = results["db1"]
    assert db1.status == Status.CRITICAL, db1
    assert db1.value is not None and 2 <= db1.value < 7, db1  # P10 days until 90 % of data
    assert db1.message.startswith("db1/disk/data: P10 "), db1.message  # nearest to full first
    assert "db1/disk/logs: 90 % not within the horizon" in db1.message, db1.message
    assert db1.threshold == "warn < 30 days, critical < 7 days"

    web = results["web"]
    assert web.status == Status.WARN, web
    assert 10 <= web.value < 30, web

    new = results["new"]
    assert new.status == Status.OK and new.value is None, new
    assert "not enough history (5 of 14 days)" in new.message, new.message

    full = results["full"]
    assert full.status == Status.CRITICAL and full.value == 0.0, full
    assert "already 93." in full.message, full.message


def test_thresholds_are_configurable(seeded):
    runtime = seeded(days_until_90={"warn": 10, "critical": 3, "op": "<"})
    results = by_target(check_capacity(runtime.config, runtime.catalog, NOW))
    assert results["db1"].status == Status.WARN, results["db1"]  # ~6 days: under 10, not 3
    assert results["web"].status == Status.OK, results["web"]  # ~20 days: not under 10
    assert results["full"].status == Status.CRITICAL  # past 90 % whatever the thresholds


def test_no_samples_is_ok_with_a_reason(write_config):
    runtime = open_runtime(write_config(capacity={}))
    (result,) = check_capacity(runtime.config, runtime.catalog, NOW)
    assert result.status == Status.OK
    assert "no capacity samples with a limit yet" in result.message


def test_only_not_enough_history_is_never_a_failure(write_config):
    runtime = open_runtime(write_config(capacity={"min_samples": 30}))
    MetricSamples(runtime.catalog).record(disk("db1", "data", 0.5, 0.01, 20, 7))
    (result,) = check_capacity(runtime.config, runtime.catalog, NOW)
    assert result.status == Status.OK and result.target == "db1"
    assert "not enough history (20 of 30 days)" in result.message


def test_registry_plans_and_runs_it(seeded, write_config):
    assert "capacity" in CHECK_KINDS
    runtime = seeded()
    assert ("capacity", None) in check_plan(runtime.config, ["capacity"])
    statuses = {r.target: r.status for r in run_kind(runtime, "capacity", None, NOW)}
    assert statuses["db1"] == Status.CRITICAL and statuses["web"] == Status.WARN
    # without a `capacity:` section the check is not planned: configs that never asked for
    # capacity get no new result in their health runs
    plain = open_runtime(write_config())
    assert check_plan(plain.config, ["capacity"]) == []
