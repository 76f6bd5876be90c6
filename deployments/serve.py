"""Serve every deployment Runbook declares from this one process (no work pool needed).

    RUNBOOK_CONFIG=/etc/runbook/runbook.yaml python -m deployments.serve

Reads the same prefect.yaml that `runbook deploy` uses (plus one backup deployment per
`backup.schedules` entry of runbook.yaml), so schedules and parameters are declared once.
Schedules run in runbook.yaml's timezone and are not paused when the process stops
(pause_on_shutdown=False).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import serve
from prefect.client.schemas.schedules import construct_schedule
from prefect.utilities.callables import ParameterSchema

from deployments.forms import parameter_schema
from deployments.spec import (
    CODE_ROOT,
    PREFECT_YAML,
    declared_deployments,
    load_flow,
    schedule_timezone,
)
from runbook.config import CONFIG_ENV, load_config, resolve_config_path

__all__ = ["CODE_ROOT", "build_deployments", "declared_deployments", "load_flow", "main"]


def build_deployments(
    prefect_yaml: Path = PREFECT_YAML, config_path: str | None = None
) -> list[Any]:
    config = load_config(config_path)
    deployments = []
    for spec in declared_deployments(prefect_yaml, config):
        schedules = [
            construct_schedule(
                cron=s.get("cron"),
                rrule=s.get("rrule"),
                timezone=schedule_timezone(s.get("timezone"), config),
            )
            for s in spec.get("schedules", [])
        ]
        flow = load_flow(spec["entrypoint"])
        deployment = flow.to_deployment(
            name=spec["name"],
            description=spec.get("description"),
            parameters=spec.get("parameters", {}),
            tags=spec.get("tags", []),
            schedules=schedules or None,
        )
        # The UI's Custom run form: the config's target names as choices.
        deployment._parameter_openapi_schema = ParameterSchema(**parameter_schema(flow, config))
        deployments.append(deployment)
    return deployments


def main() -> None:
    # Flow runs are child processes: give them the config by absolute path.
    os.environ[CONFIG_ENV] = str(resolve_config_path(None).resolve())
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "runbook")
    serve(*build_deployments(), pause_on_shutdown=False)


if __name__ == "__main__":
    main()
