"""A fleet simulator: realistic schema-v1 events for N synthetic hosts, deterministic by seed.

What it models: diurnal CPU load per host, memory that follows CPU, cumulative network and
disk counters that grow and sometimes reset (a reboot), a few GPU servers and laptops with
batteries, hosts that go offline and come back with their buffered (late) samples, and a few
incidents (a runaway process, a failed fan, a disk filling up) for the alerts to find.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO

from confluent_kafka import Producer

from sysmetrics.config import Settings
from sysmetrics.schema import (
    SCHEMA_VERSION,
    Battery,
    Cpu,
    DiskIo,
    DiskUsage,
    Gpu,
    Host,
    Memory,
    MetricsEvent,
    NetInterface,
    Network,
    Swap,
    Temperature,
    encode,
    new_event_id,
)
from sysmetrics.stream.kafka_config import producer_config

log = logging.getLogger(__name__)

GIB = 1024**3


INCIDENTS_PER_HOST_DAY = 0.06
"""A demo fleet of 50 hosts over a day shows about three believable incidents, not a fleet on
fire: every other alert the simulator triggers is a spike too short for any rule's `for`."""
INCIDENT_KINDS = ("cpu_runaway", "overheating", "disk_filling")


@dataclass(frozen=True)
class Incident:
    """Something going wrong on one host for a while (seconds since start, [begin, end)):
    a runaway process pins the CPU (and heats it), a failed fan overheats it at normal load,
    or a log storm fills the root disk until someone cleans it up at the end."""

    kind: str
    begin: float
    end: float

    def active(self, elapsed_s: float) -> bool:
        return self.begin <= elapsed_s < self.end

    def progress(self, elapsed_s: float) -> float:
        return (elapsed_s - self.begin) / (self.end - self.begin)


def plan_incidents(hosts: int, seed: int, duration_s: float) -> dict[int, Incident]:
    """Which hosts have an incident, and when: INCIDENTS_PER_HOST_DAY of the fleet's host-days,
    one of each kind in turn (a 50-host day: one of each)."""
    # Its own random stream: every other simulated value stays what it was for a given seed.
    rng = random.Random(f"incidents-{seed}")
    count = min(hosts, round(INCIDENTS_PER_HOST_DAY * hosts * duration_s / 86400))
    planned = {}
    for n, index in enumerate(sorted(rng.sample(range(hosts), count))):
        length = rng.uniform(20, 45) * 60
        begin = rng.uniform(0.1, 0.9) * max(duration_s - length, 0)
        planned[index] = Incident(INCIDENT_KINDS[n % 3], begin, begin + length)
    return planned


@dataclass
class SimHost:
    index: int
    host: Host
    rng: random.Random
    cores: int
    mem_total: int
    disk_total: int
    disk_used: float
    base_cpu: float
    amp_cpu: float
    gpus: int
    battery_health: float | None
    offline: tuple[float, float] | None  # seconds since start, [from, to)
    reset_at: float | None  # seconds since start: counters restart from 0 (a reboot)
    incident: Incident | None = None
    net_sent: int = 0
    net_recv: int = 0
    disk_read: int = 0
    disk_write: int = 0
    charge: float = 100.0
    late: list[MetricsEvent] = field(default_factory=list)


def _make_host(index: int, seed: int, start: datetime, duration_s: float) -> SimHost:
    rng = random.Random(seed * 1_000_003 + index)
    kind = rng.random()
    offline = None
    if rng.random() < 0.03 and duration_s >= 1800:
        begin = rng.uniform(0.1, 0.6) * duration_s
        offline = (begin, begin + rng.uniform(0.15, 0.35) * duration_s)
    reset_at = rng.uniform(0.2, 0.9) * duration_s if rng.random() < 0.05 else None
    return SimHost(
        index=index,
        host=Host(
            host_id=f"sim-{seed}-{index:05d}",
            hostname=f"sim-host-{index:05d}",
            os="linux" if kind < 0.8 else ("darwin" if kind < 0.93 else "windows"),
            arch="x86_64" if kind < 0.85 else "arm64",
            boot_time=start - timedelta(hours=rng.uniform(1, 500)),
        ),
        rng=rng,
        cores=rng.choice([2, 4, 8, 16, 32, 64]),
        mem_total=rng.choice([8, 16, 32, 64, 128, 256]) * GIB,
        disk_total=rng.choice([256, 512, 1024, 2048]) * GIB,
        disk_used=rng.uniform(0.2, 0.85),  # no disk starts full: DiskFull is an incident
        base_cpu=rng.uniform(5, 45),
        amp_cpu=rng.uniform(5, 40),
        gpus=rng.choice([1, 2, 4, 8]) if kind > 0.9 else 0,
        battery_health=rng.uniform(60, 100) if 0.8 <= kind < 0.93 else None,
        offline=offline,
        reset_at=reset_at,
        net_sent=rng.randrange(10**9),
        net_recv=rng.randrange(10**10),
        disk_read=rng.randrange(10**10),
        disk_write=rng.randrange(10**10),
    )


