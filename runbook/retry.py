"""Retry policy shared by every task: only transient faults retry, with backoff and jitter."""

from __future__ import annotations

from typing import Any

from runbook.errors import TransientError
from runbook.storage import TransientStorageError


def is_transient(exc: BaseException | None) -> bool:
    return isinstance(exc, TransientError | TransientStorageError | ConnectionError | TimeoutError)


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry storage 5xx/timeouts, refused connections; never a
    wrong password or a bad archive."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as error:  # noqa: BLE001 - the state's data may be the exception itself
        exc = error
    return is_transient(exc if isinstance(exc, BaseException) else None)


def retry_options(retries: int, base_delay: float) -> dict[str, Any]:
    """Options for `Task.with_options`: exponential backoff with jitter, transient only."""
    return {
        "retries": retries,
        # base, 2 x base, 4 x base, ... (Prefect's exponential_backoff, without importing it)
        "retry_delay_seconds": [base_delay * 2**attempt for attempt in range(retries)]
        if base_delay
        else 0,
        "retry_jitter_factor": 0.5 if base_delay else None,
        "retry_condition_fn": retry_if_transient,
    }
