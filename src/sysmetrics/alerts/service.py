"""`sysmetrics alert`: a member of its own consumer group on the metrics topic, evaluating the
rules as samples arrive and notifying Alertmanager (or a webhook) within seconds.

Alert state (pending and firing alerts) lives in a compacted topic keyed by the alert's
fingerprint, written before the input offsets are committed: an evaluator that restarts, or
takes over partitions, reads it back and neither pages a firing alert again as new nor loses
its resolve. Each alert records the partition of its host's samples: on a rebalance the
evaluator that gives a partition up flushes its state and forgets those hosts, the one that
gets it restores exactly their alerts. Messages that are not valid events are counted and
skipped (the lake writer quarantines them); they never stop the evaluator.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from sysmetrics.alerts.evaluator import Alert, Change, Evaluator, KnownHost, of_topic
from sysmetrics.alerts.live import write_firing
from sysmetrics.alerts.notify import Outbox, api_alert, summary
from sysmetrics.alerts.rules import Rule, load_rules
from sysmetrics.config import Settings
from sysmetrics.logs import RepeatedFailure
from sysmetrics.observability import Reading
from sysmetrics.schema import SchemaError, decode_keeping_unknown, retired_at
from sysmetrics.stream.admin import ensure_topic
from sysmetrics.stream.kafka_config import admin_config, consumer_config, producer_config
from sysmetrics.stream.producer import retirement_headers
from sysmetrics.stream.runtime import ConsumerRuntime

log = logging.getLogger(__name__)
COMMIT_EVERY_S = 1.0
ABSENT_CHECK_EVERY_S = 1.0
"""Host-down rules look at every known host: once a second, not after every poll (a host is
down after intervals x its interval, tens of seconds)."""


@dataclass
class AlertStats:
    events: int = 0
    skipped: int = 0
    firing_sent: int = 0
    resolved_sent: int = 0


STATE_READ_QUIET_S = 2.0
"""The state topic is read until nothing new came for this long: end offsets cannot say where
it ends on every broker (Tansu reports the start of the last batch + 1)."""


def read_state(settings: Settings, timeout_s: float = 60.0) -> list[Alert]:
    """Every pending/firing alert the state topic holds (latest value per fingerprint)."""
    records = read_state_records(settings, timeout_s)
    return [Alert.from_json(v) for k, v in records.items() if v and not _is_host_key(k)]


@dataclass
class Forgotten:
    """What ``forget_hosts`` deleted: per host the state topic knew, its keys; and the
    alerts among them that were firing (paged, not yet resolved)."""

    keys: dict[str, list[str]]
    firing: list[Alert]


def forget_hosts(settings: Settings, host_ids: list[str]) -> Forgotten:
    """Retire hosts taken out of service, so that they page no more: their known-host record
    and their alerts are deleted from the state topic (no evaluator restores them), then a
    forget record asks the running evaluator that holds each to resolve its alerts and stop
    expecting it, and a retirement on the metrics topic tells the hourly job (through the
    lake) that the host is gone, not silent. A host the state topic did not know is left out.
    Raises ConnectionError when Kafka cannot be reached or does not take the records,
    PermissionError when it refuses this user the state topic."""
    ensure_state_topic(settings)
    records = read_state_records(settings, 60.0)
    refused: list[str] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            refused.append(error.str())

    producer = Producer(producer_config(settings))
    deleted: dict[str, list[str]] = {}
    firing: list[Alert] = []
    for host_id in dict.fromkeys(host_ids):
        keys = sorted(
            key
            for key, value in records.items()
            if value
            and (
                key == KnownHost.key_of(host_id)
                or (not key.startswith("@") and value.get("host_id") == host_id)
            )
        )
        if not keys:
            continue
        # The forget record last: an evaluator that acts on it finds the state already gone.
        for key in [*keys, f"{KnownHost.FORGET_PREFIX}{host_id}"]:
            producer.produce(settings.alert_state_topic, None, key.encode(), on_delivery=delivered)
        producer.produce(
            settings.topic,
            None,
            host_id.encode(),
            headers=retirement_headers(int(time.time() * 1000)),
            on_delivery=delivered,
        )
        deleted[host_id] = keys
        alerts = [Alert.from_json(v) for k in keys if not k.startswith("@") and (v := records[k])]
        firing += [a for a in alerts if a.state == "firing"]
    waiting = producer.flush(30)
    if refused or waiting:
        reason = refused[0] if refused else f"{waiting} records not acknowledged in 30 s"
        topics = f"{settings.alert_state_topic} or {settings.topic}"
        raise ConnectionError(f"cannot write to {topics}: {reason}")
    return Forgotten(deleted, firing)


def evaluators_running(settings: Settings, timeout_s: float = 10.0) -> bool | None:
    """Whether an evaluator is a member of the evaluators' group now (it acts on a forget
    record); None when Kafka does not say. Told by the group's state as well as its members:
    Tansu describes a group with members as stable, listing none."""
    group = settings.alert_consumer_group
    admin = AdminClient(admin_config(settings))
    try:
        described = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group]
        group_now = described.result(timeout=timeout_s + 5)
    except KafkaException as exc:
        log.warning("cannot tell whether an evaluator runs (group %s): %s", group, exc)
        return None
    if group_now.state == ConsumerGroupState.UNKNOWN:
        return None
    return bool(group_now.members) or group_now.state not in (
        ConsumerGroupState.EMPTY,
        ConsumerGroupState.DEAD,
    )


RESOLVE_ATTEMPTS = 4


def send_resolves(settings: Settings, alerts: list[Alert], rules: list[Rule]) -> int:
    """Resolve these firing alerts at the receivers now, for the evaluator that would have
    (none runs). Returns how many were sent; raises ConnectionError when the receivers did
    not take them after ``RESOLVE_ATTEMPTS`` tries (Alertmanager still ends each at its
    ``endsAt``, four resend intervals after its last send)."""
    by_name = {rule.name: rule for rule in rules}
    now = datetime.now(UTC)
    outbox = Outbox(settings.alertmanager_url, settings.alert_webhook_url)
    for alert in alerts:
        if alert.rule in by_name:
            alert.resolved_at = now
            outbox.add(
                [
                    api_alert(
                        Change("resolved", alert), by_name[alert.rule], settings.alert_resend_s, now
                    )
                ]
            )
    for _ in range(RESOLVE_ATTEMPTS):
        if outbox.flush():
            return outbox.sent
        time.sleep(max(0.0, outbox.next_try - time.monotonic()))
    raise ConnectionError(
        f"the alert receiver did not take {len(outbox.pending)} resolves in "
        f"{RESOLVE_ATTEMPTS} tries: Alertmanager ends each alert four resend intervals "
        f"({4 * settings.alert_resend_s:g} s) after the evaluator last sent it"
    )


def ensure_state_topic(settings: Settings) -> None:
    """The evaluators' compacted state topic, created if missing (one partition: read whole
    at every takeover)."""
    ensure_topic(
        settings, settings.alert_state_topic, partitions=1, config={"cleanup.policy": "compact"}
    )


def read_known_hosts(records: dict[str, dict[str, Any] | None]) -> list[KnownHost]:
    return [KnownHost.from_json(v) for k, v in records.items() if v and _is_host_key(k)]


def _is_host_key(key: str) -> bool:
    return key.startswith(KnownHost.KEY_PREFIX)


def read_state_records(settings: Settings, timeout_s: float) -> dict[str, dict[str, Any] | None]:
    """The state topic's latest value per key (None: deleted)."""
    consumer = Consumer(consumer_config(settings, f"{settings.alert_consumer_group}-state"))
    try:
        topic = consumer.list_topics(settings.alert_state_topic, timeout=15).topics
        partitions = list(topic[settings.alert_state_topic].partitions)
        consumer.assign(
            [TopicPartition(settings.alert_state_topic, p, OFFSET_BEGINNING) for p in partitions]
        )
        latest: dict[str, dict[str, Any] | None] = {}
        deadline = time.monotonic() + timeout_s
        last_message = time.monotonic()
        while time.monotonic() - last_message < STATE_READ_QUIET_S:
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"could not read {settings.alert_state_topic} to its end in {timeout_s:.0f} s"
                )
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            last_message = time.monotonic()
            value = message.value()
            latest[(message.key() or b"").decode()] = json.loads(value) if value else None
    finally:
        consumer.close()
    ours = {k: v for k, v in latest.items() if v is None or of_topic(v, settings.topic)}
    others = sorted({str(v["topic"]) for k, v in latest.items() if v and k not in ours})
    if others:
        _say_shared_state_topic(settings.alert_state_topic, settings.topic, tuple(others))
    return ours


