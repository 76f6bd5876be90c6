"""Host checks for the machine the flow runs on: disk, inodes, memory, load, CPU (runbook 000).

Measuring and grading are separate so the grading can be tested with any numbers:
`measure_mounts` -> `disk_results` / `inode_results`, `memory_result`, `load_result`.

- `host.disk[<mount>]`: % used as `df` computes it, used / (used + available), where
  "available" excludes the blocks reserved for root (f_bavail) - what a non-root service can
  still write. `df` rounds up to a whole percent; we keep two decimals.
- `host.inodes[<mount>]`: % of inodes used; filesystems reporting 0 inodes (btrfs, some
  network filesystems) allocate them dynamically: ok "no inode limit".
- `host.memory`: 100 * (1 - available / total), so page cache counts as free (as `free`'s
  "available" column). psutil reads /proc/meminfo: inside a container this is the host's
  memory, not the container's cgroup limit.
- `host.load`: 5-minute load average / logical CPUs. The load average is host-wide, so it is
  divided by the host's CPU count, not by a container's CPU quota.
- `host.cpu`: % of CPU time busy over a short sample (`cpu_sample`, 2 s by default): two reads
  of /proc/stat's "cpu" line, busy = total - idle - iowait over the delta (as top and mpstat
  count it; steal counts as busy: the CPU was not ours to use). Host-wide, like the load.

Mounts: `target.mounts` when set (each must be a mount point, else critical "no such mount":
a volume that failed to mount silently fills the root filesystem instead). When empty, every
real filesystem in the mount table, leaving out PSEUDO_FILESYSTEMS, overlay mounts other than
"/" (each container's merged view of the same backing disk), mount points that are not
directories (Docker's bind-mounted /etc/hosts, /etc/resolv.conf), and a second mount of the
same filesystem (bind mounts: the shortest mount point is kept).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from runbook.config import HostTarget
from runbook.health import CheckResult, Status, measured, timer

# Kernel/virtual filesystems with no disk behind them, and read-only images that are always
# 100 % full by design (squashfs snaps, iso9660/udf media). A configured mount is checked
# whatever its type.
PSEUDO_FILESYSTEMS = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fdescfs",
        "fuse.gvfsd-fuse",
        "fuse.lxcfs",
        "fuse.portal",
        "fusectl",
        "hugetlbfs",
        "iso9660",
        "mqueue",
        "nfsd",
        "nsfs",
        "proc",
        "pstore",
        "ramfs",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "squashfs",
        "sysfs",
        "tmpfs",
        "tracefs",
        "udf",
    }
)
UNION_FILESYSTEMS = frozenset({"overlay", "aufs"})  # checked only when mounted at "/"

_GIB = 1024**3


@dataclass(frozen=True)
class MountUsage:
    """statvfs numbers of one mount, or why there are none (`missing` / `error`)."""

    mount: str
    fstype: str = ""
    device: str = ""
    size_bytes: int = 0  # f_blocks: includes the blocks reserved for root
    used_bytes: int = 0  # f_blocks - f_bfree
    avail_bytes: int = 0  # f_bavail: what a non-root user can still write
    inodes: int = 0  # f_files; 0 = no fixed inode table
    inodes_free: int = 0  # f_ffree
    missing: bool = False  # a configured mount that is not a mount point
    error: str | None = None  # statvfs failed
    duration: float = 0.0

    @property
    def percent_used(self) -> float | None:
        """df's Use%: used / (used + available), unrounded; None for a filesystem with no
        blocks."""
        denominator = self.used_bytes + self.avail_bytes
        if denominator <= 0:
            return None
        return 100.0 * self.used_bytes / denominator

    @property
    def inodes_percent_used(self) -> float | None:
        if self.inodes <= 0:
            return None
        return 100.0 * (self.inodes - self.inodes_free) / self.inodes


# --- measuring -------------------------------------------------------------------------------


def statvfs_usage(mount: str, fstype: str = "", device: str = "") -> MountUsage:
    with timer() as elapsed:
        try:
            vfs = os.statvfs(mount)
        except OSError as exc:
            return MountUsage(
                mount=mount,
                fstype=fstype,
                device=device,
                error=f"statvfs failed: {exc.strerror or exc}",
                duration=elapsed(),
            )
        return MountUsage(
            mount=mount,
            fstype=fstype,
            device=device,
            size_bytes=vfs.f_blocks * vfs.f_frsize,
            used_bytes=(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize,
            avail_bytes=vfs.f_bavail * vfs.f_frsize,
            inodes=vfs.f_files,
            inodes_free=vfs.f_ffree,
            duration=elapsed(),
        )


def real_filesystems(partitions: Iterable[Any]) -> list[tuple[str, str, str]]:
    """(mount, fstype, device) of the psutil.disk_partitions() entries worth checking, one per
    filesystem."""
    chosen: dict[int | str, tuple[str, str, str]] = {}
    for part in partitions:
        mount, fstype = part.mountpoint, part.fstype
        if fstype in PSEUDO_FILESYSTEMS:
            continue
        if fstype in UNION_FILESYSTEMS and mount != "/":
            continue
        try:
            st = os.stat(mount)
        except OSError:
            key: int | str = mount  # statvfs will report the error
        else:
            if not os.path.isdir(mount):
                continue  # a bind-mounted file
            key = st.st_dev
        previous = chosen.get(key)
        if previous is None or len(mount) < len(previous[0]):
            chosen[key] = (mount, fstype, part.device)
    return sorted(chosen.values())


def measure_mounts(target: HostTarget) -> list[MountUsage]:
    partitions = psutil.disk_partitions(all=True)
    if not target.mounts:
        return [statvfs_usage(*fs) for fs in real_filesystems(partitions)]
    table = {os.path.normpath(p.mountpoint): p for p in partitions}
    usages = []
    for configured in target.mounts:
        mount = os.path.normpath(configured)
        part = table.get(mount)
        if part is not None:
            usages.append(statvfs_usage(mount, part.fstype, part.device))
        elif os.path.isdir(mount) and os.path.ismount(mount):
            usages.append(statvfs_usage(mount))  # e.g. a mount table psutil could not read
        elif os.path.exists(mount):
            usages.append(MountUsage(mount=mount, missing=True, error=_not_a_mount(mount)))
        else:
            usages.append(MountUsage(mount=mount, missing=True, error="the path does not exist"))
    return usages


def _not_a_mount(path: str) -> str:
    parent = path
    while not os.path.ismount(parent) and parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
    return f"not a mount point, it is on the filesystem mounted at {parent}"


@dataclass(frozen=True)
class CpuTimes:
    """The cumulative CPU time of /proc/stat's aggregate "cpu" line, in clock ticks."""

    total: int  # user + nice + system + idle + iowait + irq + softirq + steal
    idle: int  # idle + iowait: waiting on disk is not working
    iowait: int = 0
    steal: int = 0


