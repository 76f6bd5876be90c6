"""Errors shared by every layer.

`RunbookError` subclasses are the operator's mistakes: the CLI prints their message on one
line and exits 2. Anything else that goes wrong during a backup or a check is a *result*
(recorded, reported, exit 1), not one of these.
"""

from __future__ import annotations


class RunbookError(Exception):
    """An operator mistake: bad config, unknown target or id. The message names the culprit."""


class ConfigError(RunbookError):
    """runbook.yaml is missing, unreadable or invalid."""


class NotFoundError(RunbookError):
    """An unknown target, backup id or similar name given by the operator."""


class TransientError(Exception):
    """A fault worth retrying: storage 5xx or timeout, connection refused, lock timeout."""


class PermanentError(Exception):
    """A fault that retrying cannot fix: wrong password, missing binary, bad archive."""


class RunFailed(Exception):
    """A flow run's own verdict that it failed (a backup not verified, a drill that did not
    pass), carrying the run's summary.

    Flows end with `Failed(message, data=RunFailed(message, summary))`: Prefect resolves a
    failed state's data into an exception (on a worker, `state.result()` raises it), so the
    summary must travel inside one. `RunFailed.summary_of(result)` gets it back.
    """

    def __init__(self, message: str, summary: object) -> None:
        super().__init__(message, summary)
        self.summary = summary

    def __str__(self) -> str:
        return str(self.args[0])

    @staticmethod
    def summary_of(result: object) -> object:
        """A flow's result or the summary inside its RunFailed; other values unchanged."""
        return result.summary if isinstance(result, RunFailed) else result
