"""Which series of which agent fill which field of the event: the one definition (the README's
tables are this file in prose).

A series is kept as a *fact*: its metric name, the values of the labels named for it below (in
that order) and its value. Every other series is dropped as soon as its name is read. The facts
of one host at one sample time become one :class:`MetricsEvent` in :func:`build_event`.

Counters keep their meaning: byte and packet counters pass through as counters (the warehouse
turns them into rates); CPU time counters become a utilization percentage between two samples
of the same host, so a host's first sample has ``cpu.utilization_pct`` null.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

from sysmetrics.collect.disks import PSEUDO_FILESYSTEMS
from sysmetrics.schema import (
    Battery,
    Cpu,
    DiskIo,
    DiskUsage,
    Host,
    Memory,
    MetricsEvent,
    NetInterface,
    Network,
    Swap,
    Temperature,
    count_or_none,
    is_loopback,
    new_event_id,
)

Source = Literal["node_exporter", "windows_exporter", "otel"]
TARGET: Final = "target"
"""Not a source of events: Prometheus' own series of a scrape target (``up``, one per target,
labels kept: job and instance). Its stale marker says that Prometheus stopped scraping the
target on purpose (service discovery or the configuration dropped it): the assembler retires
the host instead of letting it fall silent."""
FactKey = tuple[str, tuple[str, ...]]
"""A series of a sample: its name and the values of the labels the mapping keeps."""
Facts = dict[FactKey, float]
"""One host's readings at one sample time: each series' value (what the decoders make and the
assembler keeps, so a request's facts reach the event without being copied per fact)."""

_NET_LABEL: Final = ("device",)
REMOTE_WRITE_SERIES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "up": (TARGET, ("job", "instance")),
    # node_exporter, Linux and macOS
    "node_uname_info": ("node_exporter", ("nodename", "sysname", "machine")),
    "node_boot_time_seconds": ("node_exporter", ()),
    "node_cpu_seconds_total": ("node_exporter", ("cpu", "mode")),
    "node_cpu_scaling_frequency_hertz": ("node_exporter", ("cpu",)),
    "node_load1": ("node_exporter", ()),
    "node_load5": ("node_exporter", ()),
    "node_load15": ("node_exporter", ()),
    "node_memory_MemTotal_bytes": ("node_exporter", ()),
    "node_memory_MemAvailable_bytes": ("node_exporter", ()),
    "node_memory_SwapTotal_bytes": ("node_exporter", ()),
    "node_memory_SwapFree_bytes": ("node_exporter", ()),
    "node_memory_total_bytes": ("node_exporter", ()),  # macOS from here
    "node_memory_free_bytes": ("node_exporter", ()),
    "node_memory_inactive_bytes": ("node_exporter", ()),
    "node_memory_active_bytes": ("node_exporter", ()),
    "node_memory_wired_bytes": ("node_exporter", ()),
    "node_memory_swap_total_bytes": ("node_exporter", ()),
    "node_memory_swap_used_bytes": ("node_exporter", ()),
    "node_filesystem_size_bytes": ("node_exporter", ("mountpoint", "device", "fstype")),
    "node_filesystem_free_bytes": ("node_exporter", ("mountpoint", "device", "fstype")),
    "node_filesystem_avail_bytes": ("node_exporter", ("mountpoint", "device", "fstype")),
    "node_disk_read_bytes_total": ("node_exporter", ("device",)),
    "node_disk_written_bytes_total": ("node_exporter", ("device",)),
    "node_disk_reads_completed_total": ("node_exporter", ("device",)),
    "node_disk_writes_completed_total": ("node_exporter", ("device",)),
    "node_network_receive_bytes_total": ("node_exporter", _NET_LABEL),
    "node_network_transmit_bytes_total": ("node_exporter", _NET_LABEL),
    "node_network_receive_packets_total": ("node_exporter", _NET_LABEL),
    "node_network_transmit_packets_total": ("node_exporter", _NET_LABEL),
    "node_network_receive_errs_total": ("node_exporter", _NET_LABEL),
    "node_network_transmit_errs_total": ("node_exporter", _NET_LABEL),
    "node_network_receive_drop_total": ("node_exporter", _NET_LABEL),
    "node_network_transmit_drop_total": ("node_exporter", _NET_LABEL),
    "node_hwmon_temp_celsius": ("node_exporter", ("chip", "sensor")),
    "node_thermal_zone_temp": ("node_exporter", ("type", "zone")),
    "node_power_supply_capacity": ("node_exporter", ("power_supply",)),
    "node_power_supply_online": ("node_exporter", ("power_supply",)),
    # windows_exporter: the names of 0.31 (2025-07: `cs` removed, the boot time renamed again)
    # beside those of 0.30 (`pagefile` split from `os`) and before
    "windows_os_hostname": ("windows_exporter", ("hostname",)),
    "windows_cs_hostname": ("windows_exporter", ("hostname",)),
    "windows_system_boot_time_timestamp": ("windows_exporter", ()),
    "windows_system_boot_time_timestamp_seconds": ("windows_exporter", ()),
    "windows_system_system_up_time": ("windows_exporter", ()),
    "windows_cpu_time_total": ("windows_exporter", ("core", "mode")),
    "windows_cpu_core_frequency_mhz": ("windows_exporter", ("core",)),
    "windows_cpu_logical_processor": ("windows_exporter", ()),
    "windows_cs_logical_processors": ("windows_exporter", ()),
    "windows_cs_physical_memory_bytes": ("windows_exporter", ()),
    "windows_memory_physical_total_bytes": ("windows_exporter", ()),
    "windows_os_physical_memory_free_bytes": ("windows_exporter", ()),
    "windows_memory_available_bytes": ("windows_exporter", ()),
    "windows_pagefile_limit_bytes": ("windows_exporter", ("file",)),
    "windows_pagefile_free_bytes": ("windows_exporter", ("file",)),
    "windows_os_paging_limit_bytes": ("windows_exporter", ()),
    "windows_os_paging_free_bytes": ("windows_exporter", ()),
    "windows_logical_disk_info": ("windows_exporter", ("volume", "filesystem")),
    "windows_logical_disk_size_bytes": ("windows_exporter", ("volume",)),
    "windows_logical_disk_free_bytes": ("windows_exporter", ("volume",)),
    "windows_logical_disk_read_bytes_total": ("windows_exporter", ("volume",)),
    "windows_logical_disk_write_bytes_total": ("windows_exporter", ("volume",)),
    "windows_logical_disk_reads_total": ("windows_exporter", ("volume",)),
    "windows_logical_disk_writes_total": ("windows_exporter", ("volume",)),
    "windows_net_bytes_received_total": ("windows_exporter", ("nic",)),
    "windows_net_bytes_sent_total": ("windows_exporter", ("nic",)),
    "windows_net_packets_received_total": ("windows_exporter", ("nic",)),
    "windows_net_packets_sent_total": ("windows_exporter", ("nic",)),
    "windows_net_packets_received_errors": ("windows_exporter", ("nic",)),
    "windows_net_packets_received_errors_total": ("windows_exporter", ("nic",)),
    "windows_net_packets_outbound_errors": ("windows_exporter", ("nic",)),
    "windows_net_packets_outbound_errors_total": ("windows_exporter", ("nic",)),
    "windows_net_packets_received_discarded": ("windows_exporter", ("nic",)),
    "windows_net_packets_received_discarded_total": ("windows_exporter", ("nic",)),
    "windows_net_packets_outbound_discarded": ("windows_exporter", ("nic",)),
    "windows_net_packets_outbound_discarded_total": ("windows_exporter", ("nic",)),
    "windows_thermalzone_temperature_celsius": ("windows_exporter", ("name",)),
}
"""Remote-write metric name → (source, labels kept). ``write_relabel_configs`` in the README
keep exactly these names, so a sender ships only what is mapped."""
PROMETHEUS_RESOURCE_LABELS: Final = {"job": "service.name", "instance": "service.instance.id"}
"""The labels of a scraped series that the OTel Collector's ``prometheus`` receiver turns into
resource attributes (its other labels stay on each data point, and its ``prometheusremotewrite``
exporter turns these back): a Collector scraping an exporter sends the series above over OTLP
with these two labels read from the resource."""
STALE_MARKER: Final = bytes.fromhex("020000000000f07f")
"""Prometheus' stale marker: the NaN (0x7ff0000000000002) it writes on a target's series when
it stops scraping the target, as a little-endian double."""

