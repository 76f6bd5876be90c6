"""Host checks: grading with synthetic numbers, and the real machine."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest

from runbook.config import HostTarget, Threshold
from runbook.health import Status
from tasks.health.host import (
    PSEUDO_FILESYSTEMS,
    CpuTimes,
    MountUsage,
    check_host,
    cpu_result,
    disk_results,
    inode_results,
    load_result,
    measure_mounts,
    memory_result,
    parse_proc_stat,
    real_filesystems,
    sample_cpu,
)

GIB = 1024**3
TARGET = HostTarget(name="web-1")


def usage_at(percent: float, mount: str = "/data") -> MountUsage:
    """A mount whose used / (used + available) is `percent`, with 5 % reserved for root."""
    used = int(percent * GIB)
    avail = int((100 - percent) * GIB)
    return MountUsage(
        mount=mount,
        fstype="ext4",
        device="/dev/sdb1",
        size_bytes=int((used + avail) / 0.95),
        used_bytes=used,
        avail_bytes=avail,
        inodes=1000,
        inodes_free=1000 - int(percent * 10),
    )


@pytest.mark.parametrize(
    ("percent", "status"),
    [
        (10, Status.OK),
        (85, Status.OK),  # the runbook's "disk > 85 %": 85 itself is not an alert
        (85.5, Status.WARN),
        (90, Status.WARN),  # runbook 004's DiskSpaceLow: critical under 10 % free
        (90.5, Status.CRITICAL),
        (95, Status.CRITICAL),
        (100, Status.CRITICAL),
    ],
)
def test_disk_is_graded_on_df_percentage(percent, status):
    (result,) = disk_results([usage_at(percent)], TARGET)
    assert result.check == "host.disk[/data]"
    assert result.target == "web-1"
    assert result.value == pytest.approx(percent, abs=0.01)
    assert result.status == status
    assert result.threshold == "warn > 85%, critical > 90%"


def test_disk_percentage_leaves_out_the_root_reserve_like_df():
    # 50 GiB used, 40 GiB available to users, 10 GiB reserved for root: df says 56 %, not 50 %.
    usage = MountUsage(mount="/", size_bytes=100 * GIB, used_bytes=50 * GIB, avail_bytes=40 * GIB)
    (result,) = disk_results([usage], TARGET)
    assert result.value == pytest.approx(55.56, abs=0.01)
    assert "40.0 GiB available of 100.0 GiB" in result.message


def test_disk_thresholds_come_from_the_target():
    target = HostTarget(name="db", disk=Threshold(warn=70, critical=80))
    statuses = [r.status for r in disk_results([usage_at(60), usage_at(75), usage_at(81)], target)]
    assert statuses == [Status.OK, Status.WARN, Status.CRITICAL]


def test_missing_mount_is_critical_and_a_statvfs_error_unknown():
    usages = [
        MountUsage(mount="/data", missing=True, error="the path does not exist"),
        MountUsage(mount="/nfs", error="statvfs failed: Stale file handle"),
    ]
    missing, failed = disk_results(usages, TARGET)
    assert missing.status == Status.CRITICAL
    assert "no such mount" in missing.message
    assert failed.status == Status.UNKNOWN
    assert "Stale file handle" in failed.message
    assert inode_results(usages, TARGET) == []  # the disk result already says why


def test_inodes_are_graded_and_a_filesystem_without_inode_table_is_ok():
    full = MountUsage(
        mount="/var", size_bytes=GIB, used_bytes=1, avail_bytes=GIB, inodes=1000, inodes_free=30
    )
    btrfs = MountUsage(
        mount="/srv",
        fstype="btrfs",
        size_bytes=GIB,
        used_bytes=1,
        avail_bytes=GIB,
        inodes=0,
        inodes_free=0,
    )
    edge = MountUsage(
        mount="/x", size_bytes=GIB, used_bytes=1, avail_bytes=GIB, inodes=100, inodes_free=15
    )
    results = {r.check: r for r in inode_results([full, btrfs, edge], TARGET)}
    assert results["host.inodes[/var]"].value == pytest.approx(97.0)
    assert results["host.inodes[/var]"].status == Status.CRITICAL
    assert results["host.inodes[/srv]"].status == Status.OK
    assert results["host.inodes[/srv]"].message.startswith("no inode limit")
    assert results["host.inodes[/x]"].value == pytest.approx(85.0)
    assert results["host.inodes[/x]"].status == Status.OK


@pytest.mark.parametrize(
    ("total", "available", "value", "status"),
    [
        (16 * GIB, 8 * GIB, 50.0, Status.OK),
        (100, 10, 90.0, Status.OK),  # memory > 90 % alerts: 90 itself does not
        (100, 7, 93.0, Status.WARN),
        (100, 2, 98.0, Status.CRITICAL),
    ],
)
def test_memory_is_graded_on_available(total, available, value, status):
    result = memory_result(total, available, TARGET)
    assert result.check == "host.memory"
    assert result.value == pytest.approx(value)
    assert result.status == status


def test_memory_with_zero_total_is_unknown():
    assert memory_result(0, 0, TARGET).status == Status.UNKNOWN


@pytest.mark.parametrize(
    ("load5", "cores", "value", "status"),
    [
        (1.0, 4, 0.25, Status.OK),
        (6.0, 4, 1.5, Status.OK),
        (8.0, 4, 2.0, Status.WARN),
        (14.0, 4, 3.5, Status.CRITICAL),
    ],
)
def test_load_is_per_core(load5, cores, value, status):
    result = load_result(load5, cores, TARGET)
    assert result.check == "host.load"
    assert result.value == pytest.approx(value)
    assert result.status == status
    assert f"{cores} CPUs" in result.message


def test_pseudo_filesystems_are_skipped_and_bind_mounts_counted_once(tmp_path):
    from collections import namedtuple

    Part = namedtuple("Part", "device mountpoint fstype opts")
    a_file = tmp_path / "hosts"
    a_file.write_text("127.0.0.1 localhost\n")
    deeper = tmp_path / "bind"
    deeper.mkdir()
    partitions = [
        Part("proc", "/proc", "proc", "rw"),
        Part("tmpfs", "/dev/shm", "tmpfs", "rw"),
        Part("overlay", str(tmp_path), "overlay", "rw"),  # a container's view, not at /
        Part("/dev/vdb", str(deeper), "ext4", "rw"),  # same filesystem as tmp_path ...
        Part("/dev/vdb", str(tmp_path), "ext4", "rw"),  # ... kept under the shorter name
        Part("/dev/vdb", str(a_file), "ext4", "rw"),  # a bind-mounted file
        Part("/dev/vdc", str(tmp_path / "gone"), "xfs", "rw"),  # stat fails: statvfs says why
    ]
    chosen = real_filesystems(partitions)
    assert chosen == sorted(
        [
            (str(tmp_path), "ext4", "/dev/vdb"),
            (str(tmp_path / "gone"), "xfs", "/dev/vdc"),
        ]
    )
    assert {"proc", "sysfs", "tmpfs", "devtmpfs", "squashfs"} <= PSEUDO_FILESYSTEMS


# --- the real machine ------------------------------------------------------------------------


def test_check_host_on_this_machine():
    results = check_host(HostTarget(name="here"))
    checks = {r.check: r for r in results}
    assert "host.disk[/]" in checks, sorted(checks)
    assert "host.inodes[/]" in checks
    assert {"host.memory", "host.load"} <= set(checks)
    assert all(r.target == "here" for r in results)
    for check, result in checks.items():
        if check.startswith("host.disk[") or check == "host.memory":
            assert isinstance(result.value, float) and 0 <= result.value <= 100, result
        assert result.status in (Status.OK, Status.WARN, Status.CRITICAL), result
    assert not any(c.startswith(("host.disk[/proc", "host.disk[/sys")) for c in checks)
    expected = round(os.getloadavg()[1] / os.cpu_count(), 2)
    assert checks["host.load"].value == pytest.approx(expected, abs=0.5)


def test_root_percentage_agrees_with_df():
    (usage,) = measure_mounts(HostTarget(mounts=["/"]))
    out = subprocess.run(
        ["df", "-P", "/"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    df_percent = int(out.splitlines()[1].split()[4].rstrip("%"))
    # df rounds up to a whole percent; allow for writes between the two calls
    assert math.ceil(usage.percent_used) == pytest.approx(df_percent, abs=1)


def test_configured_mounts_that_are_not_mount_points_are_critical(tmp_path):
    results = check_host(HostTarget(mounts=["/", str(tmp_path / "nope"), str(tmp_path)]))
    disk = {r.check: r for r in results if r.check.startswith("host.disk")}
    assert disk["host.disk[/]"].status in (Status.OK, Status.WARN, Status.CRITICAL)
    assert isinstance(disk["host.disk[/]"].value, float)
    nope = disk[f"host.disk[{tmp_path / 'nope'}]"]
    assert nope.status == Status.CRITICAL
    assert "no such mount" in nope.message and "does not exist" in nope.message
    plain_dir = disk[f"host.disk[{tmp_path}]"]
    assert plain_dir.status == Status.CRITICAL
    assert "not a mount point" in plain_dir.message
    assert not any(r.check == f"host.inodes[{tmp_path}]" for r in results)


# --- CPU utilisation over a sample -----------------------------------------------------------


def cpu_times(busy: int, idle: int, iowait: int = 0, steal: int = 0) -> CpuTimes:
    return CpuTimes(total=busy + idle + iowait, idle=idle + iowait, iowait=iowait, steal=steal)


@pytest.mark.parametrize(
    ("busy", "status"),
    [
        (10, Status.OK),
        (70, Status.OK),  # runbook 004: under 70 % is normal; 70 itself is not an alert
        (71, Status.WARN),
        (85, Status.WARN),
        (86, Status.CRITICAL),  # runbook 000: cpu_usage > 85 %
        (100, Status.CRITICAL),
    ],
)
def test_cpu_is_graded_on_the_busy_share_of_the_sample(busy, status):
    before = cpu_times(busy=5_000, idle=20_000)
    after = cpu_times(busy=5_000 + busy, idle=20_000 + 100 - busy)
    result = cpu_result(before, after, TARGET)
    assert (result.check, result.target, result.unit) == ("host.cpu", "web-1", "%")
    assert result.value == pytest.approx(busy)
    assert result.status == status
    assert result.threshold == "warn > 70%, critical > 85%"


def test_cpu_counts_iowait_as_idle_and_steal_as_busy():
    before = cpu_times(busy=0, idle=0)
    # 200 ticks: 50 user, 20 stolen by the hypervisor, 30 waiting on disk, 100 idle
    after = CpuTimes(total=200, idle=130, iowait=30, steal=20)
    result = cpu_result(before, after, HostTarget(name="h", cpu_sample="5s"))
    assert result.value == 35.0
    assert "35% busy over a 5 s sample" in result.message
    assert "iowait 15.0%" in result.message and "steal 10.0%" in result.message


def test_cpu_with_no_ticks_between_samples_is_unknown():
    same = cpu_times(busy=10, idle=10)
    result = cpu_result(same, same, TARGET)
    assert (result.status, result.value) == (Status.UNKNOWN, None)
    assert "no CPU time passed" in result.message


def test_proc_stat_is_parsed_from_the_aggregate_line():
    text = (
        "cpu  100 5 50 800 20 1 2 7 30 0\n"
        "cpu0 50 2 25 400 10 0 1 3 15 0\n"
        "intr 12345\n"
    )
    times = parse_proc_stat(text)
    # guest (30) is already inside user: the first 8 fields make the total
    assert times == CpuTimes(total=985, idle=820, iowait=20, steal=7)
    with pytest.raises(ValueError, match='no aggregate "cpu" line'):
        parse_proc_stat("cpu0 1 2 3 4\n")


def test_cpu_sample_must_be_short():
    with pytest.raises(ValueError, match="cpu_sample"):
        HostTarget(cpu_sample="5m")
    assert HostTarget(cpu_sample="0s").cpu_sample.total_seconds() == 0


def test_cpu_of_this_machine_rises_when_every_core_spins():
    cores = os.cpu_count() or 1
    spin = "import time\nend = time.time() + 3\nwhile time.time() < end: pass\n"
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(cores)]
    try:
        time.sleep(0.3)
        before, after = sample_cpu(1.0)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    result = cpu_result(before, after, HostTarget(name="here", cpu_sample="1s"))
    # every core was spinning: the sample cannot look idle (other users only add to it)
    assert result.value is not None and result.value > 60, result
    assert result.status in (Status.WARN, Status.CRITICAL)


def test_check_host_samples_cpu_for_the_configured_time():
    started = time.monotonic()
    results = check_host(HostTarget(name="here", mounts=["/"], cpu_sample="0.5s"))
    took = time.monotonic() - started
    cpu = {r.check: r for r in results}["host.cpu"]
    assert isinstance(cpu.value, float) and 0 <= cpu.value <= 100, cpu
    assert took >= 0.5 and cpu.duration >= 0.5
    without = check_host(HostTarget(name="here", mounts=["/"], cpu_sample="0s"))
    assert "host.cpu" not in {r.check for r in without}