def parse_proc_stat(text: str) -> CpuTimes:
    for line in text.splitlines():
        if line.startswith("cpu "):
            fields = [int(f) for f in line.split()[1:]]
            break
    else:
        raise ValueError('no aggregate "cpu" line in /proc/stat')
    if len(fields) < 4:
        raise ValueError(f'/proc/stat "cpu" line has {len(fields)} fields, expected at least 4')
    fields = (fields + [0] * 8)[:8]  # guest and guest_nice are already inside user and nice
    return CpuTimes(
        total=sum(fields), idle=fields[3] + fields[4], iowait=fields[4], steal=fields[7]
    )


def read_cpu_times(path: str = "/proc/stat") -> CpuTimes:
    with open(path, encoding="ascii") as stat:
        return parse_proc_stat(stat.read())


def sample_cpu(seconds: float, path: str = "/proc/stat") -> tuple[CpuTimes, CpuTimes]:
    """Two reads of /proc/stat `seconds` apart."""
    before = read_cpu_times(path)
    time.sleep(seconds)
    return before, read_cpu_times(path)


# --- grading ---------------------------------------------------------------------------------


def disk_results(usages: list[MountUsage], target: HostTarget) -> list[CheckResult]:
    results = []
    for usage in usages:
        check = f"host.disk[{usage.mount}]"
        if usage.missing:
            results.append(_unmeasured(check, target, Status.CRITICAL, "no such mount", usage))
            continue
        if usage.error:
            results.append(_unmeasured(check, target, Status.UNKNOWN, usage.error, usage))
            continue
        percent = usage.percent_used
        value = None if percent is None else round(percent, 2)
        if value is None:
            message = "the filesystem reports no blocks"
        else:
            message = (
                f"{value:g}% used, {usage.avail_bytes / _GIB:.1f} GiB available of "
                f"{usage.size_bytes / _GIB:.1f} GiB{_what(usage)}"
            )
        results.append(
            measured(
                check,
                target.name,
                value,
                target.disk,
                message,
                unit="%",
                duration=usage.duration,
            )
        )
    return results


