"""tasks.capacity.forecast on synthetic histories with known truth (the issue's set: linear,
damped growth, weekly seasonality, an injected cleanup, a one-day bulk load, flat,
shrinking), generated here with fixed seeds: 150 days of history, the next 30 held out."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tasks.capacity.charts import chart_png
from tasks.capacity.forecast import Event, ForecastSettings, Point, forecast

START = datetime(2026, 1, 1, 5, tzinfo=UTC)
DAYS, AHEAD, SEEDS = 150, 30, (0, 1, 2)
GROWING = ("linear", "damped", "weekly", "cleanup", "burst")
SHAPES = (*GROWING, "flat", "shrinking")


def truth_of(kind: str, t: np.ndarray) -> tuple[np.ndarray, float]:
    """(the noise-free level, the daily random-walk noise; 0 = iid noise of 3 around it)."""
    week = t // 7 * 5 + np.minimum(t % 7, 5), t // 7 * 2 + np.maximum(t % 7 - 5, 0)
    return {
        "linear": (300 + 3.0 * t, 0.8),
        "damped": (200 + 6.0 * (1 - 0.995 ** (t + 1)) / 0.005, 0.8),  # growth slowing down
        "weekly": (250 + 4.0 * week[0] + 0.2 * week[1], 0.6),  # weekends hardly grow
        "cleanup": (400 + 2.5 * t - 150 * (t >= 100), 0.8),  # a cleanup nobody recorded
        "burst": (300 + 2.5 * t + 120 * (t >= 130), 0.8),  # a one-day bulk load
        "flat": (500 + 0 * t, 0.0),
        "shrinking": (700 - 1.0 * t, 0.0),
    }[kind]


def history(kind: str, seed: int) -> tuple[np.ndarray, float]:
    """(levels for DAYS + 400 days, the limit): growing series reach their limit about
    AHEAD days after the history ends."""
    rng = np.random.default_rng(seed)
    t = np.arange(DAYS + 400, dtype=float)
    base, walk = truth_of(kind, t)
    noise = np.cumsum(rng.normal(0, walk, t.size)) if walk else rng.normal(0, 3, t.size)
    limit = float(base[DAYS - 1 + AHEAD]) if kind in GROWING else 1000.0
    return base + noise, limit


def points(levels: np.ndarray, limit: float) -> list[Point]:
    return [Point(START + timedelta(days=i), float(v), limit) for i, v in enumerate(levels)]


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, int], tuple]:
    found = {}
    for kind in SHAPES:
        for seed in SEEDS:
            levels, limit = history(kind, seed)
            past = points(levels[:DAYS], limit)
            result = forecast(f"{kind}-{seed}", past, [], ForecastSettings(), now=past[-1].time)
            found[kind, seed] = (result, levels[DAYS:], limit)
    return found


def test_p50_days_until_full_is_within_15_percent_of_the_truth(results):
    for kind in GROWING:
        for seed in SEEDS:
            result, future, limit = results[kind, seed]
            truth = int(np.argmax(future >= limit)) + 1
            assert future.max() >= limit
            p50 = result.days_until["100"]["p50"]
            assert p50 is not None, (kind, seed, result.status)
            assert abs(p50 - truth) <= 0.15 * truth, (kind, seed, p50, truth, result.method)
            q = result.days_until["100"]
            assert q["p10"] <= q["p50"] <= q["p90"]
            assert result.status in ("warn", "critical")  # P10 of 90 % within 30 days


def test_the_band_covers_about_80_percent_of_held_out_outcomes(results):
    inside = []
    for result, future, _limit in results.values():
        for ahead in (10, 20, 30):
            p10, _p50, p90 = result.band[ahead - 1]
            inside.append(bool(p10 <= future[ahead - 1] <= p90))
    coverage = sum(inside) / len(inside)
    assert 0.70 <= coverage <= 0.90, coverage
    for result, _future, _limit in results.values():  # each resource says how it was judged
        assert result.calibration.cutoffs == 12 and result.calibration.observed is not None


def test_a_cleanup_or_a_burst_is_a_level_shift_not_a_trend(results):
    for kind in ("cleanup", "burst"):
        for seed in SEEDS:
            result, _future, _limit = results[kind, seed]
            assert result.p10_days(100) > 1, (kind, seed)  # no "full within a day"
            (jump,) = [e for e in result.events if e.kind == "jump"]
            assert abs(jump.shift) > 100
            assert 2.0 < result.growth_per_day < 3.0  # the trend, not the one-day change


def test_flat_and_shrinking_series_are_not_growing(results):
    for kind in ("flat", "shrinking"):
        for seed in SEEDS:
            result, _future, _limit = results[kind, seed]
            assert result.status == "not-growing"
            assert all(v is None for q in result.days_until.values() for v in q.values())
            assert result.act_by is None


def test_too_little_history_makes_no_date():
    levels, limit = history("linear", 0)
    result = forecast("short", points(levels[:10], limit), [], ForecastSettings(min_samples=14))
    assert result.status == "not-enough-history" and result.samples == 10
    assert all(v is None for q in result.days_until.values() for v in q.values())


def test_a_drop_from_the_ledger_is_a_level_shift_even_when_small():
    """A reindex that reclaimed 12 units (too small to be a jump on its own): with the ledger's
    event the day counts as typical growth; without it the drop flattens the trend."""
    rng = np.random.default_rng(7)
    t = np.arange(60, dtype=float)
    levels = 300 + 3.0 * t + np.cumsum(rng.normal(0, 0.3, t.size))
    drops = {20: 12.0, 40: 12.0, 55: 12.0}
    for day, drop in drops.items():
        levels[day:] -= drop
    past = points(levels, 1000.0)
    reindex = [
        Event(past[day].time - timedelta(hours=2), "maintenance", "reindex public.orders_pkey")
        for day in drops
    ]
    marked = forecast("r", past, reindex, ForecastSettings(), now=past[-1].time)
    unmarked = forecast("r", past, [], ForecastSettings(), now=past[-1].time)
    assert [e.kind for e in marked.events] == ["maintenance"] * 3
    assert all(e.shift == pytest.approx(-12, abs=2) for e in marked.events)
    assert marked.growth_per_day == pytest.approx(3.0, abs=0.15)
    assert unmarked.events == [] and unmarked.growth_per_day < 2.5
    assert marked.p10_days(90) < unmarked.p10_days(90)


def test_act_by_is_lead_time_before_p10_of_90_percent_and_plan_is_compared():
    levels, _ = history("linear", 0)
    past = points(levels[:DAYS], 1600.0)
    now = past[-1].time
    result = forecast(
        "p", past, [], ForecastSettings(lead_time_days=30, monthly_growth=0.2), now=now
    )
    p10 = result.p10_days(90)
    assert p10 is not None and p10 > 60
    assert result.act_by == now.date() + timedelta(days=int(p10) - 30)
    assert result.status == "ok"
    assert result.plan["monthly_growth_planned"] == 0.2
    assert result.plan["monthly_growth_actual"] == pytest.approx(90 / levels[DAYS - 1], rel=0.2)
    planned = 30 * math.log(1600.0 / result.current) / math.log(1.2)
    assert result.plan["days_until_100_planned"] == pytest.approx(planned, abs=0.1)


def test_the_chart_is_a_png_of_the_expected_size(results):
    from matplotlib.image import imread

    result, _future, _limit = results["cleanup", 0]
    png = chart_png("app/table/public.orders", "bytes", result)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(io.BytesIO(png), format="png").shape[:2] == (400, 900)
