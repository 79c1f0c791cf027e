"""Publish events to Kafka losing nothing: spool first, produce, acknowledge on delivery."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from sysmetrics.observability import Reading
from sysmetrics.schema import RETIRED_HEADER, Headers
from sysmetrics.stream.kafka_config import KafkaClientSettings, producer_config
from sysmetrics.stream.spool import Spool, SpooledRecord

log = logging.getLogger(__name__)

_RETIREMENT = b"\0retired:"
"""How the spool holds a host's retirement (no event begins with a NUL byte)."""


def retirement(ts_ms: int) -> bytes:
    """The value to publish under a host's key to retire it at ``ts_ms``: the spool keeps it
    as is, Kafka gets the topic's retirement (``schema.RETIRED_HEADER``: a tombstone)."""
    return _RETIREMENT + str(ts_ms).encode()


def retirement_headers(ts_ms: int) -> Headers:
    """The headers of a retirement's tombstone (``schema.RETIRED_HEADER``)."""
    return [(RETIRED_HEADER, str(ts_ms).encode())]


def _kafka_message(value: bytes) -> tuple[bytes | None, Headers | None]:
    """What Kafka gets for a published value: itself, or a retirement's tombstone."""
    if value[:1] == b"\0" and value.startswith(_RETIREMENT):
        return None, retirement_headers(int(value[len(_RETIREMENT) :]))
    return value, None


_CLIENT_LIMIT: Final = "librdkafka's message.max.bytes, 1,000,000"
_TOPIC_LIMIT: Final = "the max.message.bytes of topic {}: the broker refused it alone"


@dataclass
class DeliveryStats:
    spooled: int = 0
    refused: int = 0
    """Messages the spool could not write (a full disk)."""
    delivered: int = 0
    lost: int = 0
    """Messages sent without the spool that Kafka did not take (:meth:`publish_unspooled`)."""
    failed_attempts: int = 0
    set_aside: int = 0
    """Messages over Kafka's message size limit, kept in the spool's ``rejected/`` instead."""
    last_error: str | None = None
    last_delivery_at: float | None = field(default=None)


class ProducerSettings(KafkaClientSettings, Protocol):
    @property
    def spool_max_bytes(self) -> int: ...


