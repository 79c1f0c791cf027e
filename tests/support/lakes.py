"""Small generated lakes: events written in the writer's own layout, without Kafka."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sysmetrics.lake import layout
from sysmetrics.schema import (
    SCHEMA_VERSION,
    Battery,
    Cpu,
    DiskIo,
    DiskUsage,
    Host,
    Memory,
    MetricsEvent,
    Network,
    Temperature,
    encode,
    new_event_id,
)
from sysmetrics.stream.simulator import generate


def event(
    host_id: str,
    ts: datetime,
    cpu: float,
    *,
    sent: int = 0,
    recv: int = 0,
    temp: float = 50.0,
    disk_pct: float = 40.0,
    battery_health: float | None = None,
    seq: int = 0,
    hostname: str | None = None,
    boot_time: datetime | None = None,
    interval_s: float | None = None,
    received_at: datetime | None = None,
) -> MetricsEvent:
    return MetricsEvent(
        schema_version=SCHEMA_VERSION,
        event_id=new_event_id(ts, hash((host_id, hostname, seq)) & ((1 << 74) - 1)),
        ts=ts,
        host=Host(
            host_id=host_id,
            hostname=hostname or f"{host_id}.example",
            os="linux",
            arch="x86_64",
            boot_time=boot_time,
        ),
        cpu=Cpu(utilization_pct=cpu),
        memory=Memory(total_bytes=100, used_bytes=50, available_bytes=50, used_pct=50.0),
        disks=[
            DiskUsage(
                mountpoint="/", total_bytes=1000, used_bytes=int(disk_pct * 10), used_pct=disk_pct
            )
        ],
        disk_io=DiskIo(read_bytes=sent * 2, write_bytes=sent),
        network=Network(bytes_sent=sent, bytes_recv=recv),
        temperatures=[Temperature(sensor="coretemp", label="Package id 0", celsius=temp)],
        battery=Battery(percent=80.0, health_pct=battery_health) if battery_health else None,
        interval_s=interval_s,
        received_at=received_at,
    )


def steady_host(
    host_id: str,
    hour: datetime,
    cpu: float,
    temp: float = 50.0,
    samples: int = 360,
    interval_s: int = 10,
) -> list[MetricsEvent]:
    return [
        event(
            host_id,
            hour + timedelta(seconds=i * interval_s),
            cpu,
            sent=1000 * i,
            recv=2000 * i,
            temp=temp,
            seq=i,
        )
        for i in range(samples)
    ]


class LakeBuilder:
    """Writes events as the lake writer would: one file per (fake) batch and event hour."""

    def __init__(self, root: Path, topic: str = "machine_metrics") -> None:
        self.root = root
        self.topic = topic
        self.next_offset = 0

    def add_batch(self, events: list[MetricsEvent], partition: int = 0) -> list[Path]:
        start = self.next_offset
        end = start + len(events) - 1
        self.next_offset = end + 1
        by_hour: dict[datetime, list[bytes]] = defaultdict(list)
        for e in events:
            by_hour[layout.hour_of(e.ts)].append(encode(e))
        paths = []
        for hour, lines in sorted(by_hour.items()):
            path = (
                self.root
                / layout.hour_dir(self.topic, hour)
                / layout.batch_name(self.topic, partition, start, end)
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\n".join(lines) + b"\n")
            paths.append(path)
        return paths


HOUR14 = datetime(2026, 11, 27, 14, tzinfo=UTC)


def write_simulated_fleet(
    lake_root: Path, hosts: int, start: datetime, hours: int, batch: int = 2000, seed: int = 42
) -> int:
    """The simulator's fleet (GPU servers, laptops, counter resets, late hosts) for ``hours``
    from ``start``, written as the lake writer lays it out; returns the number of events."""
    lake = LakeBuilder(lake_root)
    pending: list[MetricsEvent] = []
    written = 0
    for _, e in generate(hosts, start, hours * 3600.0, seed=seed):
        pending.append(e)
        if len(pending) == batch:
            lake.add_batch(pending)
            written += len(pending)
            pending = []
    if pending:
        lake.add_batch(pending)
        written += len(pending)
    return written
