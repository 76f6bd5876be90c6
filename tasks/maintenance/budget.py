"""The window's end is a budget: before an action starts, an action whose estimated duration
would carry it past the window's end is deferred, not started (a running statement is bounded
by statement_timeout, tasks/maintenance/procedure.py).

The estimate is the plan's (`estimate_seconds`): each procedure makes it from the size of what
the action works through and from the ledger's past runs of the same action
(tasks/maintenance/relations.py for the PostgreSQL relations), so it has one home.
Pure functions: no clock, no I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from runbook.catalog import MaintenanceAction
from runbook.formatting import human_duration


def overruns(action: MaintenanceAction, now: datetime, ends_at: datetime) -> bool:
    """Would the action, started now, end after the window?"""
    return now + timedelta(seconds=max(action.estimate_seconds, 0.0)) > ends_at


def deferral_reason(action: MaintenanceAction, now: datetime, ends_at: datetime) -> str:
    left = max((ends_at - now).total_seconds(), 0.0)
    return (
        f"deferred: estimated {_seconds(action.estimate_seconds)} but {_seconds(left)} of the "
        f"window left (it ends {ends_at:%H:%M:%S} UTC)"
    )


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else human_duration(timedelta(seconds=value))