def _data_volume(h: SimHost) -> list[DiskUsage]:
    """Servers with 16+ cores also mount a data volume (derived without extra random draws, so
    every other simulated value stays what it was for a given seed)."""
    if h.cores < 16:
        return []
    total = 4 * h.disk_total
    used = int(total * ((h.disk_used * 1.7) % 0.8 + 0.05))
    return [
        DiskUsage(
            mountpoint="/data",
            device="/dev/sdb1",
            fstype="xfs",
            total_bytes=total,
            used_bytes=used,
            free_bytes=total - used,
            used_pct=round(100 * used / total, 2),
        )
    ]


def _sample(h: SimHost, ts: datetime, elapsed_s: float, interval_s: float) -> MetricsEvent:
    rng = h.rng
    hour = ts.hour + ts.minute / 60
    diurnal = math.sin(2 * math.pi * (hour - 8) / 24)
    cpu = min(100.0, max(0.0, h.base_cpu + h.amp_cpu * diurnal + rng.gauss(0, 6)))
    if rng.random() < 0.002:
        cpu = rng.uniform(95, 100)  # a spike
    incident = h.incident.kind if h.incident and h.incident.active(elapsed_s) else None
    if incident == "cpu_runaway":
        cpu = 96 + cpu % 3.5  # pinned; derived, not drawn, so later draws stay the same
    mem_pct = min(99.0, max(5.0, 30 + cpu * 0.4 + rng.gauss(0, 3)))
    if h.reset_at is not None and elapsed_s >= h.reset_at:
        h.net_sent = h.net_recv = h.disk_read = h.disk_write = 0
        h.host = Host(
            host_id=h.host.host_id,
            hostname=h.host.hostname,
            os=h.host.os,
            arch=h.host.arch,
            boot_time=ts,
        )
        h.reset_at = None
    load = cpu / 100 * h.cores
    h.net_sent += int(interval_s * rng.uniform(1e4, 5e6) * (1 + cpu / 50))
    h.net_recv += int(interval_s * rng.uniform(2e4, 2e7) * (1 + cpu / 50))
    h.disk_read += int(interval_s * rng.uniform(0, 4e6))
    h.disk_write += int(interval_s * rng.uniform(0, 2e6))
    h.disk_used = min(0.999, h.disk_used + rng.uniform(0, 2e-6))
    root_used = h.disk_used
    if incident == "disk_filling" and h.incident is not None:
        # Full (97 %) two thirds into the incident; cleaned up when it ends.
        filled = min(1.0, 1.5 * h.incident.progress(elapsed_s))
        root_used = h.disk_used + (0.97 - h.disk_used) * filled
    disk_used = int(h.disk_total * root_used)
    battery = None
    if h.battery_health is not None:
        plugged = 9 <= ts.hour < 18
        h.charge = min(100.0, h.charge + 0.5) if plugged else max(5.0, h.charge - 0.05)
        battery = Battery(
            percent=round(h.charge, 1),
            plugged_in=plugged,
            secs_left=None if plugged else int(h.charge * 180),
            health_pct=round(h.battery_health, 1),
            cycle_count=300 + h.index % 500,
        )
    gpus = [
        Gpu(
            index=g,
            name="NVIDIA H100 80GB HBM3",
            uuid=f"GPU-{h.host.host_id}-{g}",
            utilization_pct=round(min(100.0, max(0.0, cpu * 1.2 + rng.gauss(0, 10))), 1),
            memory_used_bytes=int(80 * GIB * rng.uniform(0.1, 0.9)),
            memory_total_bytes=80 * GIB,
            temperature_celsius=round(35 + cpu * 0.45 + rng.gauss(0, 2), 1),
            power_watts=round(80 + cpu * 5 + rng.gauss(0, 10), 1),
            fan_pct=None,
        )
        for g in range(h.gpus)
    ]
    counters: dict[str, int] = {
        "bytes_sent": h.net_sent,
        "bytes_recv": h.net_recv,
        "packets_sent": h.net_sent // 900,
        "packets_recv": h.net_recv // 1200,
        "errin": 0,
        "errout": 0,
        "dropin": 0,
        "dropout": 0,
    }
    net = Network(**counters, interfaces=[NetInterface(name="eth0", **counters)])
    return MetricsEvent(
        schema_version=SCHEMA_VERSION,
        event_id=new_event_id(ts, rng.getrandbits(74)),
        ts=ts,
        host=h.host,
        cpu=Cpu(
            utilization_pct=round(cpu, 2),
            per_core_pct=None,
            load_1m=round(load, 2),
            load_5m=round(load * 0.95, 2),
            load_15m=round(load * 0.9, 2),
            freq_mhz=2600.0,
            logical_cores=h.cores,
        ),
        memory=Memory(
            total_bytes=h.mem_total,
            used_bytes=int(h.mem_total * mem_pct / 100),
            available_bytes=int(h.mem_total * (1 - mem_pct / 100)),
            used_pct=round(mem_pct, 2),
        ),
        swap=Swap(total_bytes=4 * GIB, used_bytes=0, used_pct=0.0),
        disks=[
            DiskUsage(
                mountpoint="/",
                device="/dev/nvme0n1p2",
                fstype="ext4",
                total_bytes=h.disk_total,
                used_bytes=disk_used,
                free_bytes=h.disk_total - disk_used,
                used_pct=round(100 * root_used, 2),
            ),
            *_data_volume(h),
        ],
        disk_io=DiskIo(
            read_bytes=h.disk_read,
            write_bytes=h.disk_write,
            read_count=h.disk_read // 4096,
            write_count=h.disk_write // 4096,
        ),
        network=net,
        temperatures=[
            Temperature(
                sensor="coretemp",
                label="Package id 0",
                # A failed fan: hot whatever the load.
                celsius=round(
                    (88 + cpu * 0.1 if incident == "overheating" else 38 + cpu * 0.5)
                    + rng.gauss(0, 1.5),
                    1,
                ),
            )
        ],
        gpus=gpus,
        battery=battery,
        interval_s=interval_s,
    )