@functools.cache
def _say_shared_state_topic(state_topic: str, topic: str, others: tuple[str, ...]) -> None:
    """Once per process: the records of other pipelines' evaluators are left alone, but a host
    id that both fleets have would share its records."""
    log.warning(
        "alert state topic %s also holds the state of the evaluators of %s (left alone): give "
        "this pipeline (topic %s) its own SYSMETRICS_ALERT_STATE_TOPIC and "
        "SYSMETRICS_ALERT_CONSUMER_GROUP, so that a host id in both fleets does not share records",
        state_topic,
        ", ".join(others),
        topic,
    )


class AlertService:
    def __init__(self, settings: Settings, rules: list[Rule] | None = None) -> None:
        self.settings = settings
        self.rules = rules or load_rules(settings.alert_rules)
        self.by_name = {r.name: r for r in self.rules}
        self.outbox = Outbox(settings.alertmanager_url, settings.alert_webhook_url)
        self.stop = threading.Event()
        self.stats = AlertStats()
        self._last_resend = 0.0
        self._last_state = 0.0
        self._live_state = RepeatedFailure(
            log, logging.WARNING, "write the dashboard's live alert state"
        )
        self._last_commit = time.monotonic()
        self._last_absent_check = 0.0
        self._handled: dict[int, int] = {}  # partition -> next offset, not yet committed
        self._unsaved: dict[str, int | None] = {}
        """State records the broker refused: key -> its host's partition (None: not known)."""
        self._refusal: KafkaError | None = None
        self._state_saves = RepeatedFailure(log, logging.ERROR, "save the alert state")
        self._producer: Producer | None = None
        self._forgets: Consumer | None = None
        """Reads what every evaluator writes to the state topic since this one started: the
        forget records, and other pipelines' hosts (:meth:`_follow_state_topic`)."""
        self._named: set[str] = set()
        """State keys whose record this evaluator wrote, naming its topic."""
        self._unstamped: set[str] = set()
        """Hosts restored from records that name no metrics topic (written before they did):
        saved again with ours at their first sample here (:func:`of_topic`)."""
        # One sample per handover: a member woken from a standstill (its partitions perhaps
        # another evaluator's by then) judges at most the one it had in hand, not a hundred
        # that save state and queue pages for hosts it no longer owns.
        self.runtime = ConsumerRuntime(
            settings, settings.topic, settings.alert_consumer_group, self, self.stop, handover=1
        )
        # Silences are timed while the consumer can listen: a rebalance that holds it (reading
        # the state topic), a stall or brokers that do not answer are not the hosts' silence.
        self.evaluator = Evaluator(
            self.rules,
            settings.sample_interval_s,
            settings.alert_forget_host_days * 86_400,
            clock=self.runtime.listening_clock,
        )

    def run(self) -> AlertStats:
        settings = self.settings
        ensure_topic(settings)
        ensure_state_topic(settings)
        self._producer = Producer(producer_config(settings))
        self._forgets = _from_the_end(settings, settings.alert_state_topic)
        try:
            self.runtime.run()
        finally:
            self._forgets.close()
            self._producer.flush(30)
            self.outbox.flush(now=float("inf"))
        return self.stats

    def readings(self) -> list[Reading]:
        """The evaluator's numbers for /metrics."""
        stats = self.stats
        states = {"pending": 0, "firing": 0}
        for alert in list(self.evaluator.alerts.values()):
            states[alert.state] += 1
        return [
            Reading("sysmetrics_alert_events_total", "counter", "samples evaluated", stats.events),
            Reading(
                "sysmetrics_alert_skipped_total",
                "counter",
                "messages that are not events (skipped)",
                stats.skipped,
            ),
            *(
                Reading(
                    "sysmetrics_alert_notifications_total",
                    "counter",
                    "notifications queued, by status",
                    value,
                    {"status": status},
                )
                for status, value in (
                    ("firing", stats.firing_sent),
                    ("resolved", stats.resolved_sent),
                )
            ),
            *(
                Reading("sysmetrics_alerts", "gauge", "alerts by state", n, {"state": state})
                for state, n in states.items()
            ),
            Reading(
                "sysmetrics_alert_outbox_pending",
                "gauge",
                "alerts waiting for the receiver (down: retried with backoff)",
                len(self.outbox.pending),
            ),
            Reading(
                "sysmetrics_alert_brokers_answering",
                "gauge",
                "1 while the brokers of its partitions answer; 0: no host is judged down",
                int(self.runtime.answering),
            ),
            Reading(
                "sysmetrics_alert_delivered_total",
                "counter",
                "alerts the receiver accepted",
                self.outbox.sent,
            ),
            *self.runtime.readings(),
        ]

    # ------------------------------------------------------------------ the runtime's stage
    def assigned(self, partitions: list[int]) -> None:
        """Take over the alerts of the hosts on these partitions from the state topic."""
        if not partitions:  # an incremental rebalance that gave this member nothing new
            return
        owned = set(partitions)
        if self._producer is not None:
            self._producer.flush(30)
        records = read_state_records(self.settings, 60.0)
        restored = [
            a
            for k, v in records.items()
            if v and not _is_host_key(k) and (a := Alert.from_json(v)).partition in owned | {None}
        ]
        hosts = [h for h in read_known_hosts(records) if h.partition in owned | {None}]
        self.evaluator.restore(restored, hosts)
        unstamped = {
            v.get("host_id") or k.removeprefix(KnownHost.KEY_PREFIX)
            for k, v in records.items()
            if v and "topic" not in v
        }
        self._unstamped |= unstamped & ({a.host_id for a in restored} | {h.host_id for h in hosts})
        log.info(
            "alert evaluator: partitions %s assigned, %d alerts and %d hosts restored",
            sorted(owned),
            len(restored),
            len(hosts),
        )

    def revoked(self, partitions: list[int]) -> None:
        """State and offsets of these partitions are saved, then their hosts forgotten."""
        self._commit()
        self.lost(partitions)

    def lost(self, partitions: list[int]) -> None:
        """Their hosts are forgotten unsaved: their next owner restores them from the state
        topic and reads again what this evaluator had not committed."""
        for partition in partitions:
            self._handled.pop(partition, None)
        # Their state, refused or not, is the next owner's: it reads their samples again.
        self._unsaved = {
            k: p for k, p in self._unsaved.items() if p is not None and p not in partitions
        }
        self.evaluator.release(set(partitions))

    def receive(self, messages: list[Message], received: datetime) -> None:
        assert self._producer is not None  # run() made it before consuming
        for message in messages:
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None  # set on consumed messages
            value = message.value()
            at_ms = retired_at(value, message.headers()) if value is None else None
            if at_ms is not None:
                host_id = (message.key() or b"").decode("utf-8", "replace")
                at = datetime.fromtimestamp(at_ms / 1000, UTC)
                self._retired(
                    host_id,
                    self.evaluator.forget(host_id, retired_at=at),
                    "retired (Prometheus no longer scrapes it)",
                )
            else:
                self._handle(value or b"", self._producer, partition)
            self._handled[partition] = offset + 1

    def after_poll(self) -> None:
        assert self._producer is not None
        if time.monotonic() - self._last_absent_check >= ABSENT_CHECK_EVERY_S:
            self._last_absent_check = time.monotonic()
            # Unanswered, the brokers' silence is not the hosts': no host is judged meanwhile.
            if self.runtime.leaders_answer():
                self._publish(self.evaluator.check_absent(), self._producer)
            self._follow_state_topic()
        self._forget_hosts(self._producer)
        self._resend()
        self.outbox.flush()
        self._write_live_state()
        if time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
            self._commit()

    def poll_timeout(self) -> float:
        return 0.5

    def finish(self) -> None:
        self._commit()

    def _commit(self) -> None:
        """State first, offsets after: a crash re-reads samples, never loses state. What the
        broker refused is saved again as it is now; until all is saved, nothing is committed."""
        self._last_commit = time.monotonic()
        if self._producer is not None:
            waiting = self._producer.flush(30)
            if self._unsaved:
                refused, self._unsaved = self._unsaved, {}
                for key, partition in refused.items():
                    self._save(self._producer, key, partition)
                waiting = self._producer.flush(30)
            if self._unsaved or waiting:
                why = (
                    KafkaException(self._refusal)
                    if self._unsaved
                    else TimeoutError(f"{waiting} records not acknowledged in 30 s")
                )
                self._state_saves.failed(
                    why,
                    "input offsets are not committed until it is saved (after a restart, "
                    "those samples are read again)",
                )
                return
            self._state_saves.succeeded()
        try:
            self.runtime.commit(self._handled)
        except KafkaException as exc:  # e.g. a rebalance under way: committed next time
            log.debug("commit: %s", exc)
        else:
            self._handled = {}

    def _handle(self, payload: bytes, producer: Producer, partition: int | None = None) -> None:
        try:
            event = decode_keeping_unknown(payload)[0]
        except (SchemaError, ValueError) as exc:
            self.stats.skipped += 1
            log.debug("skipped a message that is not an event: %s", exc)
            return
        self.stats.events += 1
        evaluator = self.evaluator
        changes = evaluator.observe(event, partition=partition)
        self._publish(changes, producer)
        if event.host.host_id in self._unstamped:
            # It samples on our topic: its records are ours, saved again naming it, so that
            # another pipeline's evaluator sharing the state topic lets it go.
            self._unstamped.discard(event.host.host_id)
            evaluator.hosts_changed.add(event.host.host_id)
            evaluator.state_changed.update(
                k for k, a in evaluator.alerts.items() if a.host_id == event.host.host_id
            )
        # What a restart resumes from is state too: a pending alert (its `for`), a firing one
        # entering or leaving its keep_firing_for window (the window's start); pages and
        # resolves were saved by _publish.
        if evaluator.state_changed:
            published = {c.alert.fingerprint for c in changes}
            for key in evaluator.state_changed - published:
                self._save(producer, key, partition)
            evaluator.state_changed.clear()
        for host_id in self.evaluator.hosts_changed:
            self._save(producer, KnownHost.key_of(host_id), partition)
        self.evaluator.hosts_changed.clear()

    def _forget_hosts(self, producer: Producer) -> None:
        for host_id in self.evaluator.hosts_forgotten:
            log.warning(
                "host %s down for %g days: forgotten (paged again when it reports)",
                host_id,
                self.settings.alert_forget_host_days,
            )
            self._save(producer, KnownHost.key_of(host_id), None)
        self.evaluator.hosts_forgotten.clear()

    def _follow_state_topic(self) -> None:
        """What other evaluators wrote since the last check. Hosts an administrator retired
        (``forget_hosts``): the one holding each resolves its alerts and saves it as gone; the
        others hold other hosts. Hosts another pipeline's evaluator saved as its own (they
        sample on its topic): one restored here from a record that named no topic, and not
        heard from here since, is let go, unpaged (its own evaluator pages and resolves it)."""
        assert self._forgets is not None
        retired, elsewhere = [], []
        while batch := self._forgets.consume(500, timeout=0):  # every evaluator's state writes
            for message in batch:
                key, value = (message.key() or b"").decode(), message.value()
                if message.error() is not None:
                    continue
                if key.startswith(KnownHost.FORGET_PREFIX):
                    retired.append(key.removeprefix(KnownHost.FORGET_PREFIX))
                elif (
                    _is_host_key(key)
                    and value
                    and not of_topic(json.loads(value), self.settings.topic)
                ):
                    elsewhere.append(key.removeprefix(KnownHost.KEY_PREFIX))
        for host_id in retired:
            self._retired(host_id, self.evaluator.forget(host_id), "retired by an administrator")
        for host_id in elsewhere:
            if host_id not in self._unstamped:  # ours, heard here (a host id in both fleets)
                continue
            self._unstamped.discard(host_id)
            dropped = self.evaluator.let_go(host_id)
            if dropped is None:
                continue
            log.info("host %s is another pipeline's (its evaluator saved it): let go", host_id)
            assert self._producer is not None
            for key in dropped:
                if key in self._named:  # paged here before it was let go: deleted, not restored
                    self._save(self._producer, key, None)

    def _retired(self, host_id: str, changes: list[Change] | None, why: str) -> None:
        """Publish what forgetting a retired host changed (None: this evaluator did not hold
        it) and save it as gone."""
        if changes is None:
            return
        assert self._producer is not None
        log.warning("host %s %s: forgotten, its alerts resolved", host_id, why)
        self._publish(changes, self._producer)
        self._save(self._producer, KnownHost.key_of(host_id), None)

    def _publish(self, changes: list[Change], producer: Producer) -> None:
        now = datetime.now(UTC)
        for change in changes:
            rule = self.by_name[change.alert.rule]
            self.outbox.add([api_alert(change, rule, self.settings.alert_resend_s, now)])
            if change.status == "firing":
                self.stats.firing_sent += 1
            else:
                self.stats.resolved_sent += 1
            self._save(producer, change.alert.fingerprint, change.alert.partition)
            log.info("%s %s on %s", change.status, change.alert.rule, change.alert.hostname)

    def _resend(self) -> None:
        if time.monotonic() - self._last_resend < self.settings.alert_resend_s:
            return
        self._last_resend = time.monotonic()
        now = datetime.now(UTC)
        self.outbox.add(
            [
                api_alert(
                    Change("firing", a), self.by_name[a.rule], self.settings.alert_resend_s, now
                )
                for a in self.evaluator.firing()
                if a.rule in self.by_name
            ]
        )

    def _write_live_state(self) -> None:
        """The firing alerts, for the dashboard's "firing now" view (seconds old)."""
        if time.monotonic() - self._last_state < 1.0:
            return
        self._last_state = time.monotonic()
        firing = [
            {
                **a.to_json(),
                "severity": self.by_name[a.rule].severity,
                "summary": summary(a, self.by_name[a.rule]),
            }
            for a in self.evaluator.firing()
            if a.rule in self.by_name
        ]
        try:
            now, unheard_s = datetime.now(UTC), self.runtime.unanswered_s()
            since = None if unheard_s is None else now - timedelta(seconds=unheard_s)
            write_firing(self.settings, now, firing, since)
        except OSError as exc:
            # A full disk must not stop the paging (it is what a fleet most needs then): the
            # dashboard's "firing now" shows its age meanwhile.
            self._live_state.failed(exc, "going on")
        else:
            self._live_state.succeeded()

    def _save(self, producer: Producer, key: str, partition: int | None) -> None:
        """Write what the state topic holds for ``key``: the alert or the host as it is now
        (none: deleted). ``partition``: its host's (None: not known), so that a record the
        broker refuses is saved again while this evaluator owns that partition."""
        record = self._current(key)
        if record is not None:
            record["topic"] = self.settings.topic  # whose it is (of_topic)
            self._named.add(key)
        else:
            self._named.discard(key)
        value = json.dumps(record).encode() if record is not None else None

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                self._unsaved[key] = partition
                self._refusal = error

        producer.produce(
            self.settings.alert_state_topic, value, key.encode(), on_delivery=delivered
        )
        producer.poll(0)

    def _current(self, key: str) -> dict[str, Any] | None:
        evaluator = self.evaluator
        if _is_host_key(key):
            host_id = key.removeprefix(KnownHost.KEY_PREFIX)
            return evaluator.known_host(host_id).to_json() if host_id in evaluator.seen else None
        alert = evaluator.alerts.get(key)
        return alert.to_json() if alert is not None else None


def _from_the_end(settings: Settings, topic: str) -> Consumer:
    """A consumer of every partition of ``topic`` from its end (no group, nothing committed)."""
    consumer = Consumer(consumer_config(settings, f"{settings.alert_consumer_group}-forgets"))
    metadata = consumer.list_topics(topic, timeout=15).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in metadata.partitions])
    return consumer


def run_evaluator(
    settings: Settings, rules: list[Rule], announce: Callable[[str], None]
) -> AlertStats:
    """`sysmetrics alert`: evaluate until SIGINT/SIGTERM, serving /metrics meanwhile."""
    from sysmetrics.observability import serve_metrics
    from sysmetrics.stop_signals import install_stop_signals

    service = AlertService(settings, rules)
    install_stop_signals(service.stop)
    metrics = serve_metrics(
        "alert", [service.readings], settings.metrics_addr, settings.metrics_port
    )
    announce(
        f"evaluating {len(rules)} rules on {settings.topic} as group "
        f"{settings.alert_consumer_group}"
    )
    try:
        return service.run()
    finally:
        metrics.close()
