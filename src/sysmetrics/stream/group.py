"""Leaving a consumer group cleanly, for every stage that consumes (lake writer, evaluator)."""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException

log = logging.getLogger(__name__)


def leave_group(consumer: Consumer, timeout_s: float = 10.0, batch: int = 500) -> None:
    """Unsubscribe, serve the revocation (the stage's callback saves what it must), then close.
    A close that meets an incremental rebalance is where librdkafka consumers have hung (a
    lake writer SIGTERM'd as a second one joined did not exit in CI). Messages polled
    meanwhile are dropped: nothing past the last commit is, so the next owner reads them."""
    try:
        consumer.unsubscribe()
        deadline = time.monotonic() + timeout_s
        while consumer.assignment() and time.monotonic() < deadline:
            consumer.consume(batch, timeout=0.1)
    except KafkaException as exc:
        log.debug("leaving the group: %s", exc)
    finally:
        consumer.close()
