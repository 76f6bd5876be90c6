"""The Custom run form of each deployment in the Prefect UI: the flow's parameter schema (types,
defaults, the docstring's descriptions) with the config's valid names as choices."""

from __future__ import annotations

from typing import Any

from prefect.utilities.callables import parameter_schema as prefect_schema

from runbook.config import DEFAULT_SCHEDULE, PROCEDURES, PostgresTarget, RedisTarget
from tasks.diagnose.plan import CONTEXT, plan_sections


def parameter_choices(flow_name: str, config: Any) -> dict[str, list[str]]:
    """The valid values of a flow's name parameters in this config, for the UI's pickers."""
    backup_targets = [t.name for t in config.backup_targets()]
    if flow_name == "dr-drill":
        drillable = [
            t.name for t in config.backup_targets() if isinstance(t, PostgresTarget | RedisTarget)
        ]
        return {"targets": drillable}
    if flow_name == "backup":
        return {
            "targets": backup_targets,
            "schedule": ["", DEFAULT_SCHEDULE, *config.backup.schedules],
        }
    if flow_name == "restore":
        return {"target": ["", *backup_targets]}  # PostgreSQL, files, Redis: all restore
    if flow_name == "diagnose":
        return {"targets": [p.target for p in plan_sections(config) if p.name not in CONTEXT]}
    if flow_name in ("verify-backups", "retention"):
        return {"targets": backup_targets}
    if flow_name == "maintenance":
        return {
            "window": list(config.maintenance.windows),
            "targets": [t.name for t in config.targets.postgres],
            "procedures": list(PROCEDURES),
        }
    return {}


def parameter_schema(flow: Any, config: Any) -> dict[str, Any]:
    """The flow's parameter schema (types, defaults, the docstring's descriptions) with the
    config's valid names as choices: a list of targets becomes a multi-select of target
    names, a schedule a drop-down."""

    schema = prefect_schema(flow).model_dump()
    for name, choices in parameter_choices(flow.name, config).items():
        prop = schema["properties"].get(name)
        if prop is None or not choices:
            continue
        if prop.get("type") == "array":
            prop["items"] = {**prop.get("items", {}), "enum": choices}
        elif prop.get("type") == "string":
            prop["enum"] = choices
    return schema
