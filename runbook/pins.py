"""Labels and pins of backups (runbook 000's `emergency-$(date +%Y%m%d-%H%M)`, the
pre-maintenance backup): a label names a backup for people; a pin (`keep_until`) makes
retention keep it until that moment, whatever the policy says. An expired pin is ordinary.

`--keep-until` takes a date (2026-12-31: kept through that day, UTC), a moment
(2026-12-31T18:00Z; no zone means UTC) or a duration from now (7d, 2w, 12h).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from runbook.config.core import parse_duration
from runbook.errors import RunbookError

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,62}$")


class PinError(RunbookError):
    """A bad --label or --keep-until (the message names the option)."""


@dataclass(frozen=True)
class Pin:
    """What a backup is asked to carry: a label, and a moment retention keeps it until."""

    label: str | None = None
    keep_until: datetime | None = None  # tz-aware UTC

    def describe(self) -> str:
        """'pinned until 2026-12-31 00:00 UTC (label emergency-20261201-2207)'."""
        text = f"pinned until {format_moment(self.keep_until)}" if self.keep_until else "not pinned"
        return text + (f" (label {self.label})" if self.label else "")


def format_moment(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def parse_label(value: str | None, option: str = "--label") -> str | None:
    """A label: letters, digits and . _ : + - (at most 63, no '/': it must never read as a
    storage path); empty means none."""
    if value is None or value == "":
        return None
    if not LABEL.match(value):
        raise PinError(
            f"{option} {value!r}: a label is 1-63 letters, digits and . _ : + - starting with a "
            "letter or digit (no '/' or spaces), e.g. emergency-20261201-2207"
        )
    return value


def parse_keep_until(
    value: str | None, now: datetime, option: str = "--keep-until"
) -> datetime | None:
    """The moment a pin expires, from a date, a moment or a duration from `now`; refused
    unless it is in the future. Empty means no pin."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    moment = _moment(text)
    if moment is None:
        try:
            delta = parse_duration(text)
        except ValueError:
            raise PinError(
                f"{option} {value!r}: expected a date (2026-12-31), a moment "
                "(2026-12-31T18:00Z) or a duration from now (7d, 2w, 12h)"
            ) from None
        if delta <= timedelta(0):
            raise PinError(f"{option} {value!r}: the duration must be longer than zero")
        return now + delta
    if moment <= now:
        raise PinError(
            f"{option} {value!r}: {format_moment(moment)} is in the past (now "
            f"{format_moment(now)}); a pin must end in the future"
        )
    return moment


def _moment(text: str) -> datetime | None:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return None
        # through that day: until the next midnight, UTC
        return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
    if not re.match(r"\d{4}-\d{2}-\d{2}[T ]", text):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_pin(label: str | None, keep_until: str | None, now: datetime, *, cli: bool = True) -> Pin:
    """Both options at once, errors naming the CLI option (or the flow parameter)."""
    return Pin(
        label=parse_label(label, "--label" if cli else "label"),
        keep_until=parse_keep_until(keep_until, now, "--keep-until" if cli else "keep_until"),
    )
