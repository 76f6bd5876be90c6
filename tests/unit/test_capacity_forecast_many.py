"""Forecasting many resources at once (`forecast_many`, what the report does): spread over this
process and a spawned helper, the forecasts are the same as one after the other here, in the
same order; and each forecast runs with one BLAS thread, whatever the process had."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from tasks.capacity import forecast as f

NOW = datetime(2026, 12, 1, 6, tzinfo=UTC)


def job(index: int) -> f.Job:
    rng = np.random.default_rng(index)
    growth = [0.0, 2.0, 5.0][index % 3]
    points = [
        f.Point(NOW - timedelta(days=60 - day), 500 + growth * day + rng.normal(0, 1.5), 1000.0)
        for day in range(60)
    ]
    return f.Job(f"bench/{index}", points, [])


def summary(result: f.Forecast) -> tuple:
    return (
        result.status,
        result.method,
        result.days_until,
        result.act_by,
        result.calibration.json(),
        None if result.band is None else result.band.round(9).tolist(),
    )


def test_parallel_forecasts_equal_serial_ones_in_order(monkeypatch):
    jobs = [job(i) for i in range(10)]
    settings = f.ForecastSettings(min_samples=14)
    serial = f.forecast_many(jobs, settings, NOW, workers=1)
    monkeypatch.setattr(f, "PARALLEL_FROM", 4)
    spawned: list[int] = []
    real_pool = f.ProcessPoolExecutor

    def pool(*args, **kwargs):
        spawned.append(kwargs["max_workers"])
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(f, "ProcessPoolExecutor", pool)
    parallel = f.forecast_many(jobs, settings, NOW, workers=2)
    assert spawned == [1], "one helper besides this process"
    assert [summary(r) for r in parallel] == [summary(r) for r in serial]
    assert {r.status for r in serial} >= {"not-growing", "ok"}  # a mix, not one shape


def test_each_forecast_runs_with_one_blas_thread(monkeypatch):
    seen: list[int] = []
    real = f.backtest

    def spy(*args, **kwargs):
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return real(*args, **kwargs)

    monkeypatch.setattr(f, "backtest", spy)
    with f.BLAS.limit(limits=2, user_api="blas"):
        f.forecast("x", job(1).points, [], f.ForecastSettings(min_samples=14), NOW)
        outside = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert seen and set(seen) == {1}
    assert set(outside) <= {2, 1} and outside  # restored afterwards (1 on a 1-CPU machine)


@pytest.mark.parametrize("count", [0, 3])
def test_few_jobs_stay_in_this_process(monkeypatch, count):
    monkeypatch.setattr(f, "ProcessPoolExecutor", None)  # would fail if used
    results = f.forecast_many([job(i) for i in range(count)], f.ForecastSettings(), NOW, 4)
    assert len(results) == count
