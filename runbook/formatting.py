"""Sizes, ratios and durations for people (tables, reports). No Prefect here: the CLI's
read-only commands use it and must start fast."""

from __future__ import annotations

from collections.abc import Callable
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


BACKUP_COLUMNS = ["target", "backup", "artifact", "size", "ratio", "duration", "sha256", "verified"]


def backup_rows(
    records: list[Any], mark: Callable[[str, bool], str] = lambda t, ok: t
) -> list[list[str]]:
    """One row per artifact of each backup (a backup without artifacts: one row saying why).
    `mark(text, ok)` decorates the verified column (markdown bold, rich colours)."""
    rows = []
    for record in records:
        if not record.artifacts:
            rows.append(
                [
                    record.target,
                    record.id,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    mark(f"{record.status.value}: {record.error or ''}", False),
                ]
            )
        for a in record.artifacts:
            if a.verified_at:
                verified = mark("yes", True)
            else:
                verified = mark(f"no: {a.problem}" if a.problem else record.status.value, False)
            rows.append(
                [
                    record.target,
                    record.id,
                    a.name,
                    human_bytes(a.bytes),
                    ratio(a.logical_bytes, a.bytes),
                    seconds(a.seconds),
                    a.sha256[:12],
                    verified,
                ]
            )
    return rows


def human_duration(delta: Any) -> str:
    """timedelta -> '26h', '3d4h', '45m', '12s'."""
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