OTEL_METRICS: Final[dict[str, tuple[str, ...]]] = {
    "system.cpu.time": ("cpu", "state"),
    "system.cpu.frequency": ("cpu",),
    "system.cpu.logical.count": (),
    "system.cpu.load_average.1m": (),
    "system.cpu.load_average.5m": (),
    "system.cpu.load_average.15m": (),
    "system.memory.limit": (),
    "system.memory.usage": ("state",),
    "system.linux.memory.available": (),
    "system.paging.usage": ("device", "state"),
    "system.filesystem.usage": ("mountpoint", "device", "type", "state"),
    "system.disk.io": ("device", "direction"),
    "system.disk.operations": ("device", "direction"),
    "system.network.io": ("device", "direction"),
    "system.network.packets": ("device", "direction"),
    "system.network.errors": ("device", "direction"),
    "system.network.dropped": ("device", "direction"),
}
"""OTel ``hostmetrics`` receiver metric → data-point attributes kept."""

OTEL_RESOURCE: Final = "resource"
OTEL_RESOURCE_ATTRIBUTES: Final = ("host.name", "os.type", "host.arch")
"""Kept from the OTLP resource as the fact ``resource`` (host name, OS, architecture)."""

OTEL_STARTED_METRIC: Final = "system.cpu.time"
OTEL_STARTED: Final = "started"
"""The start time of ``system.cpu.time``'s points (Unix seconds), kept as the fact
``started``: the event's boot time. It is when a cumulative sum began counting (OTLP), and the
``hostmetrics`` scrapers set it to the machine's boot time (gopsutil's, read when the Collector
starts), so a later one is a reboot and the hourly job counts the counters from zero."""


