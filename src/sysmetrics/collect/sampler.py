"""Assemble one schema-v1 event of this machine from every reader."""

from __future__ import annotations

from pathlib import Path

from sysmetrics.collect.battery import read_battery
from sysmetrics.collect.cpu import CpuReader
from sysmetrics.collect.disks import read_disk_io, read_disks
from sysmetrics.collect.gpu import GpuReader
from sysmetrics.collect.host import read_host
from sysmetrics.collect.memory import read_memory, read_swap
from sysmetrics.collect.network import read_network
from sysmetrics.collect.temperatures import read_temperatures
from sysmetrics.schema import SCHEMA_VERSION, MetricsEvent, new_event_id, utc_now_ms


class Sampler:
    """Stateful (CPU deltas, NVML handle): keep one per process and call :meth:`sample`."""

    def __init__(
        self, root: Path = Path("/"), host_id: str | None = None, interval_s: float | None = None
    ) -> None:
        self.root = root
        self.host = read_host(root, host_id)
        self.interval_s = interval_s
        self._cpu = CpuReader()
        self._gpu = GpuReader()

    def sample(self) -> MetricsEvent:
        ts = utc_now_ms()
        return MetricsEvent(
            schema_version=SCHEMA_VERSION,
            event_id=new_event_id(ts),
            ts=ts,
            host=self.host,
            cpu=self._cpu.read(),
            memory=read_memory(),
            swap=read_swap(),
            disks=read_disks(),
            disk_io=read_disk_io(),
            network=read_network(),
            temperatures=read_temperatures(self.root),
            gpus=self._gpu.read(),
            battery=read_battery(self.root),
            interval_s=self.interval_s,
        )
