"""The evaluators' firing alerts for the dashboard: a small file beside an evaluator (the same
machine, seconds old, no Kafka client), or the state topic (any machine)."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from sysmetrics.config import Settings


def live_state_path(settings: Settings) -> Path:
    return settings.data_dir / "status" / "alerts-firing.json"


def write_firing(settings: Settings, updated_at: datetime, firing: list[dict[str, Any]]) -> None:
    path = live_state_path(settings)
    # A temporary name of its own: evaluators of one group may share a machine's data dir.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps({"updated_at": updated_at.isoformat(), "firing": firing}))
    tmp.replace(path)  # readers never see half a file


def read_firing(settings: Settings) -> tuple[datetime, list[dict[str, Any]]] | None:
    """(when the evaluator last wrote, its firing alerts); None when no evaluator runs here."""
    try:
        body = json.loads(live_state_path(settings).read_text())
    except (OSError, ValueError):
        return None
    return datetime.fromisoformat(body["updated_at"]), list(body["firing"])


class StateTopicView:
    """The firing alerts as the evaluators' state topic holds them, for a dashboard with no
    evaluator beside it (another machine): a background reader keeps the latest record per key
    (no consumer group, nothing committed)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.error: str | None = None
        self.caught_up = False
        """True once the reader has reached the topic's end (an empty poll) at least once."""
        self._latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-state-view", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def firing(self) -> list[dict[str, Any]]:
        """Firing alerts, with their rule's severity and summary."""
        from sysmetrics.alerts.evaluator import Alert, KnownHost
        from sysmetrics.alerts.notify import summary
        from sysmetrics.alerts.rules import load_rules

        rules = {r.name: r for r in load_rules(self.settings.alert_rules)}
        with self._lock:
            records = [v for k, v in self._latest.items() if not k.startswith(KnownHost.KEY_PREFIX)]
        out = []
        for record in records:
            alert = Alert.from_json(record)
            rule = rules.get(alert.rule)
            if alert.state == "firing" and rule is not None:
                out.append(
                    {**alert.to_json(), "severity": rule.severity, "summary": summary(alert, rule)}
                )
        return sorted(out, key=lambda a: (a["fired_at"] or "", a["host_id"]))

    def _run(self) -> None:
        import uuid

        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

        from sysmetrics.stream.kafka_config import consumer_config

        topic = self.settings.alert_state_topic
        group = f"{self.settings.alert_consumer_group}-view-{uuid.uuid4().hex[:8]}"
        consumer = Consumer(consumer_config(self.settings, group))
        try:
            while not self._stop.is_set():
                try:
                    metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
                except KafkaException as exc:
                    self.error = f"cannot reach Kafka: {exc}"
                    self._stop.wait(5)
                    continue
                if metadata is None or metadata.error is not None or not metadata.partitions:
                    self.error = f"no state topic {topic} yet (no evaluator has run)"
                    self._stop.wait(5)
                    continue
                consumer.assign(
                    [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
                )
                self.error = None
                break
            while not self._stop.is_set():
                message = consumer.poll(0.5)
                if message is None:
                    self.caught_up = True
                    continue
                if message.error() is not None:
                    continue
                key, value = (message.key() or b"").decode(), message.value()
                with self._lock:
                    if value:
                        self._latest[key] = json.loads(value)
                    else:
                        self._latest.pop(key, None)
        finally:
            consumer.close()
