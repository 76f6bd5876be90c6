"""This machine's capacity figures (psutil and statvfs): bytes and inodes used per mount
against the mount's size, memory used against total."""

from __future__ import annotations

import os
from datetime import datetime

import psutil

from runbook.catalog import Sample
from runbook.config import HostTarget
from tasks.capacity.samples import sample

# Pseudo and read-only image filesystems say nothing about capacity.
_SKIPPED_FSTYPES = {"squashfs", "tmpfs", "devtmpfs", "overlay", "proc", "sysfs", "iso9660"}


def mounts_of(target: HostTarget) -> list[str]:
    """The configured mounts, or every real filesystem (one mount per device)."""
    if target.mounts:
        return list(target.mounts)
    seen: set[str] = set()
    found = []
    for part in psutil.disk_partitions(all=False):
        if part.fstype in _SKIPPED_FSTYPES or part.device in seen:
            continue
        seen.add(part.device)
        found.append(part.mountpoint)
    return found


def mount_name(mount: str) -> str:
    """'/' -> 'root', '/var/lib/pg' -> 'var-lib-pg' (a resource name without slashes)."""
    return mount.strip("/").replace("/", "-") or "root"


def collect_host(target: HostTarget, at: datetime) -> list[Sample]:
    found = []
    for mount in mounts_of(target):
        stats = os.statvfs(mount)
        total = stats.f_blocks * stats.f_frsize
        used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        where = mount_name(mount)
        found.append(
            sample(
                target.name, f"disk/{where}", "host.disk", used, at=at, limit=total, unit="bytes"
            )
        )
        if stats.f_files:
            found.append(
                sample(
                    target.name,
                    f"inodes/{where}",
                    "host.inodes",
                    stats.f_files - stats.f_ffree,
                    at=at,
                    limit=stats.f_files,
                    unit="inodes",
                )
            )
    memory = psutil.virtual_memory()
    found.append(
        sample(
            target.name,
            "memory",
            "host.memory",
            memory.total - memory.available,
            at=at,
            limit=memory.total,
            unit="bytes",
        )
    )
    return found
