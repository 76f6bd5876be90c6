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
