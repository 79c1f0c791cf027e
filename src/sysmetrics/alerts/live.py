"""The evaluators' firing alerts for the dashboard: a small file beside an evaluator (the same
machine, seconds old, no Kafka client), or the state topic (any machine)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from sysmetrics.config import Settings

FIRING_GLOB = "alerts-firing.*.json"
TOGETHER_S = 30.0
"""Files written within this long of the newest are one picture (each evaluator rewrites its
own every second or so); an older one is an evaluator that stopped, or was killed, and the
partitions it held are another's now."""
STOPPED_AFTER_S = 120.0
"""An evaluator rewrites its file every second or so: one this old has stopped updating."""
FORGOTTEN_AFTER_S = 86_400.0
"""A file this old is removed by the next evaluator that starts: restarts do not pile up."""
BEFORE_FILES_PER_EVALUATOR = "alerts-firing.json"
"""The one file of versions before each evaluator had its own: nothing reads it any more."""


def live_state_dir(settings: Settings) -> Path:
    return settings.data_dir / "status"


class LiveFiring(NamedTuple):
    updated_at: datetime
    """When the oldest of the evaluators' files was written: the picture's age."""
    firing: list[dict[str, Any]]
    unheard_since: datetime | None = None
    """Since when an evaluator has not heard its brokers (the earliest of them); None while
    all of them hear theirs."""


def write_firing(
    settings: Settings,
    updated_at: datetime,
    firing: list[dict[str, Any]],
    unheard_since: datetime | None = None,
) -> None:
    """This evaluator's firing alerts: a file of its own, since evaluators of one group may
    share a machine's data dir, each holding some of the partitions. ``unheard_since``: since
    when its brokers have not answered (None: they answer)."""
    path = live_state_dir(settings) / FIRING_GLOB.replace("*", str(os.getpid()))
    if not path.exists():
        _forget_old_files(path.parent, updated_at.timestamp())
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.write_text(
            json.dumps(
                {
                    "updated_at": updated_at.isoformat(),
                    "firing": firing,
                    "unheard_since": unheard_since and unheard_since.isoformat(),
                }
            )
        )
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: not left behind
        raise
    tmp.replace(path)  # readers never see half a file


def _forget_old_files(directory: Path, now: float) -> None:
    with contextlib.suppress(OSError):
        (directory / BEFORE_FILES_PER_EVALUATOR).unlink(missing_ok=True)
    for old in directory.glob(FIRING_GLOB):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > FORGOTTEN_AFTER_S:
                old.unlink()


def read_firing(settings: Settings) -> LiveFiring | None:
    """The firing alerts of the evaluators running here; None when none has run here. With
    several, their files are merged (an alert in two, during a rebalance, counts once: the
    newer file's); only the newest when every file is old (the evaluators stopped: their age
    says so)."""
    written = []
    for path in live_state_dir(settings).glob(FIRING_GLOB):
        try:
            body = json.loads(path.read_text())
            unheard = body.get("unheard_since")  # absent in files written before 2026-12-03
            written.append(
                LiveFiring(
                    datetime.fromisoformat(body["updated_at"]),
                    list(body["firing"]),
                    datetime.fromisoformat(unheard) if unheard else None,
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # removed while listed, or not ours
    if not written:
        return None
    written.sort(key=lambda w: w.updated_at)
    newest = written[-1].updated_at
    together = [w for w in written if (newest - w.updated_at).total_seconds() <= TOGETHER_S]
    merged: dict[tuple[Any, Any], dict[str, Any]] = {}
    for live in together:
        for alert in live.firing:
            merged[(alert.get("rule"), alert.get("host_id"))] = alert
    by_time = sorted(
        merged.values(), key=lambda a: (a.get("fired_at") or "", a.get("host_id") or "")
    )
    unheard = [w.unheard_since for w in together if w.unheard_since is not None]
    return LiveFiring(together[0].updated_at, by_time, min(unheard) if unheard else None)


def summarize(live: LiveFiring, now: datetime, shown: int = 5) -> list[str]:
    """What the evaluators page, in a line, and a second one while they do not hear Kafka;
    of evaluators that stopped, since when (``STOPPED_AFTER_S``)."""
    named = _by_sender(live.firing)
    more = f" and {len(named) - shown} more" if len(named) > shown else ""
    what = f"{len(live.firing)} firing" + (f": {', '.join(named[:shown])}{more}" if named else "")
    age_s = (now - live.updated_at).total_seconds()
    if age_s > STOPPED_AFTER_S:
        return [f"stopped {age_s:.0f} s ago; when it stopped, {what}"]
    unheard = unheard_note(live, now)
    return [what] if unheard is None else [what, unheard]


def _by_sender(firing: list[dict[str, Any]]) -> list[str]:
    """Each alert in words; a rule's alerts of hosts one sender delivers (a central Prometheus
    that went down: all its hosts' HostDown) in one phrase, where that sender's first is."""
    groups: dict[object, tuple[Any, Any, list[str]]] = {}
    for n, alert in enumerate(firing):
        rule, sender = alert.get("rule"), alert.get("sender")
        key = n if sender is None else (rule, sender)
        groups.setdefault(key, (rule, sender, []))[2].append(
            str(alert.get("hostname") or alert.get("host_id"))
        )
    return [
        f"{rule} on {hosts[0] if len(hosts) == 1 else f'{len(hosts)} hosts'}"
        + ("" if sender is None else f" via {sender}")
        for rule, sender, hosts in groups.values()
    ]


def unheard_note(live: LiveFiring, now: datetime) -> str | None:
    """What not hearing Kafka means for the evaluators' alerts; None while they hear it."""
    if live.unheard_since is None:
        return None
    unheard_s = (now - live.unheard_since).total_seconds()
    return (
        f"has not heard from Kafka for {unheard_s:.0f} s: no sample reaches it and no host is "
        "judged down until it does"
    )


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
        from sysmetrics.alerts.evaluator import Alert, KnownHost, of_topic
        from sysmetrics.alerts.notify import summary
        from sysmetrics.alerts.rules import load_rules

        rules = {r.name: r for r in load_rules(self.settings.alert_rules)}
        topic = self.settings.topic
        with self._lock:
            records = [
                v
                for k, v in self._latest.items()
                if not k.startswith(KnownHost.KEY_PREFIX) and of_topic(v, topic)
            ]
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
