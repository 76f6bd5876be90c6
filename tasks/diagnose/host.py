"""The host section: memory and swap (`free -h`), real filesystems (`df -h`), load, and the top
processes by memory and by CPU over a short sample (`ps aux --sort=-%mem | head`)."""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from runbook.config import DiagnosticsSettings, HostTarget
from tasks.diagnose.sections import Collected

CPU_SAMPLE = 0.5  # seconds between the two CPU readings of every process
COMMAND_CHARS = 300


def _process(info: dict[str, Any]) -> dict[str, Any]:
    memory = info.get("memory_info")
    return {
        "pid": info["pid"],
        "name": info.get("name"),
        "user": info.get("username"),
        "rss_bytes": memory.rss if memory else None,
        "memory_percent": round(info.get("memory_percent") or 0.0, 2),
        "cpu_percent": round(info.get("cpu_percent") or 0.0, 1),
        "command": " ".join(info.get("cmdline") or [])[:COMMAND_CHARS],
    }


def top_processes(count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    procs = list(psutil.process_iter())
    for proc in procs:
        try:
            proc.cpu_percent(None)  # the first reading only starts the interval
        except psutil.Error:
            pass
    time.sleep(CPU_SAMPLE)
    seen = []
    fields = ["pid", "name", "username", "memory_info", "memory_percent", "cmdline"]
    for proc in procs:
        try:
            with proc.oneshot():
                info = proc.as_dict(attrs=fields)
                info["cpu_percent"] = proc.cpu_percent(None)
        except psutil.Error:
            continue
        seen.append(_process(info))
    by_memory = sorted(seen, key=lambda p: -(p["rss_bytes"] or 0))[:count]
    by_cpu = sorted(seen, key=lambda p: -p["cpu_percent"])[:count]
    return by_memory, by_cpu


def collect_host(target: HostTarget, settings: DiagnosticsSettings) -> Collected:
    memory, swap = psutil.virtual_memory(), psutil.swap_memory()
    disks = []
    for part in psutil.disk_partitions(all=False):
        if target.mounts and part.mountpoint not in target.mounts:
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        disks.append(
            {
                "mount": part.mountpoint,
                "device": part.device,
                "fstype": part.fstype,
                "total_bytes": usage.total,
                "used_percent": usage.percent,
            }
        )
    by_memory, by_cpu = top_processes(settings.processes)
    data = {
        "memory": {
            "total_bytes": memory.total,
            "available_bytes": memory.available,
            "used_percent": memory.percent,
            "swap_used_percent": swap.percent,
        },
        "load": list(os.getloadavg()),
        "cpus": psutil.cpu_count(),
        "disks": disks,
        "top_by_memory": by_memory,
        "top_by_cpu": by_cpu,
    }
    findings = [
        f"disk {d['mount']} is {d['used_percent']:.0f}% full"
        for d in disks
        if target.disk.warn is not None and d["used_percent"] >= target.disk.warn
    ]
    if target.memory.warn is not None and memory.percent >= target.memory.warn:
        findings.append(f"memory {memory.percent:.0f}% used")
    if by_memory:
        top = by_memory[0]
        findings.append(
            f"most memory: pid {top['pid']} {top['name']} ({top['memory_percent']:.1f}%)"
        )
    summary = (
        f"memory {memory.percent:.0f}% used, load {data['load'][0]:.2f} on {data['cpus']} cpus, "
        f"{len(disks)} filesystems"
    )
    return Collected(data=data, summary=summary, findings=findings)
