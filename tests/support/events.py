"""Schema-v1 events for tests, from the simulator (deterministic by seed)."""

from __future__ import annotations

from datetime import datetime

from sysmetrics.schema import MetricsEvent, encode
from sysmetrics.stream.simulator import generate


def simulated(
    hosts: int, start: datetime, duration_s: float, seed: int = 7, interval_s: float = 10.0
) -> list[MetricsEvent]:
    return [e for _, e in generate(hosts, start, duration_s, interval_s, seed)]


def as_messages(events: list[MetricsEvent]) -> list[tuple[bytes | None, bytes | None]]:
    return [(e.host.host_id.encode(), encode(e)) for e in events]
