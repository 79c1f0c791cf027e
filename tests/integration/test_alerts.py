"""`sysmetrics alert` end to end: samples through a real broker, the evaluator, Debian's real
Alertmanager, and a webhook receiver behind it (the way an administrator gets paged)."""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from starlette.testclient import TestClient

from sysmetrics.alerts.evaluator import Evaluator, KnownHost
from sysmetrics.alerts.rules import load_rules
from sysmetrics.alerts.service import (
    AlertService,
    ensure_state_topic,
    read_known_hosts,
    read_state_records,
)
from sysmetrics.config import Settings
from sysmetrics.dashboard.app import create_app
from sysmetrics.stream.admin import ensure_topic
from sysmetrics.stream.kafka_config import producer_config
from tests.conftest import settings_for
from tests.support.alertmanager import ALERTMANAGER, MISSING, Receiver, alertmanager
from tests.support.brokers import TestBroker
from tests.support.events import as_messages
from tests.support.kafka_io import SYSMETRICS, produce
from tests.support.lake import listed_retirements
from tests.support.lakes import event
from tests.support.ports import free_port
from tests.support.scrape import metric
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(ALERTMANAGER is None, reason=MISSING)


@pytest.fixture
def paging(tmp_path: Path) -> Iterator[tuple[str, Receiver]]:
    with alertmanager(tmp_path) as paged:
        yield paged


