"""The one consumer loop every consuming stage runs on (the lake writer, the alert evaluator).

The runtime owns what is the same for every stage: subscribing, polling in batches, the
rebalance callbacks, a refusal said once in one line, committing the offsets the stage names
once the stage says they are durable, pausing, leaving the group before closing, the
consumer's own numbers for /metrics, and a clock of the time it could listen. A stage owns
only what it does with messages: it is handed each batch, told when partitions come and go
(to flush or save, then forget them), and asked after every poll to do its due work,
committing through :meth:`ConsumerRuntime.commit`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from sysmetrics.config import Settings
from sysmetrics.observability import Reading, counters
from sysmetrics.stream.kafka_config import (
    SESSION_TIMEOUT_MS,
    consumer_config,
    explain,
    explain_failure,
    is_refusal,
)

log = logging.getLogger(__name__)

LEAVE_TIMEOUT_S = 10.0

STALL_S = SESSION_TIMEOUT_MS / 2000
"""A process that stood still this long (SIGSTOP, a paused VM, swapping: all its threads,
librdkafka's heartbeats among them) may have outlived this member's session: the group may
have fenced it."""
TICK_S = 0.25
"""How often the standstill watch notes the time: a gap between two notes is a standstill."""
BUSY_S = 1.0
"""The stage's own work between two polls (taking a batch, its due work) counts as listening
up to this long; beyond it, as a stall, it does not: the messages waited in the broker."""
SETTLE_S = 2.0
"""After such a stall, for this long (two heartbeats, for librdkafka to learn of a fencing and
report the partitions lost) fetching is paused, the messages polled are held back from the
stage (those of partitions revoked or lost meanwhile are dropped: their next owner reads them)
and no due work (flush, commit) is done."""
HANDOVER = 100
"""Messages handed to the stage at a time, by default: between two handovers the runtime looks
whether the process stood still (a stop inside the stage's handling) and then holds the rest,
so a woken member handles at most this many as a zombie before it settles."""
ANSWER_TIMEOUT_S = 1.0
"""How long the leaders of a member's partitions may take to tell their end offsets."""


class StandstillWatch:
    """Tells a process that stood still from a stage whose work ran long: a thread notes the
    time every ``TICK_S``; only a stop of the whole process (SIGSTOP, a paused VM, swapping)
    stops it too, along with librdkafka's heartbeats. A flush waiting on slow storage leaves
    no gap, and no fencing: the heartbeats went on meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._noted = time.monotonic()
        self._longest_gap = 0.0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._noted, self._longest_gap = time.monotonic(), 0.0
        self._stopped.clear()
        self._thread = threading.Thread(target=self._note, name="standstill-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def longest_since_read(self) -> float:
        """The longest gap between two notes since the last read, the one under way included
        (the watch may not have run yet since the process woke)."""
        now = time.monotonic()
        with self._lock:
            longest = max(self._longest_gap, now - self._noted)
            self._longest_gap, self._noted = 0.0, now
        return longest

    def _note(self) -> None:
        while not self._stopped.wait(TICK_S):
            now = time.monotonic()
            with self._lock:
                self._longest_gap = max(self._longest_gap, now - self._noted)
                self._noted = now


class ConsumerRefused(RuntimeError):
    """Kafka refused this consumer before it ever joined its group: a setting is wrong
    (credentials, certificate, ACL); retrying will not help until someone changes it."""


class Stage(Protocol):
    """What a consuming stage does; the runtime calls these from its one thread."""

    def assigned(self, partitions: list[int]) -> None:
        """These partitions are now this member's (restore what belongs to them)."""

    def revoked(self, partitions: list[int]) -> None:
        """These partitions go to another member: make durable and commit what was handled,
        then forget them. What is not committed is read again by the next owner."""

    def lost(self, partitions: list[int]) -> None:
        """These partitions were taken from this member without a revoke: it was fenced (its
        session expired while the process stood still) and their next owner may be writing
        them already. Forget them without making anything durable or committing: what was
        not committed is the next owner's."""

    def receive(self, messages: list[Message], received: datetime) -> None:
        """Messages of one poll, in order, at most the runtime's ``handover`` (none has an
        error); ``received`` is when the poll returned."""

    def after_poll(self) -> None:
        """Due work after every poll (flush, commit, timers), also when nothing arrived."""

    def poll_timeout(self) -> float:
        """How long the next poll may wait when nothing is flowing."""

    def finish(self) -> None:
        """Stopping normally: make durable and commit everything handled."""


@dataclass
class ConsumerStats:
    messages: int = 0
    errors: int = 0
    assignments: int = 0
    revocations: int = 0
    commits: int = 0
    commit_failures: int = 0


class ConsumerRuntime:
    def __init__(
        self,
        settings: Settings,
        topic: str,
        group: str,
        stage: Stage,
        stop: threading.Event,
        batch: int = 500,
        handover: int = HANDOVER,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.group = group
        self.stage = stage
        self.stop = stop
        self.batch = batch
        self.handover = handover
        """Messages handed to the stage per call (``HANDOVER``: a stage whose every message
        may act on the world outside the group asks for fewer)."""
        self.stats = ConsumerStats()
        self.assigned: set[int] = set()
        self.ever_assigned = False  # joined the group at least once: the settings are right
        self.paused = False
        self.assigned_at = 0.0
        self.lag: dict[int, int] = {}
        self._in_callbacks = 0.0
        """Seconds the rebalance callbacks took inside the current poll."""
        self.deaf_s = 0.0
        """Seconds in which this member could take no message: its polls returned later than
        they asked (the rebalance callbacks, a stall), the stage's work between two polls ran
        past ``BUSY_S``, its partitions' leaders did not answer."""
        self._unanswered_since: float | None = None
        self._answered_at = self._accounted_until = time.monotonic()
        """Deafness is counted up to here: the last poll's return, or the brokers' answer
        after they did not answer."""
        self._standstill = StandstillWatch()
        self._held: deque[tuple[list[Message], datetime]] = deque()
        """Batches polled, not yet handed to the stage (held while settling after a
        standstill)."""
        self._settle_paused = False
        self._consumer = Consumer(consumer_config(settings, group))

    def run(self, max_idle_s: float | None = None) -> None:
        """Consume until ``stop`` is set, or nothing arrived for ``max_idle_s`` while this
        member held partitions; then the stage finishes and the member leaves the group."""
        self._consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        last_message = self._accounted_until = time.monotonic()
        flowing = False
        settle_until = 0.0
        self._standstill.start()
        try:
            while not self.stop.is_set():
                # While messages flow, do not wait for a full batch: hand over what came.
                timeout = 0.01 if flowing else self.stage.poll_timeout()
                asked, self._in_callbacks = time.monotonic(), 0.0
                # Since the last poll: the stage's work (or its backoff, or a standstill in it).
                between = asked - self._accounted_until
                polled = self._consumer.consume(self.batch, timeout=timeout)
                returned = self._accounted_until = time.monotonic()
                if self._unanswered_since is None:  # else counted whole by leaders_answer()
                    self.deaf_s += max(self._in_callbacks, returned - asked - timeout)
                    self.deaf_s += max(0.0, between - BUSY_S)
                flowing = bool(polled)
                received = datetime.now(UTC).replace(microsecond=0)
                messages = [m for m in polled if self._usable(m)]
                if messages:
                    self._held.append((messages, received))
                elif not self.ever_assigned:
                    # A refusal a client of these settings met in this process (a broker
                    # restarting may refuse for a moment: only before ever joining it counts).
                    refused = explain_failure(self.settings, probe_tls=False)
                    if refused is not None:
                        raise ConsumerRefused(refused)
                # Wherever it stood still (in a poll, in the stage's work), a zombie must not
                # act on what the group may have given another member (librdkafka may hand
                # over what it fetched before the stop before it reports the partitions lost):
                # its stage is handed nothing and does no due work until a fencing would be
                # known.
                settle_until = self._settle_if_stood_still(settle_until)
                if time.monotonic() >= settle_until:
                    self._resume_after_settling()
                    if self._held:
                        last_message = time.monotonic()
                    settle_until = self._hand_over(settle_until)
                if time.monotonic() >= settle_until:
                    self.stage.after_poll()
                idle_since = max(last_message, self.assigned_at)
                if not self.assigned:
                    last_message = time.monotonic()
                elif max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                    break
            self.stage.finish()
        finally:
            self._standstill.stop()
            self._leave_group()

    def _settle_if_stood_still(self, settle_until: float) -> float:
        """When settling ends: ``SETTLE_S`` from now, fetching paused, if this process stood
        still since the last look."""
        stood_still = self._standstill.longest_since_read()
        if stood_still <= STALL_S:
            return settle_until
        log.warning(
            "%s: this process stood still for %.0f s: checking that it still owns its "
            "partitions before handling or writing anything",
            self.group,
            stood_still,
        )
        if not self.paused and not self._settle_paused and self.assigned:
            self._settle_paused = True
            self._consumer.pause(self._assigned_partitions())
        return time.monotonic() + SETTLE_S

    def _resume_after_settling(self) -> None:
        if self._settle_paused:
            self._settle_paused = False
            if not self.paused and self.assigned:
                self._consumer.resume(self._assigned_partitions())

    def _hand_over(self, settle_until: float) -> float:
        """Hand the held messages to the stage, ``handover`` at a time, until a standstill
        is seen (the rest stay held); returns when settling ends."""
        size = self.handover
        while self._held:
            batch, at = self._held.popleft()
            if len(batch) > size:  # cut once, so that a handover of one is no copy of the rest
                self._held.extendleft(
                    (batch[start : start + size], at)
                    for start in reversed(range(size, len(batch), size))
                )
                batch = batch[:size]
            self.stats.messages += len(batch)
            self.stage.receive(batch, at)
            settle_until = self._settle_if_stood_still(settle_until)
            if time.monotonic() < settle_until:
                break
        return settle_until

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if is_refusal(error) and not self.ever_assigned:
            raise ConsumerRefused(explain(self.settings, error))
        if error.code() != KafkaError._PARTITION_EOF:
            self.stats.errors += 1
            log.warning("consumer error: %s", error.str())
        return False

    def rest(self, seconds: float) -> None:
        """Wait ``seconds``, or until stopped, in the stage's due work (a backoff): deaf time,
        no standstill (the group hears this member's heartbeats meanwhile)."""
        self.stop.wait(seconds)

    def listening_clock(self) -> float:
        """``time.monotonic()`` less the time this member could take no message: a stage that
        times a host's silence on it does not count its own deafness as the host's. It stands
        still while the partitions' leaders do not answer (see :meth:`leaders_answer`)."""
        now = time.monotonic()
        if self._unanswered_since is not None:
            return self._unanswered_since - self.deaf_s
        # Read between polls: a stall under way (the process stood still in the stage's own
        # work) is not listening either, before the next poll counts it.
        return now - self.deaf_s - max(0.0, now - self._accounted_until - BUSY_S)

    @property
    def answering(self) -> bool:
        """Whether the leaders answered when last asked (see :meth:`leaders_answer`)."""
        return self._unanswered_since is None

    def unanswered_s(self) -> float | None:
        """Seconds since the leaders last answered, while they do not; None while they do."""
        if self._unanswered_since is None:
            return None
        return time.monotonic() - self._unanswered_since

    def leaders_answer(self) -> bool:
        """Ask the leaders of this member's partitions for their end offsets (a round trip
        each, at most ``ANSWER_TIMEOUT_S``; holding none, the topic's metadata from any broker).
        While they do not (the broker is down, or unreachable from here), this member hears
        nothing however it polls: from their last answer to their next, its listening clock
        stands still. Only from the polling thread (a stage's ``after_poll``): asked from
        another thread while this one was in ``consume``, the lookup outwaited its timeout
        indefinitely (confluent-kafka 2.16.1)."""
        partitions = [TopicPartition(self.topic, p, OFFSET_END) for p in sorted(self.assigned)]
        try:
            if partitions:
                told = self._consumer.offsets_for_times(partitions, timeout=ANSWER_TIMEOUT_S)
                answered = all(tp.error is None for tp in told)
            else:  # none held (e.g. lost in the outage): any broker's metadata answers
                self._consumer.list_topics(self.topic, timeout=ANSWER_TIMEOUT_S)
                answered = True
        except KafkaException:
            answered = False
        now = time.monotonic()
        if not answered:
            if self._unanswered_since is None:
                self._unanswered_since = self._answered_at
                log.warning(
                    "%s: the brokers do not answer (partitions held: %s): what needs to hear "
                    "from the hosts (host-down checks) waits until they do",
                    self.group,
                    sorted(self.assigned),
                )
            return False
        if self._unanswered_since is not None:
            log.warning(
                "%s: the brokers answer again after %.0f s",
                self.group,
                now - self._unanswered_since,
            )
            self.deaf_s += now - self._unanswered_since
            self._unanswered_since = None
            self._accounted_until = now
        self._answered_at = now
        return True

    def commit(self, next_offsets: dict[int, int]) -> None:
        """Commit these partitions' next offsets synchronously; raises KafkaException."""
        if not next_offsets:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in next_offsets.items()],
                asynchronous=False,
            )
        except KafkaException:
            self.stats.commit_failures += 1
            raise
        self.stats.commits += 1

    def seek(self, partition: int, offset: int) -> None:
        """Read this partition again from ``offset`` (after a commit that failed)."""
        try:
            self._consumer.seek(TopicPartition(self.topic, partition, offset))
        except KafkaException as exc:
            log.debug("seek of partition %d: %s", partition, exc)

    def _assigned_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in self.assigned]

    def pause(self) -> None:
        """Stop fetching (the stage's buffer is full, or its storage is down)."""
        if not self.paused:
            self._consumer.pause(self._assigned_partitions())
            self.paused = True

    def resume(self) -> None:
        if self.paused:
            self._consumer.resume(self._assigned_partitions())
            self.paused = False

    def measure_lag(self) -> dict[int, int]:
        """Messages behind each assigned partition's end (approximate on Tansu)."""
        for partition in self.assigned:
            tp = TopicPartition(self.topic, partition)
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=0.5, cached=True)
                position = self._consumer.position([tp])[0].offset
            except KafkaException:
                continue
            if position >= 0:
                self.lag[partition] = max(0, high - position)
        return self.lag

    def readings(self) -> list[Reading]:
        """The consumer's numbers for /metrics, labelled with its group."""
        group = {"group": self.group}
        stats = self.stats
        rows = [
            ("messages", stats.messages, "messages consumed"),
            ("errors", stats.errors, "consumer errors reported (retried by the client)"),
            ("assignments", stats.assignments, "rebalances that assigned partitions"),
            ("revocations", stats.revocations, "rebalances that revoked partitions"),
            ("commits", stats.commits, "offset commits"),
            ("commit_failures", stats.commit_failures, "offset commits that failed"),
        ]
        return [
            *counters("sysmetrics_consumer", rows, group),
            Reading(
                "sysmetrics_consumer_assigned_partitions",
                "gauge",
                "partitions this member holds",
                len(self.assigned),
                group,
            ),
        ]

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        began = self.assigned_at = time.monotonic()
        numbers = sorted(tp.partition for tp in partitions)
        self.ever_assigned = True
        self.stats.assignments += 1
        self.assigned.update(numbers)
        self.stage.assigned(numbers)
        log.info("%s: assigned partitions %s", self.group, numbers)
        self._in_callbacks += time.monotonic() - began

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        began = time.monotonic()
        numbers = sorted(tp.partition for tp in partitions)
        self.stage.revoked(numbers)
        self._forget(numbers)
        log.info("%s: revoked partitions %s", self.group, numbers)
        self._in_callbacks += time.monotonic() - began

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        began = time.monotonic()
        numbers = sorted(tp.partition for tp in partitions)
        self.stage.lost(numbers)
        self._forget(numbers)
        log.warning(
            "%s: partitions %s lost (this member was fenced): what it had not committed is "
            "left to their next owner",
            self.group,
            numbers,
        )
        self._in_callbacks += time.monotonic() - began

    def _forget(self, partitions: list[int]) -> None:
        """Also drops the held messages of these partitions: their next owner reads them."""
        self.stats.revocations += 1
        gone = set(partitions)
        self._held = deque(
            (kept, at)
            for batch, at in self._held
            if (kept := [m for m in batch if m.partition() not in gone])
        )
        self.assigned.difference_update(partitions)
        for partition in partitions:
            self.lag.pop(partition, None)

    def _leave_group(self) -> None:
        """Unsubscribe, serve the revocation (the stage saves what it must), then close. A
        close that meets an incremental rebalance is where librdkafka consumers have hung (a
        lake writer SIGTERM'd as a second one joined did not exit in CI). Messages polled
        meanwhile are dropped: nothing past the last commit is, so the next owner reads them."""
        try:
            self._consumer.unsubscribe()
            deadline = time.monotonic() + LEAVE_TIMEOUT_S
            while self._consumer.assignment() and time.monotonic() < deadline:
                self._consumer.consume(self.batch, timeout=0.1)
        except KafkaException as exc:
            log.debug("leaving the group: %s", exc)
        finally:
            self._consumer.close()
