"""The stream evaluator's alert states on hand-made samples, and the rules file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from sysmetrics.alerts.evaluator import HOST_DOWN_MIN_SILENCE_S, Alert, Evaluator, KnownHost
from sysmetrics.alerts.notify import labels, summary
from sysmetrics.alerts.rules import Rule, RulesError, load_rules
from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import Settings
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.lakes import HOUR14, LakeBuilder, event, steady_host

S = timedelta(seconds=10)


def rule(**fields: object) -> Rule:
    base: dict[str, object] = {"name": "HighCpu", "metric": "cpu_pct", "op": ">", "threshold": 90}
    return Rule.model_validate({**base, **fields})


def run(evaluator: Evaluator, cpus: list[float]) -> list[tuple[int, str]]:
    """(sample index, change) for each sample of one host, 10 s apart."""
    out = []
    for i, cpu in enumerate(cpus):
        for change in evaluator.observe(event("h", HOUR14 + i * S, cpu, seq=i), arrived=0.0):
            out.append((i, change.status))
    return out


def test_pending_then_firing_after_for_then_resolved() -> None:
    ev = Evaluator([rule(**{"for": "1m"})])
    cpus = [50, 95, 95, 95, 95, 95, 95, 95, 95, 40, 40]
    assert run(ev, cpus) == [(7, "firing"), (9, "resolved")]  # 60 s after 95 began, at 1


def test_a_spike_shorter_than_for_never_fires() -> None:
    ev = Evaluator([rule(**{"for": "1m"})])
    assert run(ev, [95, 95, 95, 40, 95, 95, 40]) == []
    assert ev.alerts == {}


def test_keep_firing_for_rides_out_a_short_dip() -> None:
    ev = Evaluator([rule(**{"for": "0s", "keep_firing_for": "30s"})])
    # Fires at once; a 20-s dip keeps it; 30 s after the first sample below, it resolves.
    assert run(ev, [95, 40, 40, 95, 40, 40, 40, 40]) == [(0, "firing"), (7, "resolved")]


def test_a_host_without_the_metric_raises_nothing() -> None:
    ev = Evaluator([rule(metric="gpu_temperature_max_celsius", threshold=85, **{"for": "0s"})])
    assert run(ev, [99, 99]) == []  # no GPU: the value is null, never an alert


def test_host_down_by_wall_clock_and_back() -> None:
    ev = Evaluator([Rule(name="HostDown", kind="absent", intervals=3)])
    ev.observe(event("h", HOUR14, 10.0, interval_s=10.0), arrived=1000.0)
    assert ev.check_absent(now=1029.0) == []
    (down,) = ev.check_absent(now=1031.0)  # > 3 intervals of 10 s
    assert (down.status, down.alert.rule, down.alert.host_id) == ("firing", "HostDown", "h")
    assert ev.check_absent(now=1100.0) == []  # paged once
    (back,) = ev.observe(event("h", HOUR14 + 13 * S, 10.0, seq=1), arrived=1101.0)
    assert back.status == "resolved"


def test_a_step_of_the_wall_clock_pages_no_host_and_delays_no_page() -> None:
    """Silences are measured on the monotonic clock (``now``, ``arrived``), so the wall clock
    stepping (NTP, a resumed VM; ``wall``) changes no answer: 10 minutes forward while the
    host reports pages nothing; an hour back as it falls silent still pages it on time, stamped
    with the wall clock's time. (A process test cannot step the evaluator's clock: libfaketime
    breaks librdkafka's timed waits, which are on the wall clock, librdkafka issue #2145.)"""
    ev = Evaluator([Rule(name="HostDown", kind="absent", intervals=3)])
    wall = 1_800_000_000.0
    ev.observe(event("h", HOUR14, 10.0, interval_s=10.0), arrived=1000.0)
    assert ev.check_absent(now=1005.0, wall=wall + 600) == []
    ev.observe(event("h", HOUR14 + 10 * S, 10.0, seq=1, interval_s=10.0), arrived=1010.0)
    assert ev.check_absent(now=1039.0, wall=wall - 3600) == []
    (down,) = ev.check_absent(now=1041.0, wall=wall - 3600)
    assert (down.status, down.alert.fired_at) == (
        "firing",
        datetime.fromtimestamp(wall - 3600, UTC),
    )


