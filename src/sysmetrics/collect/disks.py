"""Usage of each real mounted filesystem, and cumulative disk I/O counters."""

from __future__ import annotations

from functools import partial
from typing import Any

import psutil

from sysmetrics.collect._safe import clamp_pct, guarded
from sysmetrics.schema import DiskIo, DiskUsage, count_or_none

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
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nullfs",
        "nsfs",
        "overlay",
        "proc",
        "procfs",
        "pstore",
        "ramfs",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "squashfs",
        "sysfs",
        "tmpfs",
        "tracefs",
    }
)


def read_disks() -> list[DiskUsage]:
    partitions: list[Any] = guarded(
        "disks.partitions", lambda: psutil.disk_partitions(all=False), []
    )
    seen: set[str] = set()
    disks: list[DiskUsage] = []
    for part in partitions:
        if part.fstype in PSEUDO_FILESYSTEMS or part.mountpoint in seen:
            continue
        seen.add(part.mountpoint)
        usage = guarded(
            f"disk {part.mountpoint}", partial(psutil.disk_usage, part.mountpoint), None
        )
        if usage is None:
            continue
        disks.append(
            DiskUsage(
                mountpoint=part.mountpoint[:256],
                device=part.device[:256] or None,
                fstype=part.fstype[:256] or None,
                total_bytes=count_or_none(usage.total),  # a FUSE mount may claim exabytes
                used_bytes=count_or_none(usage.used),
                free_bytes=count_or_none(usage.free),
                used_pct=clamp_pct(usage.percent),
            )
        )
    return disks


def read_disk_io() -> DiskIo | None:
    counters = guarded("disk_io", lambda: psutil.disk_io_counters(perdisk=False), None)
    if counters is None:
        return None
    return DiskIo(
        read_bytes=count_or_none(counters.read_bytes),
        write_bytes=count_or_none(counters.write_bytes),
        read_count=count_or_none(counters.read_count),
        write_count=count_or_none(counters.write_count),
    )
