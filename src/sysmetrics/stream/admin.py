"""Topic administration kept to what both Tansu and Apache Kafka answer correctly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from sysmetrics.stream.kafka_config import (
    AUTHORIZATION_ERRORS,
    KafkaClientSettings,
    admin_config,
    explain,
    explain_failure,
)

log = logging.getLogger(__name__)


class TopicSettings(KafkaClientSettings, Protocol):
    @property
    def topic_partitions(self) -> int: ...
    @property
    def replication_factor(self) -> int | None: ...
    @property
    def min_insync_replicas(self) -> int | None: ...


def _unreachable(settings: KafkaClientSettings, exc: KafkaException) -> str:
    error = exc.args[0]
    said = error.str() if isinstance(error, KafkaError) else str(error)
    return (
        f"cannot reach Kafka at {settings.bootstrap_servers}: {said} (start it with "
        "'sysmetrics broker start' or set SYSMETRICS_BOOTSTRAP_SERVERS)"
    )


def under_replicated(settings: KafkaClientSettings, timeout_s: float = 5.0) -> list[str]:
    """Partitions of the metrics topic whose in-sync replicas are fewer than their replicas,
    as 'p<N>: isr a/b'; [] when all are in sync."""
    admin = AdminClient(admin_config(settings))
    try:
        topic = admin.list_topics(settings.topic, timeout=timeout_s).topics.get(settings.topic)
    except KafkaException as exc:
        admin.poll(1.0)
        raise ConnectionError(explain_failure(settings) or _unreachable(settings, exc)) from None
    if topic is None or topic.error is not None:
        return []
    return [
        f"p{p.id}: isr {len(p.isrs)}/{len(p.replicas)}"
        for p in sorted(topic.partitions.values(), key=lambda p: p.id)
        if len(p.isrs) < len(p.replicas)
    ]


def ensure_topic(
    settings: TopicSettings,
    topic: str | None = None,
    timeout_s: float = 15.0,
    partitions: int | None = None,
    config: dict[str, str] | None = None,
) -> None:
    """Create the topic (``settings.topic_partitions`` partitions unless given) if missing."""
    name = topic or settings.topic
    partitions = partitions or settings.topic_partitions
    admin = AdminClient(admin_config(settings))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin.poll(1.0)  # serve the error callback: it says why (credentials, TLS...)
        raise ConnectionError(explain_failure(settings) or _unreachable(settings, exc)) from None
    existing = metadata.topics
    if name in existing:
        error = existing[name].error
        if error is None:
            return
        if error.code() in AUTHORIZATION_ERRORS:
            raise PermissionError(explain(settings, error))
    replicas = settings.replication_factor or (3 if len(metadata.brokers) >= 3 else 1)
    topic_config = dict(config or {"message.timestamp.type": "LogAppendTime"})
    if replicas >= 3:
        topic_config.setdefault("min.insync.replicas", str(settings.min_insync_replicas or 2))
    elif settings.min_insync_replicas:
        topic_config.setdefault("min.insync.replicas", str(settings.min_insync_replicas))
    # Log-append time: records carry the broker's clock, against which the lake writer
    # measures each host's clock skew (a producer's own create time shares the host's error).
    # Tansu accepts and ignores it; the writer then uses its own clock.
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replicas,
                config=topic_config,
            )
        ]
    )
    try:
        futures[name].result(timeout=timeout_s)
        log.info("created topic %s: %d partitions x %d replicas", name, partitions, replicas)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return
        if error.code() in AUTHORIZATION_ERRORS:
            raise PermissionError(
                f"Kafka user {settings.sasl_username or '(anonymous)'} may not see or create "
                f"topic {name}: ask for an ACL (DESCRIBE and WRITE for a collector, DESCRIBE "
                f"and READ plus its group for a lake writer), or create the topic as an "
                f"administrator ({partitions} partitions, replication {replicas})"
            ) from None
        raise


def ensure_topic_meanwhile(
    settings: TopicSettings, warn: Callable[[str], None], wait_s: float = 3.0, retry_s: float = 5.0
) -> threading.Thread:
    """:func:`ensure_topic` in a thread, retried until Kafka answers, for a process that spools
    (a collector, an ingest receiver); waits ``wait_s`` for it. A Kafka that answers has the
    topic ready before the first event, as before; one that does not no longer holds the process
    back until the check gives up (15 s: the receiver did not listen, the collector did not
    sample), and the topic is created with its partitions when Kafka is back rather than never
    (or by a broker's auto-creation, with its default partitions). ``warn`` gets one line when
    Kafka cannot be reached, or the topic may not be used or created."""

    def check() -> None:
        warned = False
        while True:
            try:
                ensure_topic(settings)
            except ConnectionError as exc:
                if not warned:
                    warn(f"{exc}; events are spooled until it is back")
                    warned = True
                time.sleep(retry_s)
                continue
            except (PermissionError, KafkaException) as exc:
                warn(f"{exc}; events are spooled until Kafka takes them")
                return
            if warned:
                log.info(
                    "Kafka at %s answers: topic %s ready",
                    settings.bootstrap_servers,
                    settings.topic,
                )
            return

    thread = threading.Thread(target=check, name="topic-check", daemon=True)
    thread.start()
    thread.join(wait_s)
    return thread