def test_a_host_declaring_a_tiny_interval_is_not_paged_between_its_samples() -> None:
    """The schema admits any positive interval; 3 x 1 ms of silence is the pipeline's own
    delay, not a host down: HostDown waits at least HOST_DOWN_MIN_SILENCE_S."""
    ev = Evaluator([Rule(name="HostDown", kind="absent", intervals=3)])
    for n in range(5):
        ev.observe(event("h", HOUR14 + n * S, 10.0, seq=n, interval_s=0.001), arrived=1000.0 + n)
        assert ev.check_absent(now=1000.9 + n) == []  # a sample a second, checked in between
    assert ev.check_absent(now=1004.0 + HOST_DOWN_MIN_SILENCE_S - 0.1) == []
    (down,) = ev.check_absent(now=1004.0 + HOST_DOWN_MIN_SILENCE_S + 0.1)
    assert (down.status, down.alert.host_id) == ("firing", "h")


def test_a_host_down_past_the_forget_time_resolves_and_is_forgotten_across_a_restart() -> None:
    """Taken out of service: paged once, resolved after forget_after_s of being down (the
    alert's firing time survives a restart, so a restarted evaluator still lets it go), and
    paged again only once it reports and falls silent anew."""
    day = 86_400.0
    first = Evaluator([Rule(name="HostDown", kind="absent", intervals=3)], forget_after_s=7 * day)
    first.observe(event("old-db", HOUR14, 10.0, interval_s=10.0), arrived=0.0)
    (down,) = first.check_absent(now=31.0, wall=31.0)
    assert down.status == "firing"
    known = [first.known_host("old-db")]
    saved = [a.from_json(a.to_json()) for a in first.alerts.values()]
    # Restarted 3 days later: the host is known again, its alert restored, nothing re-paged.
    second = Evaluator([Rule(name="HostDown", kind="absent", intervals=3)], forget_after_s=7 * day)
    second.restore(saved, known, now=0.0)
    assert second.check_absent(now=60, wall=3 * day + 60) == []  # a new process's clock
    assert second.check_absent(now=4 * day + 30, wall=7 * day + 30) == []
    (gone,) = second.check_absent(now=4 * day + 31, wall=7 * day + 31)  # 7 days after it fired
    assert (gone.status, gone.alert.host_id) == ("resolved", "old-db")
    assert second.hosts_forgotten == {"old-db"} and "old-db" not in second.seen
    assert second.check_absent(now=27 * day, wall=30 * day) == []  # forgotten: no page


def test_a_retired_host_resolves_its_alerts_and_is_no_longer_expected() -> None:
    """``sysmetrics alert --forget``: every alert of the host resolves at once, it is paged no
    more while silent, and a sample from it makes it known again. Other hosts are untouched;
    an evaluator that does not hold the host does nothing."""
    rules = [Rule(name="HostDown", kind="absent", intervals=3), rule(**{"for": "0s"})]
    ev = Evaluator(rules)
    ev.observe(event("old-db", HOUR14, 95.0, interval_s=10.0), arrived=0.0)  # HighCpu fires
    ev.observe(event("web", HOUR14, 10.0, interval_s=10.0), arrived=0.0)
    (down_db, down_web) = ev.check_absent(now=31.0, wall=31.0)
    assert {down_db.alert.host_id, down_web.alert.host_id} == {"old-db", "web"}
    assert Evaluator(rules).forget("old-db") is None  # not this evaluator's host
    resolved = ev.forget("old-db", wall=40.0)
    assert resolved is not None
    assert sorted((c.status, c.alert.rule) for c in resolved) == [
        ("resolved", "HighCpu"),
        ("resolved", "HostDown"),
    ]
    assert {c.alert.resolved_at for c in resolved} == {datetime.fromtimestamp(40.0, UTC)}
    assert ev.forget("old-db") is None  # done once
    assert ev.check_absent(now=90.0, wall=90.0) == []  # web still down: paged already
    assert [a.host_id for a in ev.alerts.values()] == ["web"]
    ev.observe(event("old-db", HOUR14 + S, 10.0, interval_s=10.0), arrived=100.0)
    (again,) = ev.check_absent(now=131.0, wall=131.0)  # back in service, then silent
    assert (again.status, again.alert.host_id) == ("firing", "old-db")


