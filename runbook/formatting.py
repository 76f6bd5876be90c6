"""Sizes, ratios and durations for people (tables, reports). No Prefect here: the CLI's
read-only commands use it and must start fast."""

from __future__ import annotations


def human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def ratio(logical: int | None, stored: int | None) -> str:
    if not logical or not stored:
        return "-"
    return f"{logical / stored:.1f}x"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"