def generate(
    hosts: int, start: datetime, duration_s: float, interval_s: float = 10.0, seed: int = 42
) -> Iterator[tuple[float, MetricsEvent]]:
    """Yield ``(emit time in seconds since start, event)`` in emission order.

    A host that is offline keeps sampling into a local buffer and emits it all, late, at
    the moment it comes back, the way a real collector's spool drains.
    """
    fleet = [_make_host(i, seed, start, duration_s) for i in range(hosts)]
    for index, incident in plan_incidents(hosts, seed, duration_s).items():
        fleet[index].incident = incident
    ticks = int(duration_s // interval_s)
    returning: list[tuple[float, int]] = []
    for tick in range(ticks):
        elapsed = tick * interval_s
        ts = start + timedelta(seconds=elapsed)
        while returning and returning[0][0] <= elapsed:
            _, index = heapq.heappop(returning)
            for event in fleet[index].late:
                yield elapsed, event
            fleet[index].late.clear()
        for h in fleet:
            event = _sample(h, ts, elapsed, interval_s)
            if h.offline is not None and h.offline[0] <= elapsed < h.offline[1]:
                if not h.late:
                    heapq.heappush(returning, (h.offline[1], h.index))
                h.late.append(event)
            else:
                yield elapsed, event
    for h in fleet:  # hosts still offline at the end come back right after it
        for event in h.late:
            yield duration_s, event


def write_simulation(
    out: IO[bytes],
    hosts: int,
    duration_s: float,
    interval_s: float,
    start: datetime | None = None,
    seed: int = 42,
    history_s: float = 0.0,
) -> int:
    """The same fleet as :func:`run_simulation`, as NDJSON to ``out`` instead of Kafka;
    returns the number of events."""
    begin = (start or datetime.now(UTC).replace(microsecond=0)) - timedelta(seconds=history_s)
    written = 0
    for _, event in generate(hosts, begin, duration_s, interval_s, seed):
        out.write(encode(event) + b"\n")
        written += 1
    return written


@dataclass
class SimulationStats:
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0


def run_simulation(
    settings: Settings,
    hosts: int,
    duration_s: float,
    start: datetime | None = None,
    speedup: float = 0.0,
    seed: int = 42,
    progress: Callable[[SimulationStats], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    history_s: float = 0.0,
) -> SimulationStats:
    """Produce the simulated fleet to Kafka; ``speedup`` 0 means as fast as the broker takes it.

    ``history_s``: the fleet starts that long before ``start`` (default now); that past is
    produced at once, the rest paced by ``speedup``, so a demo has a history from its first
    minute and then carries on live."""
    start = (start or datetime.now(UTC).replace(microsecond=0)) - timedelta(seconds=history_s)
    producer = Producer({**producer_config(settings), "linger.ms": 20})
    stats = SimulationStats()

    def on_delivery(error: object, _message: object) -> None:
        if error is None:
            stats.delivered += 1
        else:
            stats.failed += 1
            log.error("simulated event not delivered: %s", error)

    began = time.monotonic()
    last_report = began
    for emit_at, event in generate(hosts, start, duration_s, settings.sample_interval_s, seed):
        if should_stop():
            break
        if speedup > 0:
            wait = (emit_at - history_s) / speedup - (time.monotonic() - began)
            while wait > 0 and not should_stop():
                producer.poll(min(wait, 0.2))
                wait = (emit_at - history_s) / speedup - (time.monotonic() - began)
        payload = encode(event)
        while True:
            try:
                producer.produce(
                    settings.topic, payload, event.host.host_id.encode(), on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.05)
        stats.produced += 1
        if stats.produced % 1000 == 0:
            producer.poll(0)
            now = time.monotonic()
            if progress is not None and now - last_report >= 1.0:
                stats.seconds = now - began
                progress(stats)
                last_report = now
    remaining = producer.flush(60)
    stats.failed += remaining
    stats.seconds = time.monotonic() - began
    if progress is not None:
        progress(stats)
    return stats
