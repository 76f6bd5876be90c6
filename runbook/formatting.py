"""Sizes, ratios and durations for people (tables, reports). No Prefect here: the CLI's
read-only commands use it and must start fast."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any


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


def span(value: float | None) -> str:
    """Seconds as people write a duration: '3.0 s' under a minute, else '1h', '26h' -> '1d2h'
    (human_duration), the form of `rto: 1h` in the config."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    return human_duration(timedelta(seconds=value))


def quantity(value: Any, unit: str = "") -> str:
    """A measured value with its unit, as people read it: '91.2 %', '0.42 s', '12', 'yes';
    None -> '-'. Text values (e.g. 'NaN', a link state) are shown as they are."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        number = str(value)
    elif isinstance(value, float) and math.isfinite(value):
        if value.is_integer():
            number = str(int(value))
        elif abs(value) >= 1:
            number = f"{value:.2f}".rstrip("0").rstrip(".")
        else:
            number = f"{value:.3g}"
    else:
        return str(value)
    return f"{number} {unit}" if unit else number


def shorten(text: Any, limit: int) -> str:
    """Text on one line (whitespace runs become one space), cut to `limit` characters with …"""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# What people look for first comes first: which backup, which artifact, is it verified.
BACKUP_COLUMNS = [
    "target",
    "backup",
    "artifact",
    "verified",
    "size",
    "ratio",
    "duration",
    "sha256",
    "error",
]


def backup_rows(
    records: list[Any], mark: Callable[[str, bool], str] = lambda t, ok: t
) -> list[list[str]]:
    """One row per artifact of each backup (a backup without artifacts: one row with its
    status), in BACKUP_COLUMNS order. `verified` says yes, no with the artifact's problem, or
    the backup's status; `mark(text, ok)` decorates it (markdown bold, rich colours). The
    backup's error, with the step it failed in, has its own column, on the backup's first row
    only ("" when none)."""
    rows = []
    for record in records:
        error = backup_error(record)
        if not record.artifacts:
            rows.append(
                [
                    record.target,
                    record.id,
                    "-",
                    mark(record.status.value, False),
                    "-",
                    "-",
                    "-",
                    "-",
                    error,
                ]
            )
        for index, a in enumerate(record.artifacts):
            if a.verified_at:
                verified = mark("yes", True)
            else:
                verified = mark(f"no: {a.problem}" if a.problem else record.status.value, False)
            rows.append(
                [
                    record.target,
                    record.id,
                    a.name,
                    verified,
                    human_bytes(a.bytes),
                    ratio(a.logical_bytes, a.bytes),
                    seconds(a.seconds),
                    a.sha256[:12],
                    "" if index else error,
                ]
            )
    return rows


def human_duration(delta: timedelta, *, exact: bool = False) -> str:
    """timedelta -> '26h' -> '1d2h', '3d4h', '45m', '12s': the two largest units people read
    (minutes dropped beside days, seconds beside minutes). `exact`: every unit down to the
    millisecond, the form a setting is written in ('1d12h', '1m30s', '1s500ms', '0s')."""
    if exact:
        return _exact_duration(delta)
    total = int(delta.total_seconds())
    if total < 60:
        return f"{total}s"
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes and not days else "",
    ]
    return "".join(parts) or "0m"


def _exact_duration(delta: timedelta) -> str:
    total_ms = round(delta.total_seconds() * 1000)
    sign = "-" if total_ms < 0 else ""
    rest, ms = divmod(abs(total_ms), 1000)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return sign + ("".join(parts) or "0s")


def backup_error(record: Any) -> str:
    """A backup's error with the step it failed in ('failed at connect: ...'); '' if none."""
    if not record.error:
        return ""
    step = getattr(record, "failed_step", None)
    return f"failed at {step}: {record.error}" if step else record.error
