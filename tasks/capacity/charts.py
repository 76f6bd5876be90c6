"""One PNG chart per resource (matplotlib, Agg: no display, no browser): its daily history,
the forecast's P10-P90 band and median, the 80/90/100 % lines of its limit and the events
(maintenance, retention, jumps) marked where they happened."""

from __future__ import annotations

import io
from datetime import timedelta

import matplotlib

matplotlib.use("Agg")  # before pyplot: charts are files, never windows

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tasks.capacity.forecast import THRESHOLDS, Forecast  # noqa: E402

WIDTH, HEIGHT, DPI = 9.0, 4.0, 100  # 900 x 400 pixels
SHOWN_AHEAD = 90  # days of forecast drawn (more when a threshold is a little further)
EVENT_COLOURS = {"maintenance": "tab:green", "retention": "tab:purple", "jump": "tab:gray"}


def _divisor(unit: str, values: np.ndarray) -> tuple[float, str]:
    """Bytes shown in the largest binary unit the values reach; other units as they are."""
    if unit != "bytes":
        return 1.0, unit
    top = float(np.nanmax(np.abs(values))) if values.size else 0.0
    for power, name in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if top >= 1024**power:
            return float(1024**power), name
    return 1.0, "B"


def chart_png(title: str, unit: str, result: Forecast) -> bytes:
    """The chart as PNG bytes (WIDTH x HEIGHT inches at DPI)."""
    history = result.history
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT), dpi=DPI)
    try:
        if history is None or not history.days:
            ax.text(0.5, 0.5, "no samples yet", ha="center", va="center", transform=ax.transAxes)
        else:
            _draw(ax, unit, result)
        ax.set_title(f"{title} - {result.status}", fontsize=10)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=DPI)
        return out.getvalue()
    finally:
        plt.close(fig)


def _draw(ax, unit: str, result: Forecast) -> None:
    history = result.history
    limit = result.limit or 0.0
    ahead = SHOWN_AHEAD
    p50 = (result.days_until.get("100") or {}).get("p50")
    if p50 is not None:
        ahead = int(min(max(ahead, p50 * 1.2), len(result.band) if result.band is not None else 0))
    extra = [limit * t / 100 for t in THRESHOLDS] if limit else []
    band = result.band[:ahead] if result.band is not None else np.empty((0, 3))
    everything = np.concatenate([history.levels, band.ravel(), extra])
    factor, shown_unit = _divisor(unit, everything)

    ax.plot(history.days, history.levels / factor, color="tab:blue", lw=1.5, label="history")
    if len(band):
        last = history.days[-1]
        future = [last + timedelta(days=i + 1) for i in range(len(band))]
        ax.fill_between(
            future,
            band[:, 0] / factor,
            band[:, 2] / factor,
            color="tab:orange",
            alpha=0.25,
            label="P10-P90",
        )
        ax.plot(future, band[:, 1] / factor, color="tab:orange", lw=1.2, ls="--", label="P50")
    for threshold, style in zip(THRESHOLDS, (":", "--", "-"), strict=True):
        if limit:
            ax.axhline(
                limit * threshold / 100 / factor,
                color="tab:red",
                ls=style,
                lw=0.9,
                label=f"{threshold} %",
            )
    labelled: set[str] = set()
    for event in result.events:
        colour = EVENT_COLOURS.get(event.kind, "black")
        label = event.kind if event.kind not in labelled else None
        labelled.add(event.kind)
        ax.axvline(event.time.date(), color=colour, lw=1.0, alpha=0.8, label=label)
    ax.set_ylabel(shown_unit or "value")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