class SpooledProducer:
    """Every message is in the on-disk spool until Kafka acknowledges it.

    Messages are produced in spool order with at most ``window`` in flight. A failed delivery
    (e.g. the broker was down longer than ``message.timeout.ms``) puts the spool back to its
    oldest unacknowledged record once the in-flight ones have resolved, so order holds.

    A message over the size limit can never be sent, and everything after it would wait
    behind it for good, so it is set aside (:meth:`Spool.set_aside`): when librdkafka refuses
    it at produce (its ``message.max.bytes``), or when the broker refuses it (the topic's
    ``max.message.bytes`` is lower) while it was the only message in flight. The broker
    refuses a whole batch, so each message of a refused batch is resent alone, in order, until
    the one it refuses alone is found; the others are delivered.
    """

    def __init__(
        self,
        settings: ProducerSettings,
        spool_dir: Path,
        topic: str | None = None,
        window: int = 10_000,
        metrics_prefix: str = "sysmetrics_collector",
    ) -> None:
        self.topic = topic or settings.topic
        self.metrics_prefix = metrics_prefix
        self.spool = Spool(spool_dir, settings.spool_max_bytes)
        self.stats = DeliveryStats()
        self.window = window
        # The topic is made by ensure_topic_meanwhile, with its partitions, also when Kafka
        # comes up after this process: a broker's auto-creation on the first produce would
        # make it first, with the broker's default partitions.
        self._producer = Producer({**producer_config(settings), "allow.auto.create.topics": False})
        self._in_flight: set[int] = set()
        self._unspooled_in_flight = 0
        self._sent_upto = -1  # highest seq handed to librdkafka in this send pass
        self._rewind = False
        self._suspects: set[int] = set()  # in a batch the broker refused as too large
        self._alone: int | None = None  # a suspect in flight with nothing beside it

    def readings(self) -> list[Reading]:
        """The spool's and the deliveries' numbers for /metrics, named by the process that
        owns them (``metrics_prefix``: the collector's, or the ingest receiver's)."""
        return [
            Reading(
                f"{self.metrics_prefix}_samples_total",
                "counter",
                "events spooled (a collector's samples, an ingest receiver's events)",
                self.stats.spooled,
            ),
            Reading(
                f"{self.metrics_prefix}_spool_refused_total",
                "counter",
                "events the spool could not write (a full disk): sent without it, at most once",
                self.stats.refused,
            ),
            Reading(
                f"{self.metrics_prefix}_lost_total",
                "counter",
                "events neither spooled nor taken by Kafka: lost",
                self.stats.lost,
            ),
            Reading(
                f"{self.metrics_prefix}_delivered_total",
                "counter",
                "events Kafka acknowledged",
                self.stats.delivered,
            ),
            Reading(
                f"{self.metrics_prefix}_delivery_failures_total",
                "counter",
                "failed delivery attempts (retried from the spool)",
                self.stats.failed_attempts,
            ),
            Reading(
                f"{self.metrics_prefix}_set_aside_total",
                "counter",
                "events over Kafka's message size limit, kept in the spool's rejected/ "
                "instead of sent",
                self.stats.set_aside,
            ),
            Reading(
                f"{self.metrics_prefix}_spool_depth",
                "gauge",
                "events in the on-disk spool not yet acknowledged",
                self.spool.pending,
            ),
            Reading(
                f"{self.metrics_prefix}_spool_dropped_total",
                "counter",
                "events dropped because the spool reached SYSMETRICS_SPOOL_MAX_BYTES",
                self.spool.dropped,
            ),
        ]

    def publish(self, key: bytes, value: bytes) -> None:
        self.publish_many([(key, value)])

    def publish_many(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Spool the messages (durable, one fsync for all), then hand them to Kafka; OSError
        (and none of them spooled) when the spool cannot be written."""
        try:
            self.spool.extend(messages)
        except OSError:
            self.stats.refused += len(messages)
            raise
        self.stats.spooled += len(messages)
        self.pump()

    def pump(self) -> None:
        """Hand spooled records to librdkafka, oldest first, within the in-flight window."""
        if self._alone is not None:
            return
        if self._rewind:
            if self._in_flight:
                return
            self._rewind = False
            self._sent_upto = -1
        for record in self.spool.unacked():
            if len(self._in_flight) >= self.window:
                break
            if record.seq <= self._sent_upto or record.seq in self._in_flight:
                continue
            alone = record.seq in self._suspects
            if alone and (self._in_flight or self._unspooled_in_flight):
                break  # sent once everything before it has resolved
            value, headers = _kafka_message(record.value)
            try:
                self._producer.produce(
                    self.topic,
                    value,
                    record.key,
                    headers=headers,
                    on_delivery=self._callback(record),
                )
            except BufferError:
                break  # librdkafka's queue is full: the rest waits in the spool
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                # It can never be sent, and the spool sends in order: everything after it
                # would wait behind it for good.
                if not self._set_aside(record, len(value or b""), _CLIENT_LIMIT):
                    break
                continue
            self._in_flight.add(record.seq)
            self._sent_upto = record.seq
            if alone:
                self._alone = record.seq
                break

    def _set_aside(self, record: SpooledRecord, size: int, limit: str) -> bool:
        """Keep a record over the message size limit (``limit`` says which) in the spool's
        ``rejected/``, logged and counted; False when the disk refuses it (it stays in the
        spool, retried)."""
        try:
            path = self.spool.set_aside(record)
        except OSError as exc:
            self.stats.last_error = f"cannot set aside a message over the size limit: {exc}"
            log.error("%s; the spool waits", self.stats.last_error)
            return False
        self.stats.set_aside += 1
        self.stats.last_error = f"a message of {size} bytes is over the size limit"
        log.error(
            "a message of %d bytes (key %r) is over Kafka's message size limit (%s) and can "
            "never be sent: kept in %s instead (%d so far); a host with thousands of devices, "
            "or a sender adding series to one sample",
            size,
            record.key[:128].decode(errors="replace"),
            limit,
            path,
            self.stats.set_aside,
        )
        return True

    def publish_unspooled(self, key: bytes, value: bytes) -> None:
        """Hand a message the spool refused (a full disk) to Kafka without a copy on disk: at
        most once. Kafka not taking it (down past ``message.timeout.ms``, the queue full, the
        process ending first) loses it, counted in ``stats.lost`` and logged."""
        kafka_value, headers = _kafka_message(value)
        try:
            self._producer.produce(
                self.topic, kafka_value, key, headers=headers, on_delivery=self._on_unspooled
            )
        except BufferError:
            self._lose("librdkafka's queue is full")
            return
        except KafkaException as exc:  # refused at once (over the size limit): never sent
            self._lose(exc.args[0].str())
            return
        self._unspooled_in_flight += 1

    def _on_unspooled(self, error: KafkaError | None, _message: Message) -> None:
        self._unspooled_in_flight -= 1
        if error is None:
            self.stats.delivered += 1
            self.stats.last_delivery_at = time.time()
            return
        self._lose(error.str())

    def _lose(self, reason: str) -> None:
        self.stats.lost += 1
        self.stats.last_error = reason
        log.error(
            "a sample sent without the spool was not delivered (%s): it is lost, %d so far",
            reason,
            self.stats.lost,
        )

    def _callback(self, record: SpooledRecord) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            self._in_flight.discard(record.seq)
            alone = self._alone == record.seq
            if alone:
                self._alone = None
            if error is None:
                self._suspects.discard(record.seq)
                self.spool.ack(record)
                self.stats.delivered += 1
                self.stats.last_delivery_at = time.time()
                return
            then = "will resend from the spool"
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                limit = _TOPIC_LIMIT.format(self.topic)
                if alone and self._set_aside(record, len(record.value), limit):
                    self._suspects.discard(record.seq)
                    return
                self._suspects.add(record.seq)
                then = (
                    f"will resend each message of the refused batch alone; the max.message.bytes "
                    f"of topic {self.topic} is below librdkafka's 1,000,000 bytes: raise it to "
                    "at least that"
                )
            self.stats.failed_attempts += 1
            self.stats.last_error = error.str()
            if not self._rewind:
                log.warning("delivery failed (%s): %s", error.str(), then)
            self._rewind = True

        return on_delivery

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing spooled: no delivery report can be due."""
        return not self._in_flight and not self.spool.pending and not self._unspooled_in_flight

    def poll(self, timeout_s: float = 0.0) -> None:
        self._producer.poll(timeout_s)
        self.spool.save_acked()
        self.pump()

    def flush(self, timeout_s: float = 10.0) -> int:
        """Try to deliver everything; return how many stay spooled for the next run."""
        deadline = time.monotonic() + timeout_s
        while (self.spool.pending or self._unspooled_in_flight) and time.monotonic() < deadline:
            self.pump()
            self._producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        self.spool.save_acked()
        return self.spool.pending

    def close(self, timeout_s: float = 10.0) -> int:
        left = self.flush(timeout_s)
        if left or self._unspooled_in_flight:
            # Drop librdkafka's copies: the spool holds them and resends them on the next
            # start, and a lingering client must not deliver them a second time. A message
            # sent without the spool is lost here: its purge reports it (``_lose``).
            self._producer.purge()
            self._producer.flush(0)
        self.spool.close()
        # The client's threads end here, not whenever the collector frees it: one left running
        # into the interpreter's exit (a SASL_SSL handshake retrying) is the likely cause of a
        # crash at exit (-11) seen once in CI.
        self._producer.close()
        if left:
            log.warning("%d events stay in the spool and will be sent on the next start", left)
        return left