def test_cpu_above_90_for_6_minutes_pages_once_and_resolves_once(
    tansu_settings: Settings, paging: tuple[str, Receiver], tmp_path: Path
) -> None:
    url, receiver = paging
    settings = tansu_settings.model_copy(
        update={
            "alertmanager_url": url,
            "alert_state_topic": f"{tansu_settings.topic}-alert-state",
            "alert_consumer_group": f"{tansu_settings.consumer_group}-alerts",
        }
    )
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    hot = [event("db-1", start + timedelta(seconds=10 * i), 96.0, seq=i) for i in range(37)]
    cool = [event("db-1", start + timedelta(seconds=10 * i), 20.0, seq=i) for i in range(37, 49)]
    poison = [(b"db-1", b"not json"), (b"db-1", b'{"schema_version": 1}')]
    produce(settings, [*poison, *as_messages(hot)])
    service = AlertService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        # 6 minutes of event time above 90 % (the rule's `for` is 5 m): one page...
        wait_for(lambda: "firing" in receiver.statuses("HighCpu"), 60, "the firing page")
        # The dashboard's "firing now" view shows it, seconds old, linked to its host.
        web = TestClient(create_app(settings))
        wait_for(lambda: "HighCpu" in web.get("/alerts").text, 10, "the live view")
        live = web.get("/alerts").text
        assert 'href="/host?id=db-1"' in live and "CPU at 96 %" in live
        # A dashboard on another machine (its own data dir) shows it from the state topic.
        elsewhere = settings.model_copy(update={"data_dir": tmp_path / "another-machine"})
        with TestClient(create_app(elsewhere)) as remote:
            wait_for(lambda: "CPU at 96 %" in remote.get("/alerts").text, 30, "the topic view")
            view = remote.get("/alerts").text
        assert "from the state topic" in view and 'href="/host?id=db-1"' in view
        # ...and when the CPU drops, one resolved notification.
        produce(settings, as_messages(cool))
        wait_for(lambda: "resolved" in receiver.statuses("HighCpu"), 60, "the resolve")
    finally:
        service.stop.set()
        thread.join(30)
    assert receiver.statuses("HighCpu") == ["firing", "resolved"]
    assert service.stats.skipped == 2 and service.stats.events == len(hot) + len(cool)
    first = next(n for n in receiver.notifications if n["status"] == "firing")
    alert = first["alerts"][0]
    assert alert["labels"]["host_id"] == "db-1" and alert["labels"]["severity"] == "warning"
    assert "CPU at 96 % on db-1.example" in alert["annotations"]["summary"]
    # Firing from the sample where it had held for 5 minutes (event time), as Prometheus.
    assert alert["startsAt"].startswith((start + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M"))


def test_kill_9_while_firing_loses_no_resolve(
    tansu_settings: Settings, paging: tuple[str, Receiver], tmp_path: Path
) -> None:
    """The evaluator is killed while an alert fires; the next one reads the state topic and
    sends the resolve when the CPU drops (without it, Alertmanager would only time the alert
    out minutes later)."""
    url, receiver = paging
    env = {
        **os.environ,
        "SYSMETRICS_BOOTSTRAP_SERVERS": tansu_settings.bootstrap_servers,
        "SYSMETRICS_TOPIC": tansu_settings.topic,
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_ALERTMANAGER_URL": url,
        "SYSMETRICS_ALERT_STATE_TOPIC": f"{tansu_settings.topic}-state",
        "SYSMETRICS_ALERT_CONSUMER_GROUP": f"{tansu_settings.topic}-alerts",
    }
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    hot = [event("web-7", start + timedelta(seconds=10 * i), 97.0, seq=i) for i in range(40)]
    produce(tansu_settings, as_messages(hot))
    first = subprocess.Popen([SYSMETRICS, "alert"], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "firing" in receiver.statuses("HighCpu"), 60, "the firing page")
        time.sleep(2)  # past a commit: the state is in the topic
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    cool = [event("web-7", start + timedelta(seconds=10 * i), 15.0, seq=i) for i in range(40, 46)]
    produce(tansu_settings, as_messages(cool))
    second = subprocess.Popen([SYSMETRICS, "alert"], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "resolved" in receiver.statuses("HighCpu"), 40, "the resolve")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert receiver.statuses("HighCpu") == ["firing", "resolved"]


HIGH_CPU_ONLY = """
[[rule]]
name = "HighCpu"
metric = "cpu_pct"
op = ">"
threshold = 90
for = "5m"
"""


def evaluator_env(
    settings: Settings, tmp_path: Path, webhook: str, rules_text: str = HIGH_CPU_ONLY
) -> dict[str, str]:
    rules = tmp_path / "rules.toml"
    rules.write_text(rules_text)
    return {
        **os.environ,
        "SYSMETRICS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "SYSMETRICS_TOPIC": settings.topic,
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_ALERT_RULES": str(rules),
        "SYSMETRICS_ALERT_WEBHOOK_URL": webhook,
        "SYSMETRICS_ALERT_RESEND_S": "3600",
        "SYSMETRICS_METRICS_PORT": "0",
        "SYSMETRICS_ALERT_STATE_TOPIC": f"{settings.topic}-state",
        "SYSMETRICS_ALERT_CONSUMER_GROUP": f"{settings.topic}-alerts",
    }


def webhook_and_env(
    settings: Settings, tmp_path: Path, rules_text: str
) -> tuple[Receiver, dict[str, str]]:
    """A webhook receiver serving, and the environment of evaluators that page it."""
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    webhook = f"http://127.0.0.1:{receiver.server_port}/"
    return receiver, evaluator_env(settings, tmp_path, webhook, rules_text)


def pages(receiver: Receiver) -> dict[str, dict[str, set[str]]]:
    """Per host: the distinct startsAt of its firing and of its resolved notifications (a
    re-send has its alert's startsAt; a duplicate "new" page would have another)."""
    out: dict[str, dict[str, set[str]]] = {}
    for notification in receiver.notifications:
        for a in notification["alerts"]:
            host = out.setdefault(a["labels"]["host_id"], {"firing": set(), "resolved": set()})
            host[a["status"]].add(a["startsAt"])
    return out


def test_kill_9_while_pending_and_a_rebalance_onto_a_second_evaluator(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """Six hosts hot for 3 minutes: pending. The evaluator is killed; two start in its group
    and split the partitions; the pending alerts fire at 5 minutes of event time, once each.
    One of the two is killed: the other takes its partitions and sends every resolve."""
    receiver, env = webhook_and_env(tansu_settings, tmp_path, HIGH_CPU_ONLY)
    settings = tansu_settings.model_copy(
        update={"alert_state_topic": env["SYSMETRICS_ALERT_STATE_TOPIC"]}
    )
    hosts = [f"rack-{n}" for n in range(6)]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)

    def samples(first: int, last: int, cpu: float) -> list[tuple[bytes | None, bytes | None]]:
        return as_messages(
            [
                event(h, start + timedelta(seconds=10 * i), cpu, seq=i)
                for i in range(first, last)
                for h in hosts
            ]
        )

    def spawn(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        return subprocess.Popen(
            [SYSMETRICS, "alert"], env=env, stdout=subprocess.DEVNULL, stderr=log
        )

    def assigned(name: str) -> bool:
        return "assigned" in (tmp_path / f"{name}.log").read_text()

    from sysmetrics.alerts.service import read_state

    produce(tansu_settings, samples(0, 18, 97.0))  # 3 minutes: pending, `for` is 5
    first = spawn("first")
    try:
        wait_for(
            lambda: len([a for a in read_state(settings, 20) if a.state == "pending"]) == 6,
            90,
            "six pending alerts in the state topic",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert receiver.notifications == []
    second, third = spawn("second"), spawn("third")
    try:
        wait_for(lambda: assigned("second") and assigned("third"), 60, "both to get partitions")
        produce(tansu_settings, samples(18, 42, 97.0))  # 4 more minutes: fires at 5
        wait_for(
            lambda: all(pages(receiver).get(h, {}).get("firing") for h in hosts),
            60,
            "every host's page",
        )
        second.send_signal(signal.SIGKILL)
        second.wait(10)
        produce(tansu_settings, samples(42, 48, 10.0))
        wait_for(lambda: all(pages(receiver)[h]["resolved"] for h in hosts), 90, "every resolve")
    finally:
        for process in (second, third):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
        receiver.shutdown()
    fired_at = (start + timedelta(minutes=5)).isoformat()
    for host in hosts:
        # One page per host, from the sample 5 minutes after the pending began before the
        # kill (a lost pending would restart `for`), and one resolve.
        assert pages(receiver)[host] == {"firing": {fired_at}, "resolved": {fired_at}}, host
    # Both evaluators owned partitions, and the survivor took the killed one's over.
    assert (tmp_path / "third.log").read_text().count("assigned") >= 2


def test_a_receiver_down_for_2_minutes_delays_notifications_never_drops_them(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    # Down: its port refuses connections, and no other test can take it in the 2 minutes.
    receiver = Receiver(listening=False)
    serving = threading.Thread(target=receiver.serve_forever, daemon=True)
    env = evaluator_env(tansu_settings, tmp_path, f"http://127.0.0.1:{receiver.server_port}/")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    hot = [event("db-9", start + timedelta(seconds=10 * i), 95.0, seq=i) for i in range(37)]
    produce(tansu_settings, as_messages(hot))
    log = tmp_path / "alert.log"
    process = subprocess.Popen(
        [SYSMETRICS, "alert"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )
    try:
        time.sleep(60)
        cool = [event("db-9", start + timedelta(seconds=10 * i), 5.0, seq=i) for i in range(37, 40)]
        produce(tansu_settings, as_messages(cool))  # fired and resolved while nobody listens
        time.sleep(60)
        assert process.poll() is None
        receiver.server_activate()
        serving.start()
        wait_for(
            lambda: "resolved" in receiver.statuses("HighCpu"), 30, "the delayed notifications"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        if serving.is_alive():
            receiver.shutdown()
        receiver.server_close()
    assert receiver.statuses("HighCpu") == ["firing", "resolved"]
    assert "alert receiver unreachable" in log.read_text()


def test_a_full_disk_does_not_stop_the_paging(tansu_settings: Settings, tmp_path: Path) -> None:
    """The evaluator's files may not grow (a real RLIMIT_FSIZE on its process, as on a full
    disk): it goes on and pages, and says once that the dashboard's live state is not written.
    (Before, the first rewrite of that state raised and the evaluator exited.)"""
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = evaluator_env(tansu_settings, tmp_path, f"http://127.0.0.1:{receiver.server_port}/")
    process = subprocess.Popen(
        [SYSMETRICS, "alert"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        status = tmp_path / "data" / "status"
        wait_for(lambda: any(status.glob("alerts-firing.*.json")), 30, "the live state")
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
        hot = [event("db-7", start + timedelta(seconds=10 * i), 95.0, seq=i) for i in range(37)]
        produce(tansu_settings, as_messages(hot))
        wait_for(lambda: "firing" in receiver.statuses("HighCpu"), 60, "the page")
        time.sleep(3)
        assert process.poll() is None, "the evaluator must go on"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        receiver.shutdown()
    assert process.returncode == 0, err
    assert err.count("cannot write the dashboard's live alert state") == 1, err
    assert not list(status.glob(".*.tmp")), "no half-written file left behind"


def test_a_host_that_stops_sending_is_down_within_3_intervals_and_back_when_it_returns(
    tansu_settings: Settings,
) -> None:
    """The default pack's HostDown: a host sampling every 2 s goes quiet; the page comes
    within 3 intervals + 10 s of its last sample, the resolve when it reports again."""
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    settings = tansu_settings.model_copy(
        update={
            "alert_webhook_url": f"http://127.0.0.1:{receiver.server_port}/",
            "alert_state_topic": f"{tansu_settings.topic}-state",
            "alert_consumer_group": f"{tansu_settings.topic}-alerts",
        }
    )
    service = AlertService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    seq = 0

    def report(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            now = datetime.now(UTC)
            produce(settings, as_messages([event("edge-4", now, 20.0, seq=seq, interval_s=2.0)]))
            seq += 1
            time.sleep(2.0)

    try:
        report(8)  # alive, seen by the evaluator
        wait_for(lambda: service.stats.events >= 8, 30, "the samples to be evaluated")
        assert receiver.statuses("HostDown") == []
        silent_since = time.monotonic() - 2.0  # report() slept one interval after the last
        wait_for(
            lambda: receiver.statuses("HostDown") == ["firing"],
            3 * 2.0 + 10.0 - (time.monotonic() - silent_since),
            "the host-down page within 3 intervals + 10 s",
        )
        report(1)
        wait_for(lambda: "resolved" in receiver.statuses("HostDown"), 30, "the resolve")
    finally:
        service.stop.set()
        thread.join(30)
        receiver.shutdown()
    assert receiver.statuses("HostDown") == ["firing", "resolved"]


def test_an_evaluator_paused_past_its_session_pages_no_host_down_and_nothing_twice(
    apache_kafka_broker: TestBroker, tmp_path: Path
) -> None:
    """Two evaluators share twelve hosts sampling every second; one is stopped (SIGSTOP: a
    paused VM, swapping) for 20 s, past its 6-s session and the hosts' 5-s HostDown window,
    while the other takes its partitions over and keeps hearing every host. Resumed, the
    zombie must not page its former hosts down (nor save their state), nor may the other page
    its own while the rebalances hold its polls: no host was down. Before 2026-12-03 the woken
    evaluator checked for silence before it learnt of its fencing and paged the five hosts it
    had held; and, fixed with it, the other paged its seven in 2 of 3 runs (two takeovers that
    read the state topic held it ~4 s). On 2026-12-04 a CI run paged seven hosts down, none
    resolved: the two partitions the zombie had held. Stopped in its due work between two
    polls, not in a poll, its stall went uncounted (test_consumer_runtime's stall test). The
    hosts run hot during the pause: each is paged once and resolved once, by the new owner
    (the woken zombie declares its partitions lost before it takes a message: librdkafka
    checks the session on its own clock). Apache Kafka only, as the lake writer's pause test
    (README, Known limitations)."""
    settings = settings_for(apache_kafka_broker, tmp_path)
    receiver, env = webhook_and_env(settings, tmp_path, HOST_DOWN_ONLY + HIGH_CPU_AT_ONCE)
    hosts = [f"node-{n}" for n in range(12)]
    sending, hot = threading.Event(), threading.Event()
    sending.set()

    def feed() -> None:
        seq = 0
        while sending.is_set():
            now, cpu = datetime.now(UTC), 95.0 if hot.is_set() else 20.0
            produce(
                settings, as_messages([event(h, now, cpu, seq=seq, interval_s=1.0) for h in hosts])
            )
            seq += 1
            time.sleep(1.0)

    def spawn(name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("wb") as log:
            return subprocess.Popen([SYSMETRICS, "alert"], env=env, stdout=log, stderr=log)

    def log_of(name: str) -> str:
        return (tmp_path / f"{name}.log").read_text()

    feeder = threading.Thread(target=feed)
    feeder.start()
    evaluators = {"steady": spawn("steady"), "paused": spawn("paused")}
    try:
        wait_for(
            lambda: all("assigned partitions [" in log_of(n) for n in evaluators),
            60,
            "both evaluators to own partitions",
        )
        time.sleep(5)
        evaluators["paused"].send_signal(signal.SIGSTOP)
        hot.set()
        time.sleep(20)
        evaluators["paused"].send_signal(signal.SIGCONT)
        time.sleep(5)
        hot.clear()
        wait_for(
            lambda: receiver.statuses("HighCpu").count("resolved") >= len(hosts),
            60,  # 30 s ran out once in a CI on 2 busy cores (2026-12-05)
            "every host's resolve",
        )
        time.sleep(3)  # past the zombie's settling: what it would send, it has sent
    finally:
        evaluators["paused"].send_signal(signal.SIGCONT)
        for process in evaluators.values():
            process.send_signal(signal.SIGTERM)
        for process in evaluators.values():
            process.wait(30)
        sending.clear()
        feeder.join(30)
        receiver.shutdown()
    assert receiver.statuses("HostDown") == [], receiver.notifications
    paged = {
        h: [
            a["status"]
            for n in receiver.notifications
            for a in n["alerts"]
            if a["labels"]["host_id"] == h
        ]
        for h in hosts
    }
    assert paged == {h: ["firing", "resolved"] for h in hosts}, paged
    assert "lost (this member was fenced)" in log_of("paused"), log_of("paused")[-3000:]
    from sysmetrics.alerts.service import read_state

    state = settings.model_copy(update={"alert_state_topic": env["SYSMETRICS_ALERT_STATE_TOPIC"]})
    assert read_state(state, 30) == []


def test_a_broker_outage_pages_no_host_down_but_the_one_that_did_not_come_back(
    restartable_broker: TestBroker, tmp_path: Path
) -> None:
    """Kafka down for 30 s: the evaluator hears no host for over three times their 9-s window
    (a sample every 3 s), yet none is down: it must not page the fleet (a page per host for
    one broker). It takes its partitions back, with the hosts known from the state topic, once
    the broker answers again: so the one host that does not come back is still paged, and no
    other. Before 2026-12-03, on Tansu, every host was paged a window into the outage."""
    settings = settings_for(restartable_broker, tmp_path)
    receiver, env = webhook_and_env(settings, tmp_path, HOST_DOWN_ONLY)
    hosts = [f"edge-{n}" for n in range(6)]
    sending, feeding = set(hosts), threading.Lock()
    running = threading.Event()
    running.set()

    def feed() -> None:  # the hosts' collectors (they would spool while the broker is down)
        seq = 0
        while running.is_set():
            with feeding:
                now = datetime.now(UTC)
                samples = [event(h, now, 20.0, seq=seq, interval_s=3.0) for h in sorted(sending)]
                if samples:
                    produce(settings, as_messages(samples))
                seq += 1
            time.sleep(3.0)

    log = tmp_path / "alert.log"
    port = free_port()
    env["SYSMETRICS_METRICS_PORT"] = str(port)
    answering: list[float | None] = []  # the evaluator's gauge during the outage
    dashboard = TestClient(create_app(settings))  # beside the evaluator: its data dir
    unheard: list[str] = []  # what its dashboard says then
    feeder = threading.Thread(target=feed)
    feeder.start()
    with log.open("wb") as out:
        evaluator = subprocess.Popen([SYSMETRICS, "alert"], env=env, stdout=out, stderr=out)
    try:
        wait_for(lambda: "assigned partitions [" in log.read_text(), 60, "the evaluator's join")
        time.sleep(6)
        with feeding:
            sending.clear()
        restartable_broker.stop()
        outage_ends = time.monotonic() + 30
        while time.monotonic() < outage_ends:
            answering.append(metric(port, "sysmetrics_alert_brokers_answering"))
            unheard.extend(re.findall(r'id="unheard">([^<]*)<', dashboard.get("/alerts").text))
            time.sleep(0.5)
        restartable_broker.start()
        with feeding:
            sending.update(hosts[:-1])  # edge-5 stays down
        wait_for(lambda: receiver.statuses("HostDown"), 60, "edge-5's page")
        time.sleep(5)
    finally:
        evaluator.send_signal(signal.SIGTERM)
        evaluator.wait(60)
        running.clear()
        feeder.join(60)
        receiver.shutdown()
    paged = [
        (a["labels"]["host_id"], a["status"]) for n in receiver.notifications for a in n["alerts"]
    ]
    assert paged == [("edge-5", "firing")], log.read_text()[-3000:]
    # What to page on instead: the evaluator's gauge says it cannot hear its brokers, and the
    # dashboard's "firing now" says so, with how long.
    assert 0.0 in answering, answering
    assert any(
        re.fullmatch(r"the alert evaluator has not heard from Kafka for (1\d|2\d) s: .*", u)
        for u in unheard
    ), unheard


def state_records_refused(settings: Settings, refused: bool) -> None:
    """The broker refuses every record of the alert state topic (each larger than its
    ``max.message.bytes``), or takes them again."""
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    operation = AlterConfigOpType.SET if refused else AlterConfigOpType.DELETE
    entry = ConfigEntry("max.message.bytes", "64", incremental_operation=operation)
    topic = ConfigResource(
        ResourceType.TOPIC, settings.alert_state_topic, incremental_configs=[entry]
    )
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    for future in admin.incremental_alter_configs([topic]).values():
        future.result(30)


def test_state_the_broker_refuses_holds_the_offsets_back(
    apache_kafka_broker: TestBroker, tmp_path: Path
) -> None:
    """State first, offsets after: while the broker refuses the state records, the evaluator
    pages as usual but commits nothing, so after a kill -9 the next one reads the samples
    again and rebuilds what was not saved. A host hot for 3 minutes (pending, saved); the
    state topic then refuses records; it stays hot until it fires; kill -9; the topic takes
    records again; the host cools: one page, and its resolve. Before 2026-12-03 the refusal
    went unseen and the offsets were committed: the next evaluator restored the pending alert,
    never learnt of the page, and sent no resolve."""
    settings = settings_for(apache_kafka_broker, tmp_path)
    receiver, env = webhook_and_env(settings, tmp_path, HIGH_CPU_ONLY)
    settings = settings.model_copy(
        update={"alert_state_topic": env["SYSMETRICS_ALERT_STATE_TOPIC"]}
    )
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)

    def samples(first: int, last: int, cpu: float) -> list[tuple[bytes | None, bytes | None]]:
        return as_messages(
            [
                event("db-9", start + timedelta(seconds=10 * i), cpu, seq=i)
                for i in range(first, last)
            ]
        )

    def spawn(name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("wb") as log:
            return subprocess.Popen([SYSMETRICS, "alert"], env=env, stdout=log, stderr=log)

    from sysmetrics.alerts.service import read_state

    produce(settings, samples(0, 18, 97.0))  # 3 minutes: pending, `for` is 5
    first = spawn("first")
    try:
        wait_for(lambda: len(read_state(settings, 20)) == 1, 90, "the pending alert saved")
        state_records_refused(settings, True)
        produce(settings, samples(18, 36, 97.0))  # fires at 5 minutes: that state is refused
        wait_for(lambda: receiver.statuses("HighCpu") == ["firing"], 60, "the page")
        time.sleep(3)  # past a commit
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        state_records_refused(settings, False)
    produce(settings, samples(36, 42, 10.0))
    second = spawn("second")
    try:
        wait_for(lambda: "resolved" in receiver.statuses("HighCpu"), 60, "the resolve")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        receiver.shutdown()
    fired_at = (start + timedelta(minutes=5)).isoformat()
    assert pages(receiver)["db-9"] == {"firing": {fired_at}, "resolved": {fired_at}}
    refused = (tmp_path / "first.log").read_text()
    assert "cannot save the alert state" in refused and "not committed" in refused, refused


KEEP_FIRING = """
[[rule]]
name = "HighCpu"
metric = "cpu_pct"
op = ">"
threshold = 90
for = "1m"
keep_firing_for = "3m"
"""


def test_kill_9_inside_keep_firing_for_resolves_when_it_would_have_without_the_crash(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """Hot for 2 minutes (fires at 1), then cool: the alert rides out keep_firing_for (3 m)
    from the first cool sample. The evaluator is killed one minute into that window; the next
    one must resolve at the same sample as an evaluator that never crashed (the window's start
    is saved with the state), not 3 minutes after its own first sample."""
    receiver, env = webhook_and_env(tansu_settings, tmp_path, KEEP_FIRING)
    settings = tansu_settings.model_copy(
        update={"alert_state_topic": env["SYSMETRICS_ALERT_STATE_TOPIC"]}
    )
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    samples = [
        event("db-9", start + timedelta(seconds=10 * i), 97.0 if i < 12 else 10.0, seq=i)
        for i in range(40)
    ]
    # The same series through an evaluator that never crashes.
    uninterrupted = Evaluator(load_rules(tmp_path / "rules.toml"), 10.0)
    resolves = [
        c.alert.resolved_at
        for s in samples
        for c in uninterrupted.observe(s)
        if c.status == "resolved"
    ]
    assert resolves == [samples[12].ts + timedelta(minutes=3)]

    from sysmetrics.alerts.service import read_state

    produce(tansu_settings, as_messages(samples[:18]))  # fired; 1 minute into the window
    log = tmp_path / "first.log"
    first = subprocess.Popen(
        [SYSMETRICS, "alert"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )
    try:
        wait_for(
            lambda: any(a.keep_firing_since for a in read_state(settings, 20)),
            90,
            "the keep_firing_for window in the state topic",
        )
        time.sleep(3)  # past a commit: the window's samples are not read again
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert pages(receiver)["db-9"]["firing"] and not pages(receiver)["db-9"]["resolved"]
    produce(tansu_settings, as_messages(samples[18:]))
    second = subprocess.Popen(
        [SYSMETRICS, "alert"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: pages(receiver)["db-9"]["resolved"], 90, "the resolve")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        receiver.shutdown()
    ends = [
        a["endsAt"]
        for n in receiver.notifications
        for a in n["alerts"]
        if a["status"] == "resolved"
    ]
    assert ends == [resolves[0].isoformat()]


HIGH_CPU_AT_ONCE = """
[[rule]]
name = "HighCpu"
metric = "cpu_pct"
op = ">"
threshold = 90
"""

HOST_DOWN_ONLY = """
[[rule]]
name = "HostDown"
kind = "absent"
intervals = 3
severity = "critical"
summary = "{hostname} has sent no sample for {intervals} intervals"
"""


def test_a_host_that_went_silent_while_no_evaluator_ran_is_still_paged(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """The evaluator that knew the host is killed; the host stops sending; the next evaluator
    has no sample of it, but knows it from the state topic and pages it down."""
    receiver, env = webhook_and_env(tansu_settings, tmp_path, HOST_DOWN_ONLY)
    settings = tansu_settings.model_copy(
        update={"alert_state_topic": env["SYSMETRICS_ALERT_STATE_TOPIC"]}
    )
    from sysmetrics.alerts.service import read_known_hosts, read_state_records

    alive = threading.Event()
    alive.set()

    def report() -> None:  # a sample every 2 s while the host is alive
        seq = 0
        while alive.is_set():
            now = datetime.now(UTC)
            produce(settings, as_messages([event("edge-7", now, 20.0, seq=seq, interval_s=2.0)]))
            seq += 1
            time.sleep(2.0)

    reporter = threading.Thread(target=report)
    first = subprocess.Popen(
        [SYSMETRICS, "alert"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    reporter.start()
    try:
        wait_for(
            lambda: any(
                h.host_id == "edge-7" for h in read_known_hosts(read_state_records(settings, 20))
            ),
            60,
            "the host in the state topic",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        alive.clear()  # the host falls silent
        reporter.join(10)
    assert receiver.statuses("HostDown") == []
    time.sleep(8)  # silent for 3 intervals while no evaluator runs
    second = subprocess.Popen(
        [SYSMETRICS, "alert"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: receiver.statuses("HostDown") == ["firing"], 60, "the host-down page")
        produce(settings, as_messages([event("edge-7", datetime.now(UTC), 20.0, seq=99)]))
        wait_for(lambda: "resolved" in receiver.statuses("HostDown"), 60, "the resolve")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        receiver.shutdown()
    assert receiver.statuses("HostDown") == ["firing", "resolved"]


def _sample_then_fall_silent(settings: Settings, hosts: list[str]) -> None:
    """The hosts sample every 2 s three times, then fall silent."""
    for seq in range(3):
        now = datetime.now(UTC)
        produce(
            settings, as_messages([event(h, now, 20.0, seq=seq, interval_s=2.0) for h in hosts])
        )
        time.sleep(2.0)


def _evaluators(env: dict[str, str], log: Path) -> Callable[[], subprocess.Popen[bytes]]:
    """Starts `sysmetrics alert` processes of this environment, logging to ``log``."""

    def evaluator() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen([SYSMETRICS, "alert"], env=env, stdout=out, stderr=out)

    return evaluator


def test_a_retired_host_is_resolved_at_once_and_not_paged_after_a_restart(
    broker_settings: Settings, tmp_path: Path
) -> None:
    """A machine taken out of service pages HostDown; `sysmetrics alert --forget` resolves
    it within seconds through the running evaluator, and the next evaluator (after a restart)
    does not page it again. The other silent host is untouched: it stays paged down, once.
    Before 2026-12-03 the retired host stayed paged for 7 days
    (SYSMETRICS_ALERT_FORGET_HOST_DAYS)."""
    receiver, env = webhook_and_env(broker_settings, tmp_path, HOST_DOWN_ONLY)
    settings = broker_settings.model_copy(
        update={"alert_state_topic": env["SYSMETRICS_ALERT_STATE_TOPIC"]}
    )
    from sysmetrics.alerts.service import read_known_hosts, read_state_records

    _sample_then_fall_silent(settings, ["old-db", "web"])
    log = tmp_path / "alert.log"
    evaluator = _evaluators(env, log)
    first = evaluator()
    try:
        wait_for(lambda: len(pages(receiver)) == 2, 60, "both hosts paged down")
        unknown = subprocess.run(
            [SYSMETRICS, "alert", "--forget", "old-db", "--forget", "no-such-host"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        wait_for(lambda: pages(receiver)["old-db"]["resolved"], 30, "old-db's resolve")
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)
    assert unknown.returncode == 1, unknown.stderr
    assert unknown.stdout == (
        "old-db: forgotten with its alerts (HostDown), resolved by the evaluator; "
        "paged again only if it reports again\n"
    )
    assert "no evaluator knows no-such-host" in unknown.stderr
    records = read_state_records(settings, 20)
    assert [h.host_id for h in read_known_hosts(records)] == ["web"]
    assert [v["host_id"] for k, v in records.items() if v and not k.startswith("@")] == ["web"]
    second = evaluator()  # restored from the state topic: web only
    try:
        time.sleep(15)  # past the 6-s window on the new process's clock
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        receiver.shutdown()
    # A restored firing alert may be re-sent (its startsAt): a new page would have another.
    distinct = {h: (len(p["firing"]), len(p["resolved"])) for h, p in pages(receiver).items()}
    assert distinct == {"old-db": (1, 1), "web": (1, 0)}, log.read_text()[-3000:]
    # The hourly job is told too (no host_silent for old-db): a retirement on the metrics
    # topic, which the lake writer lists in its round manifest.
    lake = tmp_path / "lake"
    subprocess.run(
        [SYSMETRICS, "consume", "--idle-exit", "6"],
        env={**env, "SYSMETRICS_LAKE_URL": str(lake)},
        check=True,
        capture_output=True,
        timeout=180,
    )
    assert listed_retirements(lake, settings.topic) == ["old-db"]


def test_a_host_retired_while_no_evaluator_runs_is_resolved_by_the_command(
    broker_settings: Settings, tmp_path: Path
) -> None:
    """A host paged down, then the evaluator stopped (crashed, being upgraded): `sysmetrics
    alert --forget` deletes the alert from the state topic, so no evaluator will ever resolve
    it; with none in the evaluators' group, the command sends the resolve itself, and the
    next evaluator neither pages the host nor resolves it twice. Before 2026-12-05 the command
    said "resolved by the evaluator" and nothing resolved it (a webhook never heard of it;
    Alertmanager ends an alert four resend intervals after its last send)."""
    receiver, env = webhook_and_env(broker_settings, tmp_path, HOST_DOWN_ONLY)
    _sample_then_fall_silent(broker_settings, ["old-db"])
    log = tmp_path / "alert.log"
    evaluator = _evaluators(env, log)
    first = evaluator()
    try:
        wait_for(lambda: "old-db" in pages(receiver), 60, "old-db paged down")
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0, log.read_text()[-3000:]
    forget = subprocess.run(
        [SYSMETRICS, "alert", "--forget", "old-db"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert forget.returncode == 0, forget.stderr
    assert forget.stdout == (
        "old-db: forgotten with its alerts (HostDown), resolved (no evaluator runs: sent from "
        "here); paged again only if it reports again\n"
    )
    paged = pages(receiver)["old-db"]
    assert len(paged["firing"]) == 1 and paged["resolved"] == paged["firing"], paged
    second = evaluator()
    try:
        time.sleep(12)  # past the 6-s window on the new process's clock
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        receiver.shutdown()
    assert pages(receiver) == {"old-db": paged}
    assert len(receiver.notifications) == 2, receiver.notifications


def two_pipelines(settings: Settings, state_topic: str) -> tuple[Settings, Settings]:
    """Two pipelines on one broker: a metrics topic and an evaluators' group each (the second
    topic created), one shared alert state topic."""
    first = settings.model_copy(
        update={"alert_state_topic": state_topic, "alert_consumer_group": f"{state_topic}-a"}
    )
    second = first.model_copy(
        update={"topic": f"{settings.topic}-b", "alert_consumer_group": f"{state_topic}-b"}
    )
    ensure_topic(second)
    return first, second


def test_two_pipelines_sharing_the_state_topic_restore_only_their_own_hosts(
    tansu_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Two pipelines on one cluster, each with its own metrics topic, share the evaluators'
    state topic unless told otherwise. Before 2026-12-06 each evaluator restored the other's
    hosts, which never sample on its topic, and paged them down. Each now restores its own,
    and the shared state topic is named once, with the settings that part them."""
    shared = f"{tansu_settings.topic}-shared-state"
    first, second = two_pipelines(tansu_settings, shared)
    now = datetime.now(UTC).replace(microsecond=0)
    for settings, host in ((first, "fleet-a-1"), (second, "fleet-b-1")):
        samples = [event(host, now - timedelta(seconds=10 * i), 20.0, seq=i) for i in range(3)]
        produce(settings, as_messages(samples))
        service = AlertService(settings)
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        try:
            wait_for(
                lambda h=host, s=settings: KnownHost.key_of(h) in read_state_records(s, 20),
                60,
                f"{host} saved in the state topic",
            )
        finally:
            service.stop.set()
            thread.join(30)
    with caplog.at_level(logging.WARNING, logger="sysmetrics.alerts.service"):
        records = read_state_records(first, 20)
    assert [h.host_id for h in read_known_hosts(records)] == ["fleet-a-1"]
    said = [r.getMessage() for r in caplog.records]
    assert any(
        f"alert state topic {shared} also holds the state of the evaluators of {second.topic}"
        in line
        and "SYSMETRICS_ALERT_STATE_TOPIC" in line
        for line in said
    ), said
    restored = AlertService(first)  # as a member given every partition of its topic
    restored.assigned(list(range(first.topic_partitions)))
    assert set(restored.evaluator.seen) == {"fleet-a-1"}


def test_after_the_upgrade_each_pipeline_keeps_its_hosts_of_the_old_unnamed_records(
    tansu_settings: Settings,
) -> None:
    """Records written before they named their topic are read by both pipelines' evaluators,
    so each restores the other's hosts once more at the upgrade (and the first, upgraded
    early, pages the second's host down, as before). Each then saves its own hosts again,
    naming its topic, at their first sample, and lets the other's go when it sees them saved
    by the other pipeline, deleting the page it saved: the next restore is clean."""
    shared = f"{tansu_settings.topic}-old-state"
    first, second = two_pipelines(tansu_settings, shared)
    ensure_state_topic(first)
    old = Producer(producer_config(first))
    for host in ("fleet-a-1", "fleet-b-1"):  # as an evaluator from before 2026-12-06 wrote them
        record = KnownHost(host, f"{host}.example", 1.0, None).to_json()
        old.produce(shared, json.dumps(record).encode(), KnownHost.key_of(host).encode())
    assert old.flush(30) == 0
    both = {"fleet-a-1", "fleet-b-1"}
    services, threads = [], []
    try:
        for settings in (first, second):
            service = AlertService(settings)
            services.append(service)
            threads.append(threading.Thread(target=service.run, daemon=True))
            threads[-1].start()
            wait_for(lambda s=service: set(s.evaluator.seen) == both, 60, "the old records read")
            if settings is first:
                wait_for(
                    lambda s=service: "fleet-b-1" in {a.host_id for a in s.evaluator.firing()},
                    60,
                    "the other pipeline's host paged down by the first evaluator",
                )
        now = datetime.now(UTC).replace(microsecond=0)
        for settings, host in ((first, "fleet-a-1"), (second, "fleet-b-1")):
            produce(settings, as_messages([event(host, now, 20.0)]))
        for service, own in zip(services, ("fleet-a-1", "fleet-b-1"), strict=True):
            wait_for(lambda s=service, h=own: set(s.evaluator.seen) == {h}, 60, f"{own} alone")
    finally:
        for service, thread in zip(services, threads, strict=False):
            service.stop.set()
            thread.join(30)
    for settings, own in ((first, "fleet-a-1"), (second, "fleet-b-1")):
        records = read_state_records(settings, 20)
        assert [h.host_id for h in read_known_hosts(records)] == [own]
        assert records[KnownHost.key_of(own)]["topic"] == settings.topic  # type: ignore[index]
        assert {v["host_id"] for v in records.values() if v} == {own}  # no page of the other's
