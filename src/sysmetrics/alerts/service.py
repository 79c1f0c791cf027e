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

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from sysmetrics.alerts.evaluator import Alert, Change, Evaluator, KnownHost
from sysmetrics.alerts.live import write_firing
from sysmetrics.alerts.notify import Outbox, api_alert, summary
from sysmetrics.alerts.rules import Rule, load_rules
from sysmetrics.config import Settings
from sysmetrics.observability import Reading
from sysmetrics.schema import SchemaError, decode_keeping_unknown
from sysmetrics.stream.admin import ensure_topic
from sysmetrics.stream.group import leave_group
from sysmetrics.stream.kafka_config import consumer_config, producer_config

log = logging.getLogger(__name__)
COMMIT_EVERY_S = 1.0


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


def read_known_hosts(records: dict[str, dict[str, Any] | None]) -> list[KnownHost]:
    return [KnownHost(**v) for k, v in records.items() if v and _is_host_key(k)]


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
    return latest


def _resume_point(alert: Alert) -> tuple[str, datetime, datetime | None]:
    """The fields a restarted evaluator needs to continue an alert exactly."""
    return alert.state, alert.active_since, alert.keep_firing_since


class AlertService:
    def __init__(self, settings: Settings, rules: list[Rule] | None = None) -> None:
        self.settings = settings
        self.rules = rules or load_rules(settings.alert_rules)
        self.by_name = {r.name: r for r in self.rules}
        self.evaluator = Evaluator(
            self.rules, settings.sample_interval_s, settings.alert_forget_host_days * 86_400
        )
        self.outbox = Outbox(settings.alertmanager_url, settings.alert_webhook_url)
        self.stop = threading.Event()
        self.stats = AlertStats()
        self._last_resend = 0.0
        self._last_state = 0.0
        self._producer: Producer | None = None

    def run(self) -> AlertStats:
        settings = self.settings
        ensure_topic(settings)
        ensure_topic(
            settings, settings.alert_state_topic, partitions=1, config={"cleanup.policy": "compact"}
        )
        producer = self._producer = Producer(producer_config(settings))
        consumer = Consumer(consumer_config(settings, settings.alert_consumer_group))
        consumer.subscribe([settings.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_commit = time.monotonic()
        try:
            while not self.stop.is_set():
                message = consumer.poll(0.5)
                error = message.error() if message is not None else None
                if message is not None and error is None:
                    self._handle(message.value() or b"", producer, message.partition())
                    consumer.store_offsets(message)
                elif error is not None and error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", error)
                self._publish(self.evaluator.check_absent(), producer)
                self._forget_hosts(producer)
                self._resend()
                self.outbox.flush()
                self._write_live_state()
                if time.monotonic() - last_commit >= COMMIT_EVERY_S:
                    # State first, offsets after: a crash re-reads samples, never loses state.
                    producer.flush(30)
                    try:
                        consumer.commit(asynchronous=False)
                    except Exception as exc:  # nothing stored to commit yet, or a rebalance
                        log.debug("commit: %s", exc)
                    last_commit = time.monotonic()
        finally:
            leave_group(consumer)  # the revocation commits what was handled
            producer.flush(30)
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
                "sysmetrics_alert_delivered_total",
                "counter",
                "alerts the receiver accepted",
                self.outbox.sent,
            ),
        ]

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take over the alerts of the hosts on these partitions from the state topic."""
        owned = {tp.partition for tp in partitions}
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
        log.info(
            "alert evaluator: partitions %s assigned, %d alerts and %d hosts restored",
            sorted(owned),
            len(restored),
            len(hosts),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """State and offsets of these partitions are saved, then their hosts forgotten."""
        lost = {tp.partition for tp in partitions}
        if self._producer is not None:
            self._producer.flush(30)
        try:
            consumer.commit(asynchronous=False)
        except Exception as exc:  # nothing stored to commit yet
            log.debug("commit on revoke: %s", exc)
        self.evaluator.release(lost)
        log.info("alert evaluator: partitions %s revoked", sorted(lost))

    def _handle(self, payload: bytes, producer: Producer, partition: int | None = None) -> None:
        try:
            event = decode_keeping_unknown(payload)[0]
        except (SchemaError, ValueError) as exc:
            self.stats.skipped += 1
            log.debug("skipped a message that is not an event: %s", exc)
            return
        self.stats.events += 1
        alerts = self.evaluator.alerts
        # A sample touches only its host's alerts: compare those, not the whole state.
        keys = [f"{rule.name}|{event.host.host_id}" for rule in self.rules]
        before = {k: _resume_point(alerts[k]) for k in keys if k in alerts}
        changes = self.evaluator.observe(event, partition=partition)
        self._publish(changes, producer)
        # What a restart resumes from is state too: a pending alert (its `for`), a firing one
        # entering or leaving its keep_firing_for window (the window's start); pages and
        # resolves were saved by _publish.
        published = {c.alert.fingerprint for c in changes}
        for key in keys:
            if key in published:
                continue
            if key not in alerts:
                if key in before:
                    self._save(producer, key, None)
            elif before.get(key) != _resume_point(alerts[key]):
                self._save(producer, key, alerts[key].to_json())
        for host_id in self.evaluator.hosts_changed:
            host = self.evaluator.known_host(host_id)
            self._save(producer, host.key, asdict(host))
        self.evaluator.hosts_changed.clear()

    def _forget_hosts(self, producer: Producer) -> None:
        for host_id in self.evaluator.hosts_forgotten:
            log.warning(
                "host %s down for %g days: forgotten (paged again when it reports)",
                host_id,
                self.settings.alert_forget_host_days,
            )
            self._save(producer, f"{KnownHost.KEY_PREFIX}{host_id}", None)
        self.evaluator.hosts_forgotten.clear()

    def _publish(self, changes: list[Change], producer: Producer) -> None:
        now = datetime.now(UTC)
        for change in changes:
            rule = self.by_name[change.alert.rule]
            self.outbox.add([api_alert(change, rule, self.settings.alert_resend_s, now)])
            if change.status == "firing":
                self.stats.firing_sent += 1
                self._save(producer, change.alert.fingerprint, change.alert.to_json())
            else:
                self.stats.resolved_sent += 1
                self._save(producer, change.alert.fingerprint, None)
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
        write_firing(self.settings, datetime.now(UTC), firing)

    def _save(self, producer: Producer, key: str, record: dict[str, Any] | None) -> None:
        value = json.dumps(record).encode() if record is not None else None
        producer.produce(self.settings.alert_state_topic, value, key.encode())
        producer.poll(0)