def test_a_host_retired_at_a_time_is_not_made_known_again_by_an_earlier_sample() -> None:
    """A retirement from ``sysmetrics ingest`` (Prometheus dropped the target) carries its time:
    a sample of the host from before it, read after it (a late shard), is no news and does not
    make the host known again (it would be paged down); a sample after it does. The times are
    kept an hour."""
    ev = Evaluator([Rule(name="HostDown", kind="absent", intervals=3)])
    ev.observe(event("web", HOUR14, 10.0, interval_s=10.0), arrived=0.0)
    wall = (HOUR14 + 3 * S).timestamp()
    assert ev.forget("web", wall=wall, retired_at=HOUR14 + 2 * S) == []
    assert ev.observe(event("web", HOUR14 + S, 10.0, seq=1, interval_s=10.0), arrived=5.0) == []
    assert ev.check_absent(now=100.0, wall=wall + 100) == [], "not known again"
    ev.observe(event("web", HOUR14 + 3 * S, 10.0, seq=2, interval_s=10.0), arrived=100.0)
    (down,) = ev.check_absent(now=131.0, wall=wall + 131)  # back, then silent
    assert (down.status, down.alert.host_id) == ("firing", "web")
    ev.forget("db", wall=wall + 3601, retired_at=HOUR14 + 4 * S)
    assert set(ev.retired) == {"db"}, "web's retirement is an hour old"


def test_a_host_down_carries_the_sender_that_delivered_the_host_across_a_restart() -> None:
    """An ingested host's HostDown carries its sender as a label (a central Prometheus that
    goes down is routed as one group); a threshold alert does not (a host sent by two
    replicas alternates between them, which would make it a new alert each time); nor does a
    host of our collector. A state record leaves out a sender it does not have (evaluators
    from before the field cannot read one that has it) and keeps a newer version's fields
    out of its way."""
    host_down, high_cpu = Rule(name="HostDown", kind="absent", intervals=3), rule(**{"for": "0s"})
    ev = Evaluator([host_down, high_cpu])

    def sent(host_id: str, cpu: float, sender: str | None, n: int = 0) -> None:
        sample = event(host_id, HOUR14 + n * S, cpu, seq=n, interval_s=10.0)
        ev.observe(msgspec.structs.replace(sample, sender=sender), arrived=float(n))

    sent("web-1", 95.0, "prom-eu-1")
    sent("laptop", 10.0, None)
    assert "sender" not in labels(ev.alerts["HighCpu|web-1"], high_cpu)
    ev.hosts_changed.clear()
    sent("web-1", 95.0, "prom-eu-2", n=1)  # the other replica of the pair
    assert ev.hosts_changed == set(), "a sender that alternates writes no state"
    records = [json.loads(json.dumps(ev.known_host(h).to_json())) for h in ("web-1", "laptop")]
    assert records[0]["sender"] == "prom-eu-2" and "sender" not in records[1]

    restarted = Evaluator([host_down, high_cpu])
    restarted.restore([], [KnownHost.from_json({**r, "added_later": 1}) for r in records], now=0)
    down = {c.alert.host_id: c.alert for c in restarted.check_absent(now=31.0, wall=31.0)}
    assert labels(down["web-1"], host_down)["sender"] == "prom-eu-2"
    via = host_down.model_copy(update={"summary": "{host_id} silent (via {sender})"})
    assert summary(down["web-1"], via) == "web-1 silent (via prom-eu-2)"
    assert summary(down["laptop"], via) == "laptop silent (via )"
    assert "sender" not in labels(down["laptop"], host_down)
    saved = json.loads(json.dumps(down["web-1"].to_json()))
    assert Alert.from_json({**saved, "added_later": 1}) == down["web-1"]
    assert "sender" not in down["laptop"].to_json()


def test_restored_state_is_not_paged_again_and_still_resolves() -> None:
    first = Evaluator([rule(**{"for": "0s"})])
    run(first, [95])
    saved = [a.from_json(a.to_json()) for a in first.alerts.values()]
    second = Evaluator([rule(**{"for": "0s"})])
    second.restore(saved)
    assert run(second, [96]) == []  # still firing: no new page
    assert [c.status for c in second.observe(event("h", HOUR14 + S, 10.0, seq=9))] == ["resolved"]


def test_the_default_pack_loads_and_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    names = [r.name for r in load_rules()]
    assert {"HostDown", "HighCpu", "LowMemory", "DiskFull", "GpuHot", "BatteryLow"} <= set(names)
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rule]]\nname = "X"\nmetric = "cpu"\nthreshold = 1\n')
    with pytest.raises(RulesError, match=r"rule X: .*metric 'cpu' is not one of"):
        load_rules(bad)
    bad.write_text('[[rule]]\nname = "X"\nmetric = "cpu_pct"\nthreshold = 1\nfor = "soon"\n')
    with pytest.raises(RulesError, match=r"rule X: for: .*not a duration"):
        load_rules(bad)
    # A comparison with nan never holds (the rule would never fire); a `for` of millions of
    # years made no date (an OverflowError's traceback before 2026-12-05).
    bad.write_text('[[rule]]\nname = "X"\nmetric = "cpu_pct"\nthreshold = nan\n')
    with pytest.raises(RulesError, match=r"rule X: threshold: .*finite number"):
        load_rules(bad)
    bad.write_text(
        '[[rule]]\nname = "X"\nmetric = "cpu_pct"\nthreshold = 1\nfor = "9999999999999999h"\n'
    )
    with pytest.raises(RulesError, match=r"rule X: for: .*longer than a century"):
        load_rules(bad)


