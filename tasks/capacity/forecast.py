"""Days until a resource crosses 80 / 90 / 100 % of its limit, as P10 / P50 / P90, from its
history; plain functions, no Prefect.

1. Daily levels: the last sample of each UTC day (missing days interpolated).
2. Daily changes, cleaned: a change that spans one of Runbook's own events (a reindex, a VACUUM
   FULL, a retention delete) or that is far outside the usual changes (a cleanup or a bulk load
   nobody recorded) is a level shift: it is replaced by the typical change, so the trend is
   the growth between events, and the forecast starts from the level as it is now.
3. Three models of the cleaned history, each simulating paths (well-kept libraries, no
   hand-written statistics): statsmodels' ETS with a damped additive trend, a robust drift of
   the daily changes (statsmodels RLM, Huber) as a random walk, and a bootstrap of the daily
   changes.
4. Rolling-origin backtest on the resource's own history: the model with the smallest error of
   its median at the backtest horizons is used; the empirical coverage of its P10-P90 band over
   the cut-offs is reported, and the band is widened or narrowed until it matches 80 %.
5. Crossing days per path -> quantiles. A day count past the horizon is None. Fewer days of
   history than `min_samples`: not-enough-history; no significant growth: not-growing; either
   way no date is made up.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np

# The two models' own modules, not statsmodels.api: that namespace loads every model and
# patsy, ~15 MB more in this process and in each worker (benchmarks/capacity.py).
from statsmodels.robust.norms import HuberT
from statsmodels.robust.robust_linear_model import RLM
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from threadpoolctl import ThreadpoolController

THRESHOLDS = (80, 90, 100)
NOMINAL = 0.80  # the P10-P90 band
QUANTILES = {"p10": 0.1, "p50": 0.5, "p90": 0.9}
LEVELS = tuple(QUANTILES.values())
MAX_CUTOFFS = 12
BACKTEST_HORIZON = 30  # days ahead each cut-off is judged at (shorter on short histories)
JUMP_SCALES = 6.0  # a change this many typical changes away from the median is a level shift
GROWTH_T = 2.0  # growth must be this many standard errors above zero to count as growing
PATHS = 1000
BACKTEST_PATHS = 300
TRAIN_DAYS = 365  # models see at most the last year
RECENT_DAYS = 90  # the bootstrap resamples the changes of the last quarter
DAMPING = (0.9, 0.999)  # ETS damping bounds: up to nearly linear, when the data say so
# Backtest windows that overlap say little each: the calibration factor moves from 1 by the
# weight n / (n + SHRINK) of n independent windows' evidence, so a calm stretch does not
# narrow the band to nothing.
SHRINK = 1.0
# numpy's and scipy's OpenBLAS, loaded by now (statsmodels imports both). The models are small
# matrices: extra BLAS threads only contend, which on a busy 2-core machine made a forecast
# five times slower (benchmarks/capacity.py); each forecast runs with one.
BLAS = ThreadpoolController()
# Many resources are forecast in parallel: this process and a worker process per further CPU
# (results identical: each resource's random numbers come from its own name). Fewer than
# PARALLEL_FROM: in this process only, as starting a worker costs ~2 s of imports.
PARALLEL_FROM = 40
MAX_WORKERS = 4  # processes in all, this one included
CHUNK = 4  # resources handed out at a time

Status = str  # ok | warn | critical | not-enough-history | not-growing
Start = "np.ndarray | None"


@dataclass(frozen=True)
class Event:
    """Something that changed a resource's level on purpose: a maintenance action from the
    ledger, a retention delete; or a jump the forecast found (kind "jump")."""

    time: datetime
    kind: str  # maintenance | retention | jump
    description: str
    shift: float | None = None  # the level shift it caused, once placed on the history

    def json(self) -> dict[str, object]:
        return {
            "time": self.time.isoformat(),
            "kind": self.kind,
            "description": self.description,
            "shift": self.shift,
        }


@dataclass(frozen=True, slots=True)  # a year of points per resource: no __dict__ each
class Point:
    time: datetime
    value: float
    limit: float | None = None


@dataclass(frozen=True)
class ForecastSettings:
    min_samples: int = 14
    horizon_days: int = 365
    lead_time_days: int = 30
    monthly_growth: float | None = None  # the plan, if any
    warn_days: float | None = 30  # P10 days until 90 % under this: warn
    critical_days: float | None = 7


@dataclass
class Daily:
    """One level per UTC day, with the time of the sample it came from."""

    days: list[date]
    times: list[datetime]
    levels: np.ndarray
    measured: int  # days that had a sample (the rest are interpolated)


@dataclass
class Backtest:
    method: str
    error: float  # mean quantile loss of P10/P50/P90 of the change, over cut-offs and horizons
    cutoffs: int
    windows: float  # how many non-overlapping horizons the cut-offs span
    quantiles: np.ndarray  # (points, 3): p10, p50, p90 of the change at each judged point
    truth: np.ndarray  # (points,): the change that happened


@dataclass
class Calibration:
    nominal: float = NOMINAL
    observed: float | None = None  # coverage of the raw band over the backtest's points
    calibrated: float | None = None  # coverage after scaling the band by `factor`
    cutoffs: int = 0
    points: int = 0
    factor: float = 1.0

    def json(self) -> dict[str, object]:
        return {
            "nominal": self.nominal,
            "observed": _round(self.observed, 3),
            "calibrated": _round(self.calibrated, 3),
            "cutoffs": self.cutoffs,
            "factor": round(self.factor, 3),
        }


@dataclass
class Forecast:
    status: Status
    current: float | None
    limit: float | None
    samples: int  # days with a sample
    method: str | None = None
    days_until: dict[str, dict[str, float | None]] = field(default_factory=dict)
    act_by: date | None = None
    growth_per_day: float | None = None  # of the cleaned history
    monthly_growth: float | None = None  # relative: 0.05 = 5 % a month
    plan: dict[str, float | None] | None = None
    calibration: Calibration = field(default_factory=Calibration)
    events: list[Event] = field(default_factory=list)
    history: Daily | None = None
    band: np.ndarray | None = None  # (days ahead, 3): level p10, p50, p90 from tomorrow on
    errors: dict[str, float] = field(default_factory=dict)  # backtest error per method

    def p10_days(self, threshold: int = 90) -> float | None:
        return (self.days_until.get(str(threshold)) or {}).get("p10")


# --- 1. daily levels ----------------------------------------------------------------------------


def daily_levels(points: Sequence[Point]) -> Daily:
    """The last point of each UTC day; days without one interpolated between their
    neighbours."""
    last: dict[date, Point] = {}
    for point in sorted(points, key=lambda p: p.time):
        last[point.time.astimezone(UTC).date()] = point
    if not last:
        return Daily([], [], np.array([]), 0)
    first, final = min(last), max(last)
    days = [first + timedelta(days=i) for i in range((final - first).days + 1)]
    known = np.array([(d - first).days for d in sorted(last)], dtype=float)
    values = np.array([last[d].value for d in sorted(last)], dtype=float)
    levels = np.interp(np.arange(len(days), dtype=float), known, values)
    times = [
        last[d].time if d in last else datetime(d.year, d.month, d.day, 12, tzinfo=UTC)
        for d in days
    ]
    return Daily(days, times, levels, len(last))


# --- 2. cleaned changes -------------------------------------------------------------------------


def clean_changes(daily: Daily, events: Sequence[Event]) -> tuple[np.ndarray, list[Event]]:
    """The cleaned levels (events and jumps taken out as level shifts, the day's typical
    growth kept) and the events placed on the history with the shift each caused."""
    changes = np.diff(daily.levels)
    if changes.size == 0:
        return daily.levels.copy(), []
    marked: dict[int, Event] = {}
    for event in sorted(events, key=lambda e: e.time):
        for i in range(1, len(daily.times)):
            if daily.times[i - 1] < event.time <= daily.times[i]:
                marked.setdefault(i - 1, event)
                break
    ordinary = np.array([c for i, c in enumerate(changes) if i not in marked])
    typical = float(np.median(ordinary)) if ordinary.size else 0.0
    scale = _typical_scale(ordinary, typical)
    placed: list[Event] = []
    cleaned = changes.copy()
    for i, change in enumerate(changes):
        if i in marked:
            event = marked[i]
        elif scale > 0 and abs(change - typical) > JUMP_SCALES * scale:
            direction = "drop" if change < typical else "rise"
            event = Event(daily.times[i + 1], "jump", f"one-day {direction}, not trend")
        else:
            continue
        cleaned[i] = typical
        placed.append(Event(event.time, event.kind, event.description, float(change - typical)))
    levels = daily.levels[0] + np.concatenate([[0.0], np.cumsum(cleaned)])
    return levels, placed


def _typical_scale(changes: np.ndarray, typical: float) -> float:
    """How big a usual day's change is: the robust spread, or the typical change itself
    where growth is steady (weekends without growth are not jumps)."""
    if changes.size == 0:
        return 0.0
    mad = 1.4826 * float(np.median(np.abs(changes - typical)))
    return max(mad, float(np.median(np.abs(changes))), 1e-12 * max(1.0, abs(typical)))


# --- 3. models: each returns paths of the level change from the last cleaned level -----------


def bootstrap_paths(
    levels: np.ndarray, horizon: int, reps: int, rng: np.random.Generator, start: Start = None
):
    """Daily changes resampled with replacement, plus the uncertainty of their mean."""
    changes = np.diff(levels)[-RECENT_DAYS:]
    if changes.size < 2:
        return None
    drawn = rng.choice(changes, size=(reps, horizon), replace=True)
    mean_shift = rng.choice(changes, size=(reps, changes.size)).mean(axis=1) - changes.mean()
    steps = np.arange(1, horizon + 1)
    return np.cumsum(drawn, axis=1) + mean_shift[:, None] * steps[None, :]


def ets_paths(
    levels: np.ndarray, horizon: int, reps: int, rng: np.random.Generator, start: Start = None
):
    """statsmodels ETS(A, Ad, N): additive errors, damped additive trend. `start`: fixed
    parameters to filter with instead of fitting (the backtest's: a fit costs ~150 ms)."""
    if levels.size < 10:
        return None
    scale = max(float(np.max(np.abs(levels))), 1e-9)
    y = levels / scale
    if float(np.ptp(y)) < 1e-9:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = ETSModel(
                y, error="add", trend="add", damped_trend=True, bounds={"damping_trend": DAMPING}
            )
            if start is None:
                fitted = model.fit(disp=False, maxiter=200)
            else:
                fitted = model.smooth(start)
            simulated = fitted.simulate(
                nsimulations=horizon,
                repetitions=reps,
                anchor="end",
                rng=np.random.default_rng(int(rng.integers(2**31))),
            )
        except Exception:  # noqa: BLE001 - a model that cannot fit this series is not chosen
            return None
    paths = np.asarray(simulated, dtype=float).reshape(horizon, reps).T * scale
    if not np.all(np.isfinite(paths)):
        return None
    return paths - levels[-1]


def robust_drift_paths(
    levels: np.ndarray, horizon: int, reps: int, rng: np.random.Generator, start: Start = None
):
    """statsmodels RLM (Huber) of the daily changes on a constant: a drift that a few odd days
    do not pull, with its standard error, and the changes' robust scale as a random walk."""
    changes = np.diff(levels)[-TRAIN_DAYS:]
    if changes.size < 5:
        return None
    unit = max(float(np.max(np.abs(changes))), 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fitted = RLM(changes / unit, np.ones(changes.size), M=HuberT()).fit()
        except Exception:  # noqa: BLE001
            return None
    drift, error, scale = float(fitted.params[0]), float(fitted.bse[0]), float(fitted.scale)
    if not all(math.isfinite(x) for x in (drift, error, scale)):
        return None
    drifts = rng.normal(drift, error, size=(reps, 1))
    steps = drifts + rng.normal(0.0, scale, size=(reps, horizon))
    return np.cumsum(steps, axis=1) * unit


def ets_start(levels: np.ndarray) -> np.ndarray | None:
    """ETS parameters fitted on `levels` (the backtest filters every cut-off with them)."""
    if levels.size < 10 or float(np.ptp(levels)) <= 0:
        return None
    y = levels / max(float(np.max(np.abs(levels))), 1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = ETSModel(
                y, error="add", trend="add", damped_trend=True, bounds={"damping_trend": DAMPING}
            )
            return np.asarray(model.fit(disp=False, maxiter=200).params)
        except Exception:  # noqa: BLE001
            return None


Model = Callable[..., "np.ndarray | None"]
MODELS: dict[str, Model] = {
    "ets-damped": ets_paths,
    "robust-drift": robust_drift_paths,
    "bootstrap": bootstrap_paths,
}


# --- 4. backtest and calibration ----------------------------------------------------------------


def cutoffs_of(size: int, min_samples: int) -> tuple[list[int], int]:
    """(last training index of each cut-off, backtest horizon in days)."""
    horizon = min(BACKTEST_HORIZON, max(1, size // 4))
    first = max(min_samples, size // 3) - 1
    last = size - 1 - horizon
    if last < first:
        return [], horizon
    spots = np.linspace(first, last, num=min(MAX_CUTOFFS, last - first + 1))
    return sorted({int(round(x)) for x in spots}), horizon


def backtest(
    levels: np.ndarray,
    method: str,
    min_samples: int,
    rng: np.random.Generator,
) -> Backtest | None:
    """Fit on the history up to each cut-off, judge the next days. The error is the quantile
    (pinball) loss of P10, P50 and P90: a sharp band that misses scores worse than an honest
    one."""
    cutoffs, horizon = cutoffs_of(levels.size, min_samples)
    if not cutoffs:
        return None
    start = None
    if method == "ets-damped":
        # One fit of the whole history's parameters, each cut-off filtered with them: the
        # states see no future, the three smoothing parameters do (a refit per cut-off costs
        # ~150 ms, too slow for hundreds of resources).
        start = ets_start(levels)
        if start is None:
            return None
    judged = sorted({max(1, horizon // 3), max(1, 2 * horizon // 3), horizon})
    rows, truth, errors = [], [], []
    for cut in cutoffs:
        train = levels[max(0, cut + 1 - TRAIN_DAYS) : cut + 1]
        paths = MODELS[method](train, horizon, BACKTEST_PATHS, rng, start)
        if paths is None:
            return None
        for h in judged:
            q = np.quantile(paths[:, h - 1], [0.1, 0.5, 0.9])
            actual = levels[cut + h] - levels[cut]
            rows.append(q)
            truth.append(actual)
            errors.append(
                sum(
                    max(p * (actual - v), (p - 1) * (actual - v))
                    for p, v in zip(LEVELS, q, strict=True)
                )
            )
    windows = (cutoffs[-1] - cutoffs[0]) / horizon + 1
    return Backtest(
        method, float(np.mean(errors)), len(cutoffs), windows, np.array(rows), np.array(truth)
    )


def coverage(test: Backtest, factor: float) -> float:
    q10, q50, q90 = test.quantiles[:, 0], test.quantiles[:, 1], test.quantiles[:, 2]
    low = q50 - factor * (q50 - q10)
    high = q50 + factor * (q90 - q50)
    inside = (test.truth >= low) & (test.truth <= high)
    return float(np.mean(inside))


def calibrate(test: Backtest | None) -> Calibration:
    """The factor that scales the band around its median so the backtest's coverage matches
    80 % (closest to 1 among equally good ones), moved towards 1 as far as the backtest's
    independent windows justify (SHRINK)."""
    if test is None or test.truth.size == 0:
        return Calibration()
    observed = coverage(test, 1.0)
    grid = np.round(np.exp(np.linspace(math.log(0.25), math.log(6.0), 97)), 4)
    best = min(grid, key=lambda k: (round(abs(coverage(test, k) - NOMINAL), 6), abs(math.log(k))))
    weight = test.windows / (test.windows + SHRINK)
    factor = float(math.exp(weight * math.log(best)))
    return Calibration(
        observed=observed,
        calibrated=coverage(test, factor),
        cutoffs=test.cutoffs,
        points=int(test.truth.size),
        factor=factor,
    )


# --- 5. the forecast ----------------------------------------------------------------------------


def forecast(
    resource: str,
    points: Sequence[Point],
    events: Sequence[Event],
    settings: ForecastSettings,
    now: datetime | None = None,
) -> Forecast:
    """The forecast of one resource's history (see the module's docstring)."""
    with BLAS.limit(limits=1, user_api="blas"):
        return _forecast(resource, points, events, settings, now or datetime.now(UTC))


def _forecast(
    resource: str,
    points: Sequence[Point],
    events: Sequence[Event],
    settings: ForecastSettings,
    now: datetime,
) -> Forecast:
    daily = daily_levels(points)
    latest = max(points, key=lambda p: p.time) if points else None
    current = latest.value if latest else None
    limit = latest.limit if latest and latest.limit else None
    result = Forecast("not-enough-history", current, limit, daily.measured, history=daily)
    result.days_until = {str(t): dict.fromkeys(QUANTILES) for t in THRESHOLDS}
    if daily.measured < settings.min_samples or daily.levels.size < 3:
        result.events = [e for e in events if daily.times and e.time >= daily.times[0]]
        return result

    levels, result.events = clean_changes(daily, events)
    levels = levels[-TRAIN_DAYS:]
    rng = np.random.default_rng(zlib.crc32(resource.encode()))
    tests = {m: backtest(levels, m, settings.min_samples, rng) for m in MODELS}
    result.errors = {m: t.error for m, t in tests.items() if t is not None}
    method = min(result.errors, key=result.errors.__getitem__) if result.errors else "bootstrap"
    result.method = method
    result.calibration = calibrate(tests.get(method))

    horizon = settings.horizon_days
    paths = MODELS[method](levels, horizon, PATHS, rng)
    if paths is None:  # the chosen model failed on the whole history: the plainest one
        result.method, paths = "bootstrap", bootstrap_paths(levels, horizon, PATHS, rng)
    if paths is None:
        return result
    median = np.median(paths, axis=0)
    paths = median + result.calibration.factor * (paths - median)
    future = current + paths  # from the level as it is now, shifts included
    result.band = np.quantile(future, [0.1, 0.5, 0.9], axis=0).T

    changes = np.diff(levels)
    result.growth_per_day = float(np.mean(changes))
    standard_error = float(np.std(changes, ddof=1)) / math.sqrt(changes.size)
    growing = result.growth_per_day > GROWTH_T * standard_error and result.growth_per_day > 0
    if current:
        result.monthly_growth = 30 * result.growth_per_day / current
    if settings.monthly_growth is not None:
        result.plan = plan_comparison(result, settings.monthly_growth)
    if limit:
        for threshold in THRESHOLDS:
            level = limit * threshold / 100
            if current >= level:
                result.days_until[str(threshold)] = dict.fromkeys(QUANTILES, 0.0)
            elif growing:
                result.days_until[str(threshold)] = crossing_days(future, level, horizon)
    result.status = status_of(result, growing, settings)
    p10 = result.p10_days(90)
    if p10 is not None:
        act = now.date() + timedelta(days=math.floor(p10) - settings.lead_time_days)
        result.act_by = max(act, now.date())
    return result


def crossing_days(future: np.ndarray, level: float, horizon: int) -> dict[str, float | None]:
    """Days until each path first reaches `level`, as quantiles; None past the horizon."""
    reached = future >= level
    first = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, np.inf)
    found: dict[str, float | None] = {}
    for name, q in QUANTILES.items():
        days = float(np.quantile(first, q, method="inverted_cdf"))
        found[name] = days if math.isfinite(days) and days <= horizon else None
    return found


def status_of(result: Forecast, growing: bool, settings: ForecastSettings) -> Status:
    p10 = result.p10_days(90)
    if p10 is not None:
        if settings.critical_days is not None and p10 < settings.critical_days:
            return "critical"
        if settings.warn_days is not None and p10 < settings.warn_days:
            return "warn"
    return "ok" if growing else "not-growing"


def plan_comparison(result: Forecast, monthly_growth: float) -> dict[str, float | None]:
    """Actual monthly growth against the plan's, and the day the plan says 100 % comes."""
    planned_days = None
    current, limit = result.current, result.limit
    if limit and current and 0 < current < limit and monthly_growth > 0:
        planned_days = 30 * math.log(limit / current) / math.log1p(monthly_growth)
    return {
        "monthly_growth_planned": monthly_growth,
        "monthly_growth_actual": _round(result.monthly_growth, 4),
        "days_until_100_planned": _round(planned_days, 1),
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# --- many resources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One resource to forecast: its points and its events."""

    resource: str
    points: Sequence[Point]
    events: Sequence[Event]


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run(jobs: Sequence[Job], settings: ForecastSettings, now: datetime) -> list[Forecast]:
    return [forecast(j.resource, j.points, j.events, settings, now) for j in jobs]


def forecast_many(
    jobs: Sequence[Job],
    settings: ForecastSettings,
    now: datetime,
    workers: int | None = None,
) -> list[Forecast]:
    """Each job's forecast, in order. With at least PARALLEL_FROM jobs, `workers` processes
    share them (default: one per CPU, at most MAX_WORKERS): this one and workers - 1 spawned
    helpers (spawned, not forked: the caller may be a Prefect worker with threads running).
    The helpers take chunks from the front; this process takes from the back the chunks no
    helper has started, so nobody waits for a slow start, and memory grows by one helper per
    extra CPU only."""
    workers = min(cpus(), MAX_WORKERS) if workers is None else workers
    if workers <= 1 or len(jobs) < PARALLEL_FROM:
        return _run(jobs, settings, now)
    chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    done: dict[int, list[Forecast]] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers - 1, mp_context=context) as pool:
        futures = [pool.submit(_run, chunk, settings, now) for chunk in chunks]
        for index in reversed(range(len(chunks))):
            if futures[index].cancel():  # no helper has started it: do it here
                done[index] = _run(chunks[index], settings, now)
        for index, future in enumerate(futures):
            if index not in done:
                done[index] = future.result()
    return [result for index in range(len(chunks)) for result in done[index]]