_IDLE_MODES: Final = frozenset({"idle", "iowait", "wait"})
_WINDOWS_CPU_MODES: Final = frozenset({"idle", "user", "privileged"})
"""windows_exporter's ``privileged`` time already holds its ``interrupt`` and ``dpc`` time."""
_SKIPPED_DEVICES: Final = frozenset({"_Total", "_total"})


def event_id_for(source: str, host_id: str, ts_ms: int, at: datetime) -> str:
    """The same sample of the same host from the same source always gets the same id: a
    resent request makes the same event, which the lake's dedup by event_id absorbs. ``at``
    is ``ts_ms`` as a datetime (the event's own ``ts``)."""
    digest = hashlib.blake2b(f"{source}\0{host_id}\0{ts_ms}".encode(), digest_size=10).digest()
    return new_event_id(at, int.from_bytes(digest, "big"))


@dataclass
class HostState:
    """What one host's next event needs from its previous one (kept across restarts)."""

    cpu_ts: int | None = None
    cpu_busy: dict[str, float] = field(default_factory=dict)
    cpu_total: dict[str, float] = field(default_factory=dict)
    last_ts: int | None = None
    interval_s: float | None = None
    shorter_s: float | None = None
    """A gap well under the interval, not yet confirmed by the next (:meth:`learn_interval`)."""
    last_facts: int = 0
    net_series: int = 0
    disk_io_series: int = 0
    """The network and disk I/O counters the previous sample had. A sample with fewer has no
    such totals (unknown, as our collector's are when one interface's counter is): summed
    without a shard's series still on their way when the wait ran out, or an interface gone,
    a total stepped down and the next sample added the whole counter of it to one step (before
    2026-12-06; the interfaces that came are still listed)."""

    def to_json(self) -> dict[str, object]:
        return {
            "cpu_ts": self.cpu_ts,
            "cpu_busy": self.cpu_busy,
            "cpu_total": self.cpu_total,
            "last_ts": self.last_ts,
            "interval_s": self.interval_s,
            "shorter_s": self.shorter_s,
            "last_facts": self.last_facts,
            "net_series": self.net_series,
            "disk_io_series": self.disk_io_series,
        }

    def learn_interval(self, gap_s: float) -> None:
        """The host's sampling interval, from the gap since its previous sample. A missed
        sample doubles a gap, not the interval: the smaller of the gap and 1.5 intervals is
        kept. A gap under half the interval shortens it only when the next gap confirms it:
        one alone is a target scraped at a new moment (its address changed, its pod moved:
        Prometheus scrapes a new target at another offset in the interval), and an interval
        learnt from it paged the host down between its next samples (HostDown's 3 intervals,
        never under 5 s) until it grew back, 1.5 times a sample."""
        if self.interval_s is None:
            self.interval_s = gap_s
        elif gap_s >= self.interval_s / 2:
            self.interval_s, self.shorter_s = min(gap_s, self.interval_s * 1.5), None
        elif self.shorter_s is None:
            self.shorter_s = gap_s
        else:  # two in a row: the host is sampled more often now
            self.interval_s, self.shorter_s = max(gap_s, self.shorter_s), None

    @classmethod
    def from_json(cls, data: dict[str, object]) -> HostState:
        return msgspec.convert(data, cls)


