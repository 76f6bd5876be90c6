"""The drill wing's Prefect tasks: each step of a drill as its own task run (`pick-app`,
`restore-app`, `validate-app`, ...), so the Prefect UI shows where a drill failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from runbook.catalog import DrillStep
from tasks.drills.session import Drill


# Not persisted: steps hand each other DSNs with passwords, work folders and open servers.
@task(cache_policy=NO_CACHE, persist_result=False)
def drill_step(
    step: DrillStep, function: Callable[..., Any], drill: Drill, args: tuple[Any, ...]
) -> Any:
    """One step of a drill. A step that raises fails its task run; so does one whose checks
    failed while the drill goes on (failed validation still measures RTO and RPO)."""
    before = len(drill.results.checks)
    value = function(drill, *args)
    failing = [c.name for c in drill.results.checks[before:] if not c.ok]
    if failing:
        message = f"{len(failing)} check(s) failed: {', '.join(failing[:5])}"
        return Failed(message=message, data=value)
    return value


def as_task_run(step: DrillStep, function: Callable[..., Any], drill: Drill, *args: Any) -> Any:
    """Run a drill step as a task run named after the step and the target (a StepRunner)."""
    named = drill_step.with_options(
        name=f"drill-{step}", task_run_name=f"{step}-{drill.target.name}"
    )
    state = named(step, function, drill, args, return_state=True)
    value = state.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        raise value  # the step's own exception: the drill records it
    return value


def log_to_prefect(message: str) -> None:
    """A drill's progress lines, in the log of the task run (or flow run) that says them."""
    get_run_logger().info(message)
