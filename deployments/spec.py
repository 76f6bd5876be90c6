"""The deployments Runbook declares: prefect.yaml's, plus one backup deployment per schedule
of runbook.yaml's `backup.schedules` and `capacity-collect-hourly` when `capacity.hourly`
names sources; and the parameter forms the Prefect UI shows for them.

Used by `runbook deploy` (which hands the merged list to `prefect deploy --all`) and by
`python -m deployments.serve`, so both register the same deployments.
"""

from __future__ import annotations

import copy
import importlib
import importlib.resources
import importlib.util
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from cronsim import CronSim

from runbook.config import load_config
from runbook.formatting import human_duration

# prefect.yaml ships inside this package (package data: a checkout, a wheel and the container
# image all have it); flow entrypoints (flows/backup.py:backup) resolve against the folder
# that holds the `flows` package, which is where deployments run (RUNBOOK_HOME).
PREFECT_YAML = Path(str(importlib.resources.files("deployments") / "prefect.yaml"))
CODE_ROOT = Path(importlib.util.find_spec("flows").origin).resolve().parents[1]
TIMEZONE_PLACEHOLDER = "{{ $RUNBOOK_TIMEZONE }}"
NIGHTLY = "backup-nightly"  # the deployment that backs up targets with `schedule: nightly`
CAPACITY_COLLECT = "capacity-collect"
HOURLY_CRON = "20 * * * *"  # clear of health-hourly at :00


def load_flow(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def load_prefect_yaml(prefect_yaml: Path = PREFECT_YAML) -> dict[str, Any]:
    return yaml.safe_load(prefect_yaml.read_text())


def declared_deployments(
    prefect_yaml: Path = PREFECT_YAML, config: Any | None = None
) -> list[dict[str, Any]]:
    """prefect.yaml's deployments, plus `backup-<name>` for each of the config's
    backup.schedules (a copy of backup-nightly with that cron and `schedule: <name>`), and
    `capacity-collect-hourly` when capacity.hourly names sources."""
    deployments = load_prefect_yaml(prefect_yaml)["deployments"]
    if config is None:
        return deployments
    if config.capacity.hourly:
        deployments = [*deployments, capacity_hourly(deployments, config.capacity.hourly)]
    if not config.backup.schedules:
        return deployments
    nightly = next(d for d in deployments if d["name"] == NIGHTLY)
    extra = []
    for name, cron in config.backup.schedules.items():
        spec = copy.deepcopy(nightly)
        members = [t.name for t in config.backup_targets() if t.schedule == name]
        spec.update(
            name=f"backup-{name}",
            description=f"Backups of the targets with `schedule: {name}` in runbook.yaml "
            f"({', '.join(members) or 'none yet'}), verified by reading them back.",
            parameters={**nightly.get("parameters", {}), "schedule": name},
            schedules=[{"cron": cron, "timezone": TIMEZONE_PLACEHOLDER}],
        )
        extra.append(spec)
    return [*deployments, *extra]


def capacity_hourly(deployments: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    """capacity-collect's copy that runs every hour for the sources capacity.hourly names."""
    daily = next(d for d in deployments if d["name"] == CAPACITY_COLLECT)
    spec = copy.deepcopy(daily)
    spec.update(
        name=f"{CAPACITY_COLLECT}-hourly",
        description=f"Capacity samples every hour of {', '.join(sources)} (capacity.hourly in "
        "runbook.yaml), and the health history's levels.",
        parameters={**daily.get("parameters", {}), "hourly": True},
        schedules=[{"cron": HOURLY_CRON, "timezone": TIMEZONE_PLACEHOLDER}],
    )
    return spec


def merged_prefect_yaml(
    config: Any, prefect_yaml: Path = PREFECT_YAML, work_pool: dict[str, Any] | None = None
) -> dict[str, Any]:
    """prefect.yaml with the config's extra deployments, for `prefect deploy --prefect-file`;
    with `work_pool` (one of definitions.work_pools, filled in), every deployment goes there."""
    data = load_prefect_yaml(prefect_yaml)
    data["deployments"] = declared_deployments(prefect_yaml, config)
    if work_pool is not None:
        data["definitions"] = {"work_pool": work_pool}
        for deployment in data["deployments"]:
            deployment["work_pool"] = copy.deepcopy(work_pool)
    return data


def work_pools(prefect_yaml: Path = PREFECT_YAML) -> dict[str, dict[str, Any]]:
    """prefect.yaml's definitions.work_pools: "process" and "kubernetes" -> the pool."""
    return load_prefect_yaml(prefect_yaml)["definitions"]["work_pools"]


def schedule_timezone(declared: str | None, config: Any | None = None) -> str:
    """prefect.yaml says "{{ $RUNBOOK_TIMEZONE }}": $RUNBOOK_TIMEZONE, else runbook.yaml's."""
    if declared and declared != TIMEZONE_PLACEHOLDER:
        return declared
    if os.environ.get("RUNBOOK_TIMEZONE"):
        return os.environ["RUNBOOK_TIMEZONE"]
    if config is None:
        config = load_config()
    return config.timezone


def backup_cron(schedule: str, config: Any, prefect_yaml: Path = PREFECT_YAML) -> str | None:
    """The cron expression a backup schedule runs on: backup-nightly's from prefect.yaml, or
    the config's backup.schedules entry."""
    if schedule in config.backup.schedules:
        return config.backup.schedules[schedule]
    nightly = next(
        (d for d in load_prefect_yaml(prefect_yaml)["deployments"] if d["name"] == NIGHTLY), None
    )
    crons = [s["cron"] for s in (nightly or {}).get("schedules", []) if s.get("cron")]
    return crons[0] if crons else None


def longest_gap(cron: str, fires: int = 500) -> Any:
    """The longest wall-clock time between two runs of a cron expression (DST aside)."""
    times = CronSim(cron, datetime(2026, 1, 1))  # naive: wall-clock, a whole cycle of weekdays
    previous = next(times)
    gap = None
    for _ in range(fires):
        current = next(times)
        gap = current - previous if gap is None else max(gap, current - previous)
        previous = current
    return gap


def rpo_warnings(config: Any, prefect_yaml: Path = PREFECT_YAML) -> list[str]:
    """Targets whose backup schedule cannot meet their RPO (or health.backup_max_age): their
    backup.age check would warn every day. Said by check-config and runbook deploy."""

    warnings = []
    for target in config.backup_targets():
        cron = backup_cron(target.schedule, config, prefect_yaml)
        if cron is None:
            continue
        limit = target.rpo or config.health.backup_max_age
        gap = longest_gap(cron)
        if gap > limit:
            what = "rpo" if target.rpo else "health.backup_max_age"
            warnings.append(
                f"target {target.name}: backed up every {human_duration(gap)} (schedule "
                f"{target.schedule}: {cron}) but its {what} is {human_duration(limit)}: its "
                "backup.age check will warn; put it on a schedule at least that frequent "
                "(backup.schedules)"
            )
    return warnings