def test_hourly_alerts_take_their_thresholds_from_the_rules(settings: Settings) -> None:
    """One source of truth: a rules file with CPU > 70 makes the hourly job alert at 75 %,
    unless SYSMETRICS_ALERT_CPU_P95_PCT says otherwise."""
    rules = settings.data_dir / "rules.toml"
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text('[[rule]]\nname = "HighCpu"\nmetric = "cpu_pct"\nthreshold = 70\n')
    LakeBuilder(Path(settings.lake_url)).add_batch(steady_host("busy", HOUR14, cpu=75.0))

    def cpu_alerts(current: Settings) -> list[str]:
        wh = DuckDBWarehouse(current.warehouse_url)
        try:
            run_hour(current, wh, LakeStore(current.lake_url), HOUR14)
            rows = wh.rows("SELECT rule FROM {alerts} WHERE rule = 'cpu_p95_high'")
        finally:
            wh.close()
        return [r["rule"] for r in rows]

    assert cpu_alerts(settings) == []  # the default pack says 90
    assert cpu_alerts(settings.model_copy(update={"alert_rules": rules})) == ["cpu_p95_high"]
    overridden = Settings(
        **{**settings.model_dump(), "alert_rules": rules, "alert_cpu_p95_pct": 80.0}
    )
    assert cpu_alerts(overridden) == []


def test_hourly_disk_full_and_temperature_high_give_the_streams_answer(settings: Settings) -> None:
    """One answer per rule: the same series through the stream evaluator (default pack:
    DiskFull > 90 for 2m, HighTemperature > 85 for 1m) and the hourly job; the hourly alerts
    name exactly the hours in which the stream alert was firing at a sample. Spikes shorter
    than `for`, runs longer, and runs crossing the hour boundary (firing only after it, or on
    both sides of it)."""
    scenarios: dict[str, tuple[str, range]] = {
        "t-spike": ("temp", range(100, 103)),
        "t-run": ("temp", range(200, 216)),
        "t-cross": ("temp", range(356, 366)),
        "t-long-cross": ("temp", range(348, 373)),
        "d-spike": ("disk", range(200, 211)),
        "d-run": ("disk", range(300, 331)),
        "d-cross": ("disk", range(350, 381)),
    }
    rules = load_rules()
    stream_hours: set[tuple[str, str, datetime]] = set()
    events = []
    for host, (kind, hot) in scenarios.items():
        evaluator = Evaluator(rules)
        for i in range(720):  # 14:00 to 16:00, every 10 s
            e = event(
                host,
                HOUR14 + i * S,
                20.0,
                temp=95.0 if kind == "temp" and i in hot else 50.0,
                disk_pct=95.0 if kind == "disk" and i in hot else 40.0,
                seq=i,
                interval_s=10.0,
            )
            events.append(e)
            evaluator.observe(e, arrived=0.0)
            for alert in evaluator.firing():
                stream_hours.add((host, alert.rule, e.ts.replace(minute=0, second=0)))
    fired = {h for h, _, _ in stream_hours}
    assert fired == {"t-run", "t-cross", "t-long-cross", "d-run", "d-cross"}
    LakeBuilder(Path(settings.lake_url)).add_batch(events)
    wh = DuckDBWarehouse(settings.warehouse_url)
    try:
        for hour in (HOUR14, HOUR14 + timedelta(hours=1)):
            run_hour(settings, wh, LakeStore(settings.lake_url), hour)
        rows = wh.rows(
            "SELECT host_id, rule, hour FROM {alerts} "
            "WHERE rule IN ('disk_full', 'temperature_high')"
        )
    finally:
        wh.close()
    stream_name = {"temperature_high": "HighTemperature", "disk_full": "DiskFull"}
    hourly = {(r["host_id"], stream_name[r["rule"]], r["hour"]) for r in rows}
    assert hourly == stream_hours
    assert ("t-long-cross", "HighTemperature", HOUR14) in hourly  # firing on both sides
    assert ("t-cross", "HighTemperature", HOUR14) not in hourly  # it fired after 15:00
