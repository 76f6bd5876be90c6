"""The building blocks of every section: durations, names, the strict base model and the
warn/critical Threshold of a measured value."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> timedelta:
    """'90s', '10m', '1h', '7d', '2w' or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30s', '10m', '1h', '7d', got {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        try:  # ISO 8601 (PT1M), as pydantic writes a timedelta
            return TypeAdapter(timedelta).validate_python(value)
        except ValidationError:
            pass
        raise ValueError(f"expected a duration like '30s', '10m', '1h', '7d', got {value!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Name = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="lowercase letters, digits, - and _"),
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(Model):
    """A measured value is warn/critical when `value <op> warn/critical` holds."""

    warn: float | None = None
    critical: float | None = None
    op: Literal[">", ">=", "<", "<="] = ">"

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.warn is None or self.critical is None:
            return self
        wrong = self.critical < self.warn if self.op.startswith(">") else self.critical > self.warn
        if wrong:
            worse = "above" if self.op.startswith(">") else "below"
            raise ValueError(
                f"critical ({self.critical:g}) must be {worse} or equal to warn ({self.warn:g}) "
                f"for op '{self.op}'"
            )
        return self


def threshold_field(warn: float | None, critical: float | None, op: str = ">") -> Any:
    """A Threshold field with these defaults: `disk: Threshold = threshold_field(85, 90)`."""
    return Field(default_factory=lambda: Threshold(warn=warn, critical=critical, op=op))
