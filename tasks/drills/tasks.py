"""The drill wing's Prefect tasks."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from runbook.catalog import (
    DrillRecord,
)
from tasks.drills.drill import run_drill


@task(name="dr-drill", task_run_name="drill-{target_name}", cache_policy=NO_CACHE)
def drill_target(
    config_path: str | None, target_name: str, backup: str, keep_on_failure: bool, jobs: int | None
) -> DrillRecord:
    from prefect.runtime import flow_run

    from runbook.runtime import open_runtime

    runtime = open_runtime(config_path)
    logger = get_run_logger()
    return run_drill(
        runtime.config,
        runtime.catalog,
        runtime.storage,
        runtime.config.target(target_name),
        backup,
        keep_on_failure=keep_on_failure,
        jobs=jobs,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        on_step=logger.info,
    )
