"""The maintenance wing's Prefect tasks: each step of a window as its own task run
(`plan-app`, `lock`, `enter`, `apply-app`, `exit`, `verify-app`, ...), so the Prefect UI shows
what the window is doing and where it stopped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from tasks.maintenance.run import Window


# Not persisted: steps hand each other a window holding DSNs, locks and open sessions.
@task(cache_policy=NO_CACHE, persist_result=False)
def window_step(function: Callable[..., Any], window: Window, args: tuple[Any, ...]) -> Any:
    """One step of a maintenance window."""
    return function(window, *args)


def as_task_run(step: str, function: Callable[..., Any], window: Window, *args: Any) -> Any:
    """Run a window step as a task run named after the step and its target (a StepRunner)."""
    target = getattr(args[0], "name", None) if args else None
    named = window_step.with_options(
        name=f"maintenance-{step}", task_run_name=f"{step}-{target}" if target else str(step)
    )
    state = named(function, window, args, return_state=True)
    value = state.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        raise value  # the step's own exception: the window records it
    return value


def log_to_prefect(message: str) -> None:
    """A window's progress lines, in the log of the task run (or flow run) that says them."""
    try:
        logger = get_run_logger()
    except MissingContextError:  # a run being torn down
        logger = logging.getLogger("runbook.maintenance")
    logger.info(message)
