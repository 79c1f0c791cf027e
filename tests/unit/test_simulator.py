"""The simulator's planned incidents: a few, believable, visible in the samples, and nothing
else changed for a given seed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sysmetrics.stream.simulator import _make_host, _sample, plan_incidents

START = datetime(2026, 11, 27, tzinfo=UTC)
DAY = 86_400.0


def test_a_50_host_day_has_one_incident_of_each_kind() -> None:
    planned = plan_incidents(50, 42, DAY)
    assert sorted(i.kind for i in planned.values()) == [
        "cpu_runaway",
        "disk_filling",
        "overheating",
    ]
    for incident in planned.values():
        assert 20 * 60 <= incident.end - incident.begin <= 45 * 60
        assert incident.begin >= 0 and incident.end <= DAY
    assert plan_incidents(6, 42, DAY) == {}  # a small fleet for a day: likely none
    assert plan_incidents(50, 42, DAY) == planned  # deterministic by seed


def samples(index: int, seconds: list[float], with_incident: bool) -> list[object]:
    host = _make_host(index, 42, START, DAY)
    if with_incident:
        host.incident = plan_incidents(50, 42, DAY)[index]
    return [_sample(host, START + timedelta(seconds=s), s, 10.0) for s in seconds]


def test_each_incident_shows_in_the_samples_and_nothing_else_changes() -> None:
    planned = plan_incidents(50, 42, DAY)
    for index, incident in planned.items():
        # Every 10-s sample up to the end of the incident and 10 minutes past it.
        seconds = [10.0 * n for n in range(int((incident.end + 600) // 10))]
        hit = samples(index, seconds, with_incident=True)
        calm = samples(index, seconds, with_incident=False)
        during = [n for n, s in enumerate(seconds) if incident.active(s)]
        late = during[len(during) * 3 // 4 :]  # the last quarter: a filling disk is full
        after = [n for n, s in enumerate(seconds) if s >= incident.end]
        if incident.kind == "cpu_runaway":
            assert all(hit[n].cpu.utilization_pct >= 96 for n in during)  # type: ignore[attr-defined]
        if incident.kind == "overheating":
            assert all(hit[n].temperatures[0].celsius >= 85 for n in during)  # type: ignore[attr-defined]
        if incident.kind == "disk_filling":
            assert all(hit[n].disks[0].used_pct >= 96 for n in late)  # type: ignore[attr-defined]
        # Outside the incident every reading is what the seed gave without it (the random
        # draws are the same; only byte counters carry what a runaway process sent meanwhile).
        outside = [n for n, s in enumerate(seconds) if not incident.active(s)]
        assert after and [readings(hit[n]) for n in outside] == [readings(calm[n]) for n in outside]


def readings(event: Any) -> tuple[Any, ...]:
    return (
        event.event_id,
        event.cpu.utilization_pct,
        event.memory.used_pct,
        event.temperatures[0].celsius,
        [d.used_pct for d in event.disks],
        [g.utilization_pct for g in event.gpus],
    )
