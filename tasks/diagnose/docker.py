"""The Docker section: the project's containers with state, exit code, OOM kill, restarts and
health (`docker ps -a`), one stats sample each (`docker stats --no-stream`) and the last lines
of their logs (`docker compose logs --tail`)."""

from __future__ import annotations

from typing import Any

from runbook.config import DiagnosticsSettings, DockerTarget
from runbook.systems.docker import Engine, container_name
from tasks.diagnose.sections import Collected


def container_state(attrs: dict[str, Any]) -> dict[str, Any]:
    state = attrs.get("State") or {}
    health = (state.get("Health") or {}).get("Status")
    return {
        "name": container_name(attrs),
        "image": (attrs.get("Config") or {}).get("Image"),
        "status": state.get("Status"),
        "exit_code": state.get("ExitCode"),
        "oom_killed": state.get("OOMKilled", False),
        "restarts": attrs.get("RestartCount", 0),
        "health": health,
        "started_at": state.get("StartedAt"),
        "finished_at": state.get("FinishedAt"),
        "error": state.get("Error") or None,
    }


def stats_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """CPU % and memory as `docker stats` computes them from one sample."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (
        pre.get("cpu_usage") or {}
    ).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or 1
    memory = stats.get("memory_stats") or {}
    cache = (memory.get("stats") or {}).get("inactive_file", 0)
    used = max(0, memory.get("usage", 0) - cache)
    limit = memory.get("limit") or 0
    return {
        "cpu_percent": round(cpu_delta / system_delta * cpus * 100, 2) if system_delta > 0 else 0.0,
        "memory_bytes": used,
        "memory_limit_bytes": limit,
        "memory_percent": round(used / limit * 100, 2) if limit else None,
        "pids": (stats.get("pids_stats") or {}).get("current"),
    }


def collect_docker(target: DockerTarget, settings: DiagnosticsSettings) -> Collected:
    containers = []
    findings = []
    with Engine(target.url, target.timeout.total_seconds()) as engine:
        for attrs in engine.containers(target.project):
            entry = container_state(attrs)
            running = entry["status"] in ("running", "restarting", "paused")
            try:
                entry["stats"] = stats_summary(engine.stats(attrs["Id"])) if running else None
            except Exception as exc:  # noqa: BLE001 - kept in the entry, the section goes on
                entry["stats_error"] = str(exc)
            try:
                entry["logs"] = engine.logs(attrs["Id"], settings.log_lines).splitlines()
            except Exception as exc:  # noqa: BLE001
                entry["logs_error"] = str(exc)
            containers.append(entry)
            findings += _findings(entry)
    bad = sum(1 for c in containers if c["status"] != "running" or c["health"] == "unhealthy")
    summary = f"{len(containers)} containers, {bad} not running or unhealthy"
    return Collected(data={"containers": containers}, summary=summary, findings=findings)


def _findings(entry: dict[str, Any]) -> list[str]:
    name, found = entry["name"], []
    if entry["status"] not in ("running",):
        found.append(f"container {name} is {entry['status']} (exit code {entry['exit_code']})")
    if entry["oom_killed"]:
        found.append(f"container {name} was OOM-killed")
    if entry["restarts"]:
        found.append(f"container {name} restarted {entry['restarts']} times")
    if entry["health"] == "unhealthy":
        found.append(f"container {name} is unhealthy")
    return found