def inode_results(usages: list[MountUsage], target: HostTarget) -> list[CheckResult]:
    """Mounts that are missing or failed statvfs are left out: their disk result says why."""
    results = []
    for usage in usages:
        if usage.missing or usage.error:
            continue
        check = f"host.inodes[{usage.mount}]"
        percent = usage.inodes_percent_used
        if percent is None:
            results.append(
                CheckResult(
                    check=check,
                    target=target.name,
                    status=Status.OK,
                    value=None,
                    message=f"no inode limit{_what(usage)}",
                    duration=round(usage.duration, 4),
                )
            )
            continue
        value = round(percent, 2)
        used = usage.inodes - usage.inodes_free
        message = f"{value:g}% of inodes used ({used:,} of {usage.inodes:,}){_what(usage)}"
        results.append(
            measured(
                check,
                target.name,
                value,
                target.inodes,
                message,
                unit="%",
                duration=usage.duration,
            )
        )
    return results


def memory_result(
    total: int, available: int, target: HostTarget, duration: float = 0.0
) -> CheckResult:
    if total <= 0:
        return measured(
            "host.memory", target.name, None, target.memory, "total memory reported as 0"
        )
    value = round(100.0 * (1 - available / total), 2)
    message = f"{value:g}% used, {available / _GIB:.1f} GiB available of {total / _GIB:.1f} GiB"
    return measured(
        "host.memory", target.name, value, target.memory, message, unit="%", duration=duration
    )


def load_result(load5: float, cores: int, target: HostTarget, duration: float = 0.0) -> CheckResult:
    if cores <= 0:
        return measured("host.load", target.name, None, target.load_per_core, "CPU count unknown")
    value = round(load5 / cores, 2)
    message = f"5-minute load {load5:.2f} on {cores} CPUs = {value:g} per CPU"
    return measured(
        "host.load", target.name, value, target.load_per_core, message, duration=duration
    )


def cpu_result(
    before: CpuTimes, after: CpuTimes, target: HostTarget, duration: float = 0.0
) -> CheckResult:
    """% busy between two /proc/stat reads, graded against `target.cpu`."""
    total = after.total - before.total
    if total <= 0:  # no tick passed (a sample shorter than 1/USER_HZ) or the counters reset
        return measured(
            "host.cpu", target.name, None, target.cpu, "no CPU time passed between the samples"
        )
    busy = total - (after.idle - before.idle)
    value = round(100.0 * busy / total, 2)
    iowait = 100.0 * (after.iowait - before.iowait) / total
    steal = 100.0 * (after.steal - before.steal) / total
    seconds = target.cpu_sample.total_seconds()
    message = (
        f"{value:g}% busy over a {seconds:g} s sample on {os.cpu_count() or '?'} CPUs "
        f"(iowait {iowait:.1f}%, steal {steal:.1f}%)"
    )
    return measured(
        "host.cpu", target.name, value, target.cpu, message, unit="%", duration=duration
    )


def _what(usage: MountUsage) -> str:
    parts = list(dict.fromkeys(p for p in (usage.fstype, usage.device) if p))
    return f" ({' on '.join(parts)})" if parts else ""


def _unmeasured(
    check: str, target: HostTarget, status: Status, message: str, usage: MountUsage
) -> CheckResult:
    detail = f"{message}: {usage.error}" if usage.missing and usage.error else message
    return CheckResult(
        check=check,
        target=target.name,
        status=status,
        message=f"{usage.mount}: {detail}",
        duration=round(usage.duration, 4),
    )


# --- the check -------------------------------------------------------------------------------


def check_host(target: HostTarget) -> list[CheckResult]:
    """Disk and inodes per mount, then memory, load and CPU of the machine this runs on."""
    usages = measure_mounts(target)
    results = [*disk_results(usages, target), *inode_results(usages, target)]

    with timer() as elapsed:
        try:
            memory = psutil.virtual_memory()
        except OSError as exc:
            results.append(_failed("host.memory", target, exc, elapsed()))
        else:
            results.append(memory_result(memory.total, memory.available, target, elapsed()))

    with timer() as elapsed:
        try:
            load5 = psutil.getloadavg()[1]
        except OSError as exc:
            results.append(_failed("host.load", target, exc, elapsed()))
        else:
            results.append(load_result(load5, os.cpu_count() or 0, target, elapsed()))

    if target.cpu_sample.total_seconds() > 0:
        with timer() as elapsed:
            try:
                before, after = sample_cpu(target.cpu_sample.total_seconds())
            except (OSError, ValueError) as exc:
                results.append(_failed("host.cpu", target, exc, elapsed()))
            else:
                results.append(cpu_result(before, after, target, elapsed()))
    return results


def _failed(
    check: str, target: HostTarget, exc: OSError | ValueError, duration: float
) -> CheckResult:
    reason = getattr(exc, "strerror", None) or exc
    return CheckResult(
        check=check,
        target=target.name,
        status=Status.UNKNOWN,
        message=f"cannot measure: {reason}",
        duration=round(duration, 4),
    )
