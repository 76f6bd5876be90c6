"""The restore's Prefect tasks: each step as its own task run (`pick-app`, `restore-app`,
...), so the Prefect UI shows where a restore failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from runbook.catalog import RestoreStep
from tasks.restore.run import Restore


# Not persisted: steps hand each other DSNs with passwords, work folders and downloads.
@task(cache_policy=NO_CACHE, persist_result=False)
def restore_step(
    step: RestoreStep, function: Callable[..., Any], restore: Restore, args: tuple[Any, ...]
) -> Any:
    """One step of a restore. A step that raises fails its task run; so does one whose checks
    or hooks failed."""
    before = len(restore.results.checks) + len(restore.results.hooks)
    value = function(restore, *args)
    found = [*restore.results.checks, *restore.results.hooks]
    failing = [c.name for c in found[before:] if not c.ok]
    if failing:
        message = f"{len(failing)} check(s) failed: {', '.join(failing[:5])}"
        return Failed(message=message, data=value)
    return value


def as_task_run(
    step: RestoreStep, function: Callable[..., Any], restore: Restore, *args: Any
) -> Any:
    """Run a restore step as a task run named after the step and the target."""
    named = restore_step.with_options(
        name=f"restore-{step}", task_run_name=f"{step}-{restore.target.name}"
    )
    state = named(step, function, restore, args, return_state=True)
    value = state.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        raise value
    return value


def log_to_prefect(message: str) -> None:
    get_run_logger().info(message)
