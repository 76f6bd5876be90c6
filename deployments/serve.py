"""Serve every deployment of prefect.yaml from this one process (no work pool needed).

    RUNBOOK_CONFIG=/etc/runbook/runbook.yaml python -m deployments.serve

Reads the same prefect.yaml that `prefect deploy --all` uses, so schedules and parameters are
declared once. Schedules are not paused when the process stops (pause_on_shutdown=False).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_flow(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def declared_deployments(prefect_yaml: Path = ROOT / "prefect.yaml") -> list[dict[str, Any]]:
    return yaml.safe_load(prefect_yaml.read_text())["deployments"]


TIMEZONE_PLACEHOLDER = "{{ $RUNBOOK_TIMEZONE }}"


def schedule_timezone(declared: str | None, config_path: str | None = None) -> str:
    """prefect.yaml says "{{ $RUNBOOK_TIMEZONE }}": $RUNBOOK_TIMEZONE, else runbook.yaml's."""
    if declared and declared != TIMEZONE_PLACEHOLDER:
        return declared
    if os.environ.get("RUNBOOK_TIMEZONE"):
        return os.environ["RUNBOOK_TIMEZONE"]
    from runbook.config import load_config

    return load_config(config_path).timezone


def build_deployments(
    prefect_yaml: Path = ROOT / "prefect.yaml", config_path: str | None = None
) -> list[Any]:
    from prefect.client.schemas.schedules import construct_schedule

    deployments = []
    for spec in declared_deployments(prefect_yaml):
        schedules = [
            construct_schedule(
                cron=s.get("cron"),
                rrule=s.get("rrule"),
                timezone=schedule_timezone(s.get("timezone"), config_path),
            )
            for s in spec.get("schedules", [])
        ]
        flow = load_flow(spec["entrypoint"])
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                parameters=spec.get("parameters", {}),
                tags=spec.get("tags", []),
                schedules=schedules or None,
            )
        )
    return deployments


def main() -> None:
    from prefect import serve

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "runbook")
    serve(*build_deployments(), pause_on_shutdown=False)


if __name__ == "__main__":
    main()
