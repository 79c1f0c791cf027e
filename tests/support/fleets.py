"""Messy fleets for the hourly job: a healthy majority plus hosts that are odd in the ways real
fleets are (cloned machines behind one id, other sample intervals, wrong clocks, counters that
go backwards), and the hourly values of the healthy hosts computed here, independently of SQL."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from sysmetrics.schema import MetricsEvent
from sysmetrics.warehouse.base import Warehouse
from tests.support.lakes import HOUR14, LakeBuilder, event


@dataclass
class Fleet:
    events: list[MetricsEvent] = field(default_factory=list)
    healthy: dict[str, list[MetricsEvent]] = field(default_factory=dict)
    odd: dict[str, str] = field(default_factory=dict)  # host_id -> the anomaly it must get


def _percentile_cont(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def expected_hourly(events: list[MetricsEvent]) -> dict[str, Any]:
    """What hourly_host_metrics must say for a healthy host whose samples all lie in one hour,
    10 s slots, counters only growing (no sample in the hour before). Averages are the exact
    means: the table rounds them to 6 decimals, and at a tie (a mean ending in 5 at the 7th)
    Python's and the engine's rounding may differ by 1e-6, so the caller's tolerance covers the
    rounding instead."""
    events = sorted(events, key=lambda e: e.ts)
    cpu = [e.cpu.utilization_pct for e in events if e.cpu and e.cpu.utilization_pct is not None]
    sent = [e.network.bytes_sent for e in events if e.network]
    seconds = [(b.ts - a.ts).total_seconds() for a, b in pairwise(events)]
    deltas = [b - a for a, b in pairwise(sent)]
    slots = {int(e.ts.timestamp()) // 10 for e in events}
    assert all(d >= 0 for d in deltas), "a healthy host's counters only grow"
    return {
        "samples": len(events),
        "completeness_pct": round(100 * len(slots) / 360, 2),
        "cpu_avg": sum(cpu) / len(cpu),
        "cpu_min": min(cpu),
        "cpu_max": max(cpu),
        "cpu_p95": _percentile_cont(cpu, 0.95),
        "net_sent_bytes": sum(deltas) if deltas else None,
        "net_sent_rate_avg": sum(deltas) / sum(seconds) if deltas else None,
        "net_sent_rate_peak": max(d / s for d, s in zip(deltas, seconds, strict=True))
        if deltas
        else None,
        "counter_resets": 0,
    }


class FleetBuilder:
    """Hosts sampled in ``hour`` at collector-like times: on the interval's ticks plus a few ms,
    arriving at Kafka a moment later."""

    def __init__(self, hour: datetime, rng: random.Random) -> None:
        self.hour = hour
        self.rng = rng
        self.fleet = Fleet()

    def _host(
        self,
        host_id: str,
        *,
        hostname: str | None = None,
        interval_s: float = 10.0,
        declared: bool = True,
        first: int = 0,
        count: int | None = None,
        clock_offset_s: float = 0.0,
        backwards_at: int | None = None,
        boot_hours_ago: float | None = None,
    ) -> list[MetricsEvent]:
        rng = self.rng
        slots = int(3600 / interval_s)
        count = slots - first if count is None else count
        boot = self.hour - timedelta(hours=boot_hours_ago or rng.uniform(1, 500))
        sent = rng.randrange(10**6, 10**9)
        events = []
        for i in range(first, first + count):
            true_time = self.hour + timedelta(
                seconds=i * interval_s, milliseconds=rng.randint(1, 40)
            )
            sent += rng.randrange(0, 5 * 10**6)
            if backwards_at is not None and i == backwards_at:
                sent //= 3  # the counter goes back while the boot time stays the same
            events.append(
                event(
                    host_id,
                    true_time + timedelta(seconds=clock_offset_s),
                    round(rng.uniform(0, 100), 2),
                    sent=sent,
                    recv=sent * 2,
                    seq=i,
                    hostname=hostname,
                    boot_time=boot.replace(microsecond=0),
                    interval_s=interval_s if declared else None,
                    received_at=true_time + timedelta(milliseconds=rng.randint(5, 3000)),
                )
            )
        self.fleet.events += events
        return events

    def healthy(self, host_id: str, *, partial: bool = False) -> None:
        first, count = 0, None
        if partial:  # a host that started or stopped during the hour
            first = self.rng.randrange(0, 300)
            count = self.rng.randrange(1, 360 - first)
        declared = self.rng.random() < 0.5  # mixed collector versions
        self.fleet.healthy[host_id] = self._host(
            host_id, first=first, count=count, declared=declared
        )

    def clones(self, host_id: str, *, same_hostname: bool = False) -> None:
        """Two machines from one image: same machine id, booted at different times."""
        for name in ("a", "b"):
            hostname = f"{host_id}.example" if same_hostname else f"{host_id}-{name}.example"
            self._host(host_id, hostname=hostname, declared=self.rng.random() < 0.5)
        self.fleet.odd[host_id] = "duplicate_host_id"

    def fast(self, host_id: str, *, declared: bool = True) -> None:
        self._host(host_id, interval_s=5.0, declared=declared)
        self.fleet.odd[host_id] = "sampling_interval"

    def clock_ahead(self, host_id: str, seconds: float = 600.0) -> None:
        self._host(host_id, clock_offset_s=seconds, first=0, count=int(360 - seconds / 10))
        self.fleet.odd[host_id] = "clock_skew"

    def counters_backwards(self, host_id: str) -> None:
        self._host(host_id, backwards_at=self.rng.randrange(10, 350))
        self.fleet.odd[host_id] = "counter_backwards"


EXACT = ("samples", "cpu_min", "cpu_max", "net_sent_bytes", "counter_resets")


def the_messy_fleet(seed: int = 7) -> Fleet:
    """Two machines sharing an id, a host sampling every 5 s, a host 10 minutes ahead, a host
    whose counters go backwards without a reboot, and a healthy majority."""
    build = FleetBuilder(HOUR14, random.Random(seed))
    for i in range(8):
        build.healthy(f"healthy-{i}", partial=i == 7)
    build.clones("golden-image")
    build.fast("every-5s")
    build.clock_ahead("ahead-10m")
    build.counters_backwards("backwards")
    return build.fleet


def write_lake(root: Path, fleet: Fleet, batch: int = 50) -> None:
    """Batches of events in arrival order, as the lake writer would file them."""
    lake = LakeBuilder(root)
    ordered = sorted(fleet.events, key=lambda e: (e.received_at, e.event_id))
    for start in range(0, len(ordered), batch):
        lake.add_batch(ordered[start : start + batch])


def assert_fleet_hour(wh: Warehouse, fleet: Fleet) -> None:
    """Every host aggregated, healthy ones exactly as computed here, odd ones flagged."""
    hour = {"start": HOUR14}
    rows = {r["host_id"]: r for r in wh.rows("SELECT * FROM {hourly} WHERE hour = @start", **hour)}
    hosts = {e.host.host_id for e in fleet.events}
    assert set(rows) == hosts
    assert all(0 < r["completeness_pct"] <= 100 for r in rows.values()), {
        h: r["completeness_pct"] for h, r in rows.items()
    }
    for host, events in fleet.healthy.items():
        want = expected_hourly(events)
        got = rows[host]
        for name, value in want.items():
            if name in EXACT or value is None:
                assert got[name] == value, (host, name)
            else:
                assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-6), (host, name)
    flags = wh.rows(
        "SELECT host_id, anomaly, value FROM {quality} WHERE hour = @start", start=HOUR14
    )
    flagged: dict[str, set[str]] = {}
    for flag in flags:
        flagged.setdefault(flag["host_id"], set()).add(flag["anomaly"])
    assert flagged == {host: {anomaly} for host, anomaly in fleet.odd.items()}
    alerts = {
        (a["host_id"], a["rule"])
        for a in wh.rows("SELECT host_id, rule FROM {alerts} WHERE hour = @start", **hour)
    }
    for host, anomaly in fleet.odd.items():
        if anomaly in ("duplicate_host_id", "clock_skew"):
            assert (host, anomaly) in alerts
        else:  # counter_backwards: an interface gone, a quality flag only
            assert (host, anomaly) not in alerts
