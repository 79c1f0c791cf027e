"""Test helpers that talk to a real broker: produce raw messages and read a topic back."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from sysmetrics.config import Settings
from sysmetrics.stream.kafka_config import consumer_config, producer_config

SYSMETRICS = str(Path(sys.executable).parent / "sysmetrics")


def produce(settings: Settings, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer(producer_config(settings))
    for key, value in messages:
        while True:
            try:
                producer.produce(settings.topic, value, key)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def read_topic(settings: Settings, expected: int, timeout_s: float = 60.0) -> list[Message]:
    """Every message of the topic (a fresh group), until ``expected`` arrived or timeout."""
    consumer = Consumer(consumer_config(settings, group_id=f"reader-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([settings.topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    out.append(message)
    finally:
        consumer.close()
    return out


def read_to_end(settings: Settings, timeout_s: float = 60.0) -> list[Message]:
    """Every message the broker holds now: each partition read from its start until the
    broker says it is at the end, so a topic with fewer messages than were sent ends at once."""
    config = consumer_config(settings, group_id=f"reader-{uuid.uuid4().hex[:8]}")
    consumer = Consumer({**config, "enable.partition.eof": True})
    deadline = time.monotonic() + timeout_s
    try:
        topic = consumer.list_topics(settings.topic, timeout=timeout_s).topics[settings.topic]
        partitions = set(topic.partitions)
        consumer.assign([TopicPartition(settings.topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[Message] = []
        while partitions:
            assert time.monotonic() < deadline, f"partitions {partitions} never reached their end"
            for message in consumer.consume(500, timeout=0.5):
                error = message.error()
                if error is None:
                    out.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    partitions.discard(message.partition())
    finally:
        consumer.close()
    return out
