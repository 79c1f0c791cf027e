"""Topic administration kept to what both Tansu and Apache Kafka answer correctly."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from sysmetrics.config import Settings
from sysmetrics.stream.kafka_config import admin_config

log = logging.getLogger(__name__)


def ensure_topic(
    settings: Settings,
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
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise ConnectionError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {exc.args[0]} "
            "(start it with 'sysmetrics broker start' or set SYSMETRICS_BOOTSTRAP_SERVERS)"
        ) from None
    if name in existing and existing[name].error is None:
        return
    # Log-append time: records carry the broker's clock, against which the lake writer
    # measures each host's clock skew (a producer's own create time shares the host's error).
    # Tansu accepts and ignores it; the writer then uses its own clock.
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=1,
                config=config or {"message.timestamp.type": "LogAppendTime"},
            )
        ]
    )
    try:
        futures[name].result(timeout=timeout_s)
        log.info("created topic %s with %d partitions", name, partitions)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