def _pct(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole or whole <= 0:
        return None
    return min(100.0, max(0.0, 100.0 * part / whole))


def _label(text: str) -> str:
    return text[:256]


class _Facts:
    """A sample's facts by name, with the lookups the builders need; every value is a reading
    (finite: the assembler drops stale markers on receipt)."""

    def __init__(self, facts: Facts) -> None:
        by_name: dict[str, list[tuple[tuple[str, ...], float]]] = defaultdict(list)
        for (name, labels), value in facts.items():
            by_name[name].append((labels, value))
        self.by_name = by_name

    def one(self, *names: str) -> float | None:
        for name in names:
            rows = self.by_name.get(name)
            if rows:
                return rows[0][1]
        return None

    def rows(self, *names: str) -> list[tuple[tuple[str, ...], float]]:
        for name in names:
            if name in self.by_name:
                return self.by_name[name]
        return []

    def by_first_label(self, *names: str) -> dict[str, float]:
        return {labels[0]: value for labels, value in self.rows(*names)}


def _cpu_times(facts: _Facts, source: Source) -> dict[str, tuple[float, float]]:
    """core → (busy seconds, total seconds) from the CPU time counters."""
    busy: dict[str, float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)
    if source == "node_exporter":
        rows = facts.rows("node_cpu_seconds_total")
    elif source == "windows_exporter":
        rows = [r for r in facts.rows("windows_cpu_time_total") if r[0][1] in _WINDOWS_CPU_MODES]
    else:
        rows = facts.rows("system.cpu.time")
    for (core, mode), value in rows:
        total[core] += value
        if mode not in _IDLE_MODES:
            busy[core] += value
    return {core: (busy[core], total[core]) for core in total}


def _core_order(core: str) -> tuple[int, ...]:
    digits = "".join(c if c.isdigit() else " " for c in core).split()
    return tuple(int(d) for d in digits) or (0,)


def _cpu(facts: _Facts, source: Source, ts_ms: int, state: HostState) -> Cpu:
    times = _cpu_times(facts, source)
    utilization: float | None = None
    per_core: list[float] | None = None
    if times and state.cpu_ts is not None and state.cpu_ts < ts_ms:
        deltas = {
            core: (busy - state.cpu_busy.get(core, math.nan), t - state.cpu_total.get(core, 0))
            for core, (busy, t) in times.items()
        }
        valid = {c: d for c, d in deltas.items() if d[1] > 0 and 0 <= d[0] <= d[1] * 1.001}
        if len(valid) == len(deltas):  # a counter reset (reboot) leaves the sample null
            busy_sum = sum(d[0] for d in valid.values())
            total_sum = sum(d[1] for d in valid.values())
            utilization = _pct(busy_sum, total_sum)
            per_core = [
                min(100.0, 100.0 * valid[c][0] / valid[c][1])
                for c in sorted(valid, key=_core_order)
            ]
    if times and (state.cpu_ts is None or state.cpu_ts < ts_ms):
        state.cpu_ts = ts_ms
        state.cpu_busy = {c: b for c, (b, _) in times.items()}
        state.cpu_total = {c: t for c, (_, t) in times.items()}
    if source == "node_exporter":
        freqs = list(facts.by_first_label("node_cpu_scaling_frequency_hertz").values())
        freq = sum(freqs) / len(freqs) / 1e6 if freqs else None
        load = (facts.one("node_load1"), facts.one("node_load5"), facts.one("node_load15"))
        cores = len(times) or None
    elif source == "windows_exporter":
        freqs = list(facts.by_first_label("windows_cpu_core_frequency_mhz").values())
        freq = sum(freqs) / len(freqs) if freqs else None
        load = (None, None, None)
        logical = facts.one("windows_cpu_logical_processor", "windows_cs_logical_processors")
        cores = count_or_none(logical) or len(times) or None
    else:
        freqs = list(facts.by_first_label("system.cpu.frequency").values())
        freq = sum(freqs) / len(freqs) / 1e6 if freqs else None
        load = (
            facts.one("system.cpu.load_average.1m"),
            facts.one("system.cpu.load_average.5m"),
            facts.one("system.cpu.load_average.15m"),
        )
        cores = count_or_none(facts.one("system.cpu.logical.count")) or len(times) or None
    load_ok = [v if v is not None and v >= 0 else None for v in load]
    return Cpu(
        utilization_pct=utilization,
        per_core_pct=per_core,
        load_1m=load_ok[0],
        load_5m=load_ok[1],
        load_15m=load_ok[2],
        freq_mhz=freq if freq is not None and 0 <= freq < math.inf else None,  # a mean can overflow
        logical_cores=cores,
    )


def _memory(facts: _Facts, source: Source) -> tuple[Memory | None, Swap | None]:
    total = available = used = swap_total = swap_used = None
    if source == "node_exporter":
        if (linux_total := facts.one("node_memory_MemTotal_bytes")) is not None:
            total, available = linux_total, facts.one("node_memory_MemAvailable_bytes")
            used = total - available if available is not None else None
            swap_total = facts.one("node_memory_SwapTotal_bytes")
            swap_free = facts.one("node_memory_SwapFree_bytes")
            if swap_total is not None and swap_free is not None:
                swap_used = swap_total - swap_free
        elif (mac_total := facts.one("node_memory_total_bytes")) is not None:
            # psutil's macOS figures: available = free + inactive, used = active + wired.
            total = mac_total
            free, inactive = (
                facts.one("node_memory_free_bytes"),
                facts.one("node_memory_inactive_bytes"),
            )
            active, wired = (
                facts.one("node_memory_active_bytes"),
                facts.one("node_memory_wired_bytes"),
            )
            available = free + inactive if free is not None and inactive is not None else None
            used = active + wired if active is not None and wired is not None else None
            swap_total = facts.one("node_memory_swap_total_bytes")
            swap_used = facts.one("node_memory_swap_used_bytes")
    elif source == "windows_exporter":
        total = facts.one("windows_memory_physical_total_bytes", "windows_cs_physical_memory_bytes")
        available = facts.one(
            "windows_memory_available_bytes", "windows_os_physical_memory_free_bytes"
        )
        used = total - available if total is not None and available is not None else None
        # 0.30 moved them from `os` to `pagefile`, one series per paging file, off by default.
        limits = facts.by_first_label("windows_pagefile_limit_bytes")
        frees = facts.by_first_label("windows_pagefile_free_bytes")
        swap_total = sum(limits.values()) if limits else facts.one("windows_os_paging_limit_bytes")
        swap_free = sum(frees.values()) if frees else facts.one("windows_os_paging_free_bytes")
        if swap_total is not None and swap_free is not None:
            swap_used = swap_total - swap_free
    else:
        states = facts.by_first_label("system.memory.usage")
        total = facts.one("system.memory.limit")
        if states:
            used = states.get("used")
            if total is None:
                # Without the limit (off by default), the states' sum: slab_* break down memory
                # the others count. Exact before Collector v0.137; since, `used` is total -
                # MemAvailable, and the sum overstates total by the cache the kernel cannot free.
                total = sum(v for k, v in states.items() if not k.startswith("slab"))
        available = facts.one("system.linux.memory.available")
        paging: dict[str, float] = defaultdict(float)
        for (_device, state), value in facts.rows("system.paging.usage"):
            paging[state] += value
        if paging:
            swap_total = sum(paging.values())
            swap_used = paging.get("used")
    memory = None
    if total is not None:
        pct_used = total - available if available is not None else used
        memory = Memory(
            total_bytes=count_or_none(total),
            used_bytes=count_or_none(used),
            available_bytes=count_or_none(available),
            used_pct=_pct(pct_used, total),
        )
    swap = None
    if swap_total is not None:
        swap = Swap(
            total_bytes=count_or_none(swap_total),
            used_bytes=count_or_none(swap_used),
            used_pct=_pct(swap_used, swap_total) if swap_total else 0.0,
        )
    return memory, swap


def _disks(facts: _Facts, source: Source) -> list[DiskUsage]:
    disks = []
    if source == "node_exporter":
        fs_size = dict(facts.rows("node_filesystem_size_bytes"))
        fs_free = dict(facts.rows("node_filesystem_free_bytes"))
        avail = dict(facts.rows("node_filesystem_avail_bytes"))
        for key in sorted(fs_size):
            mountpoint, device, fstype = key
            if fstype in PSEUDO_FILESYSTEMS or fs_size[key] <= 0:
                continue
            used = fs_size[key] - fs_free[key] if key in fs_free else None
            disks.append(
                DiskUsage(
                    mountpoint=_label(mountpoint),
                    device=_label(device),
                    fstype=_label(fstype),
                    total_bytes=count_or_none(fs_size[key]),
                    used_bytes=count_or_none(used),
                    free_bytes=count_or_none(avail.get(key)),
                    used_pct=_pct(used, used + avail[key])
                    if used is not None and key in avail
                    else None,
                )
            )
    elif source == "windows_exporter":
        size = facts.by_first_label("windows_logical_disk_size_bytes")
        free = facts.by_first_label("windows_logical_disk_free_bytes")
        # `_info` (since 0.27) names each volume's filesystem; before it, none is known.
        fstypes = {v: fs for (v, fs), _ in facts.rows("windows_logical_disk_info") if fs}
        for volume in sorted(size):
            if volume in _SKIPPED_DEVICES or volume.startswith("HarddiskVolume"):
                continue
            used = size[volume] - free[volume] if volume in free else None
            disks.append(
                DiskUsage(
                    mountpoint=_label(volume),
                    device=_label(volume),
                    fstype=_label(fstypes[volume]) if volume in fstypes else None,
                    total_bytes=count_or_none(size[volume]),
                    used_bytes=count_or_none(used),
                    free_bytes=count_or_none(free.get(volume)),
                    used_pct=_pct(used, size[volume]),
                )
            )
    else:
        usage: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
        for (mountpoint, device, fstype, state), value in facts.rows("system.filesystem.usage"):
            usage[(mountpoint, device, fstype)][state] = value
        for (mountpoint, device, fstype), states in sorted(usage.items()):
            total = sum(states.values())
            if fstype in PSEUDO_FILESYSTEMS or total <= 0:
                continue
            used, free_space = states.get("used"), states.get("free")
            disks.append(
                DiskUsage(
                    mountpoint=_label(mountpoint),
                    device=_label(device),
                    fstype=_label(fstype),
                    total_bytes=count_or_none(total),
                    used_bytes=count_or_none(used),
                    free_bytes=count_or_none(free_space),
                    used_pct=_pct(used, used + free_space)
                    if used is not None and free_space is not None
                    else None,
                )
            )
    return disks


_NODE_DISK_IO: Final = (
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_disk_reads_completed_total",
    "node_disk_writes_completed_total",
)
_WINDOWS_DISK_IO: Final = (
    "windows_logical_disk_read_bytes_total",
    "windows_logical_disk_write_bytes_total",
    "windows_logical_disk_reads_total",
    "windows_logical_disk_writes_total",
)
_OTEL_DISK_IO: Final = {
    ("system.disk.io", "read"): 0,
    ("system.disk.io", "write"): 1,
    ("system.disk.operations", "read"): 2,
    ("system.disk.operations", "write"): 3,
}
"""OTel ``{device, direction}`` counter → its place in DiskIo (each summed over the devices)."""
_PARTITION: Final = re.compile(r"(?:[hsv]|xv)d[a-z]+\d+|nvme\d+n\d+p\d+|mmcblk\d+p\d+")
"""A Linux partition's name (``sda1``, ``nvme0n1p2``, ``mmcblk0p1``): its I/O is in its disk's
too. The Collector reports every line of ``/proc/diskstats``, partitions with their disks, where
our collector (psutil) and node_exporter (its default ``--collector.diskstats.device-exclude``)
count the disks alone; summed with them, a host's disk I/O was about twice what it is (before
2026-12-06)."""


def _disk_io(facts: _Facts, source: Source, state: HostState) -> DiskIo | None:
    """The disks' I/O counters summed; None when the host has fewer of them than in its
    previous sample (:attr:`HostState.disk_io_series`)."""
    counters: list[tuple[int, float]] = []  # (place in read/written bytes, reads, writes; value)
    if source == "node_exporter":
        for index, name in enumerate(_NODE_DISK_IO):
            counters += [(index, value) for _, value in facts.rows(name)]
    elif source == "windows_exporter":
        for index, name in enumerate(_WINDOWS_DISK_IO):
            counters += [
                (index, v) for (vol,), v in facts.rows(name) if vol not in _SKIPPED_DEVICES
            ]
    else:
        for metric in ("system.disk.io", "system.disk.operations"):
            for (device, direction), value in facts.rows(metric):
                place = _OTEL_DISK_IO.get((metric, direction))
                if place is not None and not _PARTITION.fullmatch(device):
                    counters.append((place, value))
    shrank, state.disk_io_series = len(counters) < state.disk_io_series, len(counters)
    if not counters or shrank:
        return None
    values: list[float | None] = [None, None, None, None]
    for index, value in counters:
        values[index] = value + (values[index] or 0.0)
    return DiskIo(
        read_bytes=count_or_none(values[0]),
        write_bytes=count_or_none(values[1]),
        read_count=count_or_none(values[2]),
        write_count=count_or_none(values[3]),
    )


_NET_FIELDS: Final = (
    "bytes_recv",
    "bytes_sent",
    "packets_recv",
    "packets_sent",
    "errin",
    "errout",
    "dropin",
    "dropout",
)
_NODE_NET: Final = (
    ("node_network_receive_bytes_total",),
    ("node_network_transmit_bytes_total",),
    ("node_network_receive_packets_total",),
    ("node_network_transmit_packets_total",),
    ("node_network_receive_errs_total",),
    ("node_network_transmit_errs_total",),
    ("node_network_receive_drop_total",),
    ("node_network_transmit_drop_total",),
)
_WINDOWS_NET: Final = (
    ("windows_net_bytes_received_total",),
    ("windows_net_bytes_sent_total",),
    ("windows_net_packets_received_total",),
    ("windows_net_packets_sent_total",),
    ("windows_net_packets_received_errors_total", "windows_net_packets_received_errors"),
    ("windows_net_packets_outbound_errors_total", "windows_net_packets_outbound_errors"),
    ("windows_net_packets_received_discarded_total", "windows_net_packets_received_discarded"),
    ("windows_net_packets_outbound_discarded_total", "windows_net_packets_outbound_discarded"),
)
_OTEL_NET: Final = (
    ("system.network.io", "receive"),
    ("system.network.io", "transmit"),
    ("system.network.packets", "receive"),
    ("system.network.packets", "transmit"),
    ("system.network.errors", "receive"),
    ("system.network.errors", "transmit"),
    ("system.network.dropped", "receive"),
    ("system.network.dropped", "transmit"),
)
_OTEL_NET_FIELDS: Final = {
    metric: {d: f for f, (m, d) in zip(_NET_FIELDS, _OTEL_NET, strict=True) if m == metric}
    for metric, _ in _OTEL_NET
}
"""OTel metric → direction → our field."""


def _network(facts: _Facts, source: Source, state: HostState) -> Network | None:
    per_nic: dict[str, dict[str, int | None]] = defaultdict(dict)
    if source == "otel":
        for metric, fields in _OTEL_NET_FIELDS.items():
            for (device, direction), value in facts.rows(metric):
                field_name = fields.get(direction)
                if field_name is not None:
                    per_nic[device][field_name] = count_or_none(value)
    else:
        table = _NODE_NET if source == "node_exporter" else _WINDOWS_NET
        for field_name, names in zip(_NET_FIELDS, table, strict=True):
            for nic, value in facts.by_first_label(*names).items():
                if nic not in _SKIPPED_DEVICES:
                    per_nic[nic][field_name] = count_or_none(value)
    series = sum(len(values) for values in per_nic.values())
    shrank, state.net_series = series < state.net_series, series
    if not per_nic:
        return None
    sums: dict[str, int] = {}  # each field over the interfaces that have it
    for nic, values in per_nic.items():
        if is_loopback(nic) or shrank:
            continue
        for field_name, count in values.items():
            if count is not None:
                sums[field_name] = sums.get(field_name, 0) + count
    interfaces = [
        NetInterface(name=_label(nic), **values) for nic, values in sorted(per_nic.items())
    ]
    # A sum may pass 64 bits.
    return Network(interfaces=interfaces, **{f: count_or_none(v) for f, v in sums.items()})


def _temperatures(facts: _Facts, source: Source) -> list[Temperature]:
    found = []
    if source == "node_exporter":
        for (chip, sensor), value in facts.rows("node_hwmon_temp_celsius"):
            found.append(Temperature(sensor=_label(chip), label=_label(sensor), celsius=value))
        for (kind, zone), value in facts.rows("node_thermal_zone_temp"):
            found.append(
                Temperature(sensor=_label(f"thermal_zone{zone}"), label=_label(kind), celsius=value)
            )
    elif source == "windows_exporter":
        for (name,), value in facts.rows("windows_thermalzone_temperature_celsius"):
            found.append(Temperature(sensor=_label(name), celsius=value))
    return [t for t in found if t.celsius is not None and -273.15 <= t.celsius <= 1000]


def _battery(facts: _Facts, source: Source) -> Battery | None:
    if source != "node_exporter":
        return None
    capacity = {
        k: v
        for k, v in facts.by_first_label("node_power_supply_capacity").items()
        if k.upper().startswith("BAT")
    }
    if not capacity:
        return None
    online = [
        v
        for k, v in facts.by_first_label("node_power_supply_online").items()
        if not k.upper().startswith("BAT")
    ]
    return Battery(
        percent=_pct(sum(capacity.values()) / len(capacity), 100),
        plugged_in=any(v > 0 for v in online) if online else None,
    )


def _host(facts: _Facts, source: Source, host_id: str) -> Host:
    hostname, os_name, arch, boot = None, "unknown", "unknown", None
    if source == "node_exporter":
        rows = facts.rows("node_uname_info")
        if rows:
            nodename, sysname, machine = rows[0][0]
            hostname, os_name, arch = nodename, sysname.lower(), machine.lower()
        boot = facts.one("node_boot_time_seconds")
    elif source == "windows_exporter":
        os_name = "windows"
        names = facts.by_first_label("windows_os_hostname", "windows_cs_hostname")
        hostname = next(iter(names), None)
        boot = facts.one(
            "windows_system_boot_time_timestamp",
            "windows_system_boot_time_timestamp_seconds",
            "windows_system_system_up_time",
        )
    else:
        rows = facts.rows(OTEL_RESOURCE)
        if rows:
            name, os_type, host_arch = rows[0][0]
            hostname = name or None
            os_name = os_type.lower() or "unknown"
            arch = host_arch.lower() or "unknown"
        boot = facts.one(OTEL_STARTED)
    if not hostname:
        # `instance` is usually host:port: the host part names the machine.
        hostname = host_id.rsplit(":", 1)[0] if host_id.count(":") == 1 else host_id
    boot_time = None
    if boot is not None and 946684800 <= boot < 4102444800:
        boot_time = datetime.fromtimestamp(boot, UTC)
    return Host(
        host_id=host_id,
        hostname=_label(hostname),
        os=_label(os_name),
        arch=_label(arch),
        boot_time=boot_time,
    )


def build_event(
    source: Source,
    host_id: str,
    ts_ms: int,
    facts: Facts,
    state: HostState,
    sender: str | None = None,
) -> MetricsEvent:
    """One host's facts at one sample time, delivered by ``sender``, as an event; ``state``
    (the host's previous sample) gives the CPU percentage, the sampling interval and the
    counters' series it had, and is advanced by this sample."""
    table = _Facts(facts)
    memory, swap = _memory(table, source)
    if state.last_ts is not None and 0 < ts_ms - state.last_ts <= 86_400_000:
        state.learn_interval((ts_ms - state.last_ts) / 1000)
    if state.last_ts is None or ts_ms > state.last_ts:
        state.last_ts = ts_ms
    ts = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return MetricsEvent(
        schema_version=1,
        event_id=event_id_for(source, host_id, ts_ms, ts),
        ts=ts,
        host=_host(table, source, host_id),
        cpu=_cpu(table, source, ts_ms, state),
        memory=memory,
        swap=swap,
        disks=_disks(table, source),
        disk_io=_disk_io(table, source, state),
        network=_network(table, source, state),
        temperatures=_temperatures(table, source),
        battery=_battery(table, source),
        interval_s=state.interval_s,
        source=source,
        sender=sender,
    )
