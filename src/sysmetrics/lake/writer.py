"""The lake writer: a consumer-group member that turns Kafka batches into exactly-once files.

Per partition it buffers records and cuts a batch at ``flush_records`` records, or when the
oldest buffered record is ``flush_seconds`` old (checked on a timer, also when nothing arrives).

After each poll, one *flush round* writes every batch that is due, on all partitions:
  1. writes, per partition, the intent ``{start: S, ends: [E1, E2, ...]}`` (the round's
     batches S..E1, E1+1..E2, ... are now pinned);
  2. creates one data file per batch and event hour, ``<topic>+P+S-E.jsonl``,
     create-if-absent; invalid messages go to one quarantine file with the batch's range;
  3. makes 1-2 durable (one filesystem sync per step, not one fsync per file);
  4. commits every partition's next offset in one synchronous commit;
  5. publishes each partition's completeness watermark.
A crash anywhere in 1-4 leaves the committed offset at a batch start S. Whoever consumes the
partition next (this process restarted, or another group member) finds S among the intent's
batch starts and cuts the remaining batches at exactly the same ends again, so it produces the
same names with the same content; create-if-absent keeps what was already written. Every
record therefore ends up in exactly one file.
"""

from __future__ import annotations

import gc
import gzip
import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)

from sysmetrics.config import Settings
from sysmetrics.lake import layout
from sysmetrics.lake.catalog import RoundManifest, Watermark, publish_watermark
from sysmetrics.lake.lines import from_micros, lake_line, micros
from sysmetrics.lake.status import WriterStats, WriterStatus
from sysmetrics.lake.store import LakeStore, StoreError
from sysmetrics.logs import RepeatedFailure
from sysmetrics.observability import Reading, counters
from sysmetrics.schema import SchemaError, decode, encode_time, retired_at, retired_host
from sysmetrics.status_files import this_process_start, write_status
from sysmetrics.stream.kafka_config import producer_config
from sysmetrics.stream.runtime import ConsumerRuntime

log = logging.getLogger(__name__)


class WriterError(RuntimeError):
    """The writer cannot go on safely (e.g. commits keep failing); restart it."""


class CommitFailed(WriterError):
    """One offset commit failed (e.g. the group coordinator restarted); the batch's files are
    durable and the partition was rewound to re-confirm them."""


MAX_CONSECUTIVE_COMMIT_FAILURES = 20


@dataclass(slots=True)
class _Record:
    offset: int
    arrived: float  # monotonic time it was consumed: the flush timer runs from here
    ts_us: int | None  # the valid event's time (lines.micros); None: quarantined or retirement
    line: bytes | None  # what the lake keeps (lines.lake_line)
    newer: list[str] | None  # fields of a newer minor version the line carries
    raw: bytes | None
    key: bytes | None
    reason: str | None
    retired: tuple[str, int] | None = None  # a host's retirement (host, Unix ms): no event


@dataclass
class _PartitionBuffer:
    records: list[_Record] = field(default_factory=list)
    pinned_ends: list[int] = field(default_factory=list)  # batch ends an intent fixed
    intent_checked: bool = False


@dataclass(slots=True)
class _Batch:
    start: int
    end: int
    records: list[_Record]


def _quarantine_line(topic: str, partition: int, record: _Record) -> bytes:
    return json.dumps(
        {
            "reason": record.reason,
            "topic": topic,
            "partition": partition,
            "offset": record.offset,
            "key_hex": record.key.hex() if record.key is not None else None,
            "value_hex": record.raw.hex() if record.raw is not None else None,
        },
        sort_keys=True,
    ).encode()


def _compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)  # mtime=0: same bytes on every replay
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


class LakeWriter:
    consume_batch = 5_000
    """Messages taken per poll at most: while catching up, one flush round then writes about
    this many records (a hundred 50-record batches) with one sync and one commit."""

    def __init__(
        self,
        settings: Settings,
        store: LakeStore | None = None,
        stop: threading.Event | None = None,
        status_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.store = store or LakeStore.from_settings(settings)
        self.stop = stop or threading.Event()
        self.stats = WriterStats()
        self.status_file = status_file
        self._status = RepeatedFailure(log, logging.WARNING, f"write the status file {status_file}")
        self._buffers: dict[int, _PartitionBuffer] = defaultdict(_PartitionBuffer)
        self.runtime = ConsumerRuntime(
            settings, self.topic, settings.consumer_group, self, self.stop, self.consume_batch
        )
        self._dead_letters = (
            Producer(producer_config(settings)) if settings.dead_letter_topic else None
        )
        self._commit_failures_in_a_row = 0
        self._backoff = 1.0
        self._max_buffered = max(10_000, 20 * settings.flush_records)
        self._last_status = 0.0
        self._skew_tolerance_us = int(settings.clock_skew_tolerance_s * 1_000_000)
        self._skewed_hosts: set[str] = set()
        # The last arrival time used (the broker's log-append ms or the poll's time), as a
        # time, its JSON and microseconds: a producer batch shares one, a poll's messages one.
        self._stamp: tuple[int | datetime, datetime, bytes, int] | None = None

    def run(self, max_idle_s: float | None = None) -> WriterStats:
        """Consume until ``stop`` is set or nothing arrived for ``max_idle_s``; then flush all.
        Raises ConsumerRefused when Kafka refuses the settings, WriterError when it cannot go
        on safely."""
        try:
            self.runtime.run(max_idle_s)
        finally:
            self._write_status(force=True)
        return self.stats

    # ------------------------------------------------------------------ the runtime's stage
    def assigned(self, partitions: list[int]) -> None:
        for partition in partitions:
            self._buffers[partition] = _PartitionBuffer()

    def revoked(self, partitions: list[int]) -> None:
        revoked = {}
        for partition in partitions:
            buffer = self._buffers.pop(partition, None)
            if buffer is not None and buffer.records:
                revoked[partition] = buffer
        try:
            # A batch an intent pinned but not yet fully read stays uncut: the next owner
            # reads it again and finishes it.
            self._flush_round(revoked, force=True)
        except (StoreError, WriterError) as exc:
            # Not committed: the next owner re-reads these records (and the intent).
            log.warning("partitions revoked, batches not flushed (%s): discarded", exc)

    def lost(self, partitions: list[int]) -> None:
        for partition in partitions:
            self._buffers.pop(partition, None)

    def receive(self, messages: list[Message], received: datetime) -> None:
        arrived = time.monotonic()
        for message in messages:
            self._add(message, received, arrived)

    def after_poll(self) -> None:
        try:
            self._flush_due()
            self._apply_backpressure()
            self._backoff = 1.0
        except CommitFailed as exc:
            self._commit_failures_in_a_row += 1
            if self._commit_failures_in_a_row > MAX_CONSECUTIVE_COMMIT_FAILURES:
                raise WriterError(
                    f"{self._commit_failures_in_a_row} commits failed in a row: {exc}"
                ) from exc
            log.warning("%s; rewound to the batch start, will confirm it again", exc)
            self.runtime.rest(min(0.5 * self._commit_failures_in_a_row, 5.0))
        except StoreError as exc:
            self.stats.store_failures += 1
            self.runtime.pause()
            log.error(
                "lake unavailable, retrying in %.0fs (nothing committed): %s", self._backoff, exc
            )
            self.runtime.rest(self._backoff)
            self._backoff = min(self._backoff * 2, 30.0)
        self._write_status()

    def poll_timeout(self) -> float:
        oldest = min(
            (b.records[0].arrived for b in self._buffers.values() if b.records), default=None
        )
        if oldest is None:
            return 0.5
        due_in = oldest + self.settings.flush_seconds - time.monotonic()
        return max(0.0, min(0.5, due_in))

    def finish(self) -> None:
        try:
            self._flush_round(self._assigned_buffers(), force=True)
        except (StoreError, WriterError) as exc:
            log.error("stopping with batches not flushed (not committed, nothing lost): %s", exc)

    def _apply_backpressure(self) -> None:
        """Pause fetching while the buffer is over its bound, instead of growing without one."""
        buffered = sum(len(b.records) for b in self._buffers.values())
        if buffered > self._max_buffered:
            self.runtime.pause()
        elif buffered <= self._max_buffered // 2:
            self.runtime.resume()

    def _assigned_buffers(self) -> dict[int, _PartitionBuffer]:
        return {p: self._buffers[p] for p in sorted(self.runtime.assigned)}

    # ------------------------------------------------------------------ buffering
    def _add(self, message: Message, received: datetime, arrived: float) -> None:
        """Buffer one message; ``received`` is when this poll returned (the arrival time used
        unless the topic stamps records with the broker's log-append time)."""
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None  # set on every consumed message
        buffer = self._buffers[partition]
        raw = message.value()
        record = _Record(offset, arrived, None, None, None, raw, message.key(), None)
        if raw is None:
            at_ms = retired_at(raw, message.headers())
            host = retired_host(record.key)
            if at_ms is None:
                record.reason = "empty message (no value)"
            elif host is None:
                record.reason = "host retirement without a valid host id as its key"
            else:
                record.retired = (host, at_ms)  # no event: listed in the round's manifest
        else:
            kind, log_time_ms = message.timestamp()
            by_broker = kind == TIMESTAMP_LOG_APPEND_TIME
            key = log_time_ms if by_broker else received
            stamp = self._stamp
            if stamp is None or stamp[0] != key:
                at = datetime.fromtimestamp(log_time_ms / 1000, UTC) if by_broker else received
                stamp = self._stamp = (key, at, encode_time(at), micros(at))
            try:
                record.ts_us, record.line, record.newer = lake_line(raw, stamp[1], stamp[2])
            except SchemaError as exc:
                record.reason = str(exc)[:2000]
            else:
                skew_us = record.ts_us - stamp[3]
                if not -self._skew_tolerance_us <= skew_us <= self._skew_tolerance_us:
                    self._count_wrong_clock(skew_us, raw)
        buffer.records.append(record)

    def _count_wrong_clock(self, skew_us: int, raw: bytes) -> None:
        """An event ``skew_us`` ahead of its arrival (or behind it) by more than the tolerance:
        still written by its own ts; the hourly job flags the host (clock_skew)."""
        if skew_us < 0:
            self.stats.delayed += 1
            return
        self.stats.clock_ahead += 1
        if len(self._skewed_hosts) < 1000:
            event = decode(raw)  # rare: only to name the host once
            host = event.host.host_id
            if host not in self._skewed_hosts:
                self._skewed_hosts.add(host)
                log.warning(
                    "host %r: event ts %s is %.0fs ahead of its arrival: its clock is wrong "
                    "(written by its own ts; flagged clock_skew by the hourly job)",
                    host,
                    event.ts.isoformat(),
                    skew_us / 1e6,
                )

    def _check_intent(self, partition: int, buffer: _PartitionBuffer) -> None:
        """Pin the batches of an unfinished round that began at the buffer's first record.
        Read at the flush, not on arrival, so a lake that is down is retried like a write."""
        data = self.store.get(layout.intent_path(self.topic, partition))
        buffer.intent_checked = True
        if data is None:
            return
        first_offset = buffer.records[0].offset
        intent = json.loads(data)
        ends = [int(end) for end in intent["ends"]]
        starts = [int(intent["start"])] + [end + 1 for end in ends[:-1]]
        if first_offset in starts:
            buffer.pinned_ends = ends[starts.index(first_offset) :]
            log.info(
                "partition %d: resuming the unfinished batch %d-%d",
                partition,
                first_offset,
                buffer.pinned_ends[-1],
            )

    def _cut(self, buffer: _PartitionBuffer, force: bool) -> list[_Batch]:
        """The batches to flush now: first those an intent pinned (once fully read), then
        full batches of ``flush_records``, then, when the timer is due or ``force``, the rest."""
        records = buffer.records
        batches: list[_Batch] = []
        i = 0
        for end in buffer.pinned_ends:
            if not records or records[-1].offset < end:
                return batches  # nothing may be cut before the pinned batch is complete
            j = i
            while j < len(records) and records[j].offset <= end:
                j += 1
            if j == i:
                continue
            batches.append(_Batch(records[i].offset, end, records[i:j]))
            i = j
        size = self.settings.flush_records
        while len(records) - i >= size:
            batches.append(
                _Batch(records[i].offset, records[i + size - 1].offset, records[i : i + size])
            )
            i += size
        if i < len(records) and (
            force or time.monotonic() - records[i].arrived >= self.settings.flush_seconds
        ):
            batches.append(_Batch(records[i].offset, records[-1].offset, records[i:]))
        return batches

    def _flush_due(self) -> None:
        self._flush_round(self._assigned_buffers(), force=False)

    # ------------------------------------------------------------------ the flush
    def _flush_round(self, buffers: dict[int, _PartitionBuffer], force: bool) -> None:
        """Write, commit, publish every due batch of ``buffers``; on error nothing is
        committed and every record stays buffered."""
        for partition, buffer in buffers.items():
            if buffer.records and not buffer.intent_checked:
                self._check_intent(partition, buffer)
        cuts = {
            p: batches for p, buffer in buffers.items() if (batches := self._cut(buffer, force))
        }
        if not cuts:
            return
        state: dict[str, bytes] = {}  # intents, manifests, late markers: durable before data
        files: list[tuple[str, bytes]] = []
        quarantine: list[tuple[str, bytes]] = []
        dead_letters: list[tuple[int, _Record]] = []
        compression = self.settings.lake_compression
        late_before = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
            hours=self.settings.lookback_hours
        )
        late_files = 0
        written = datetime.now(UTC)
        retirements = 0
        for partition, batches in cuts.items():
            round_files: list[str] = []
            round_retired: list[tuple[str, int]] = []
            if batches[-1].end not in buffers[partition].pinned_ends:  # not all pinned already
                intent = {
                    "start": batches[0].start,
                    "ends": [b.end for b in batches],
                    "at": time.time(),
                }
                state[layout.intent_path(self.topic, partition)] = json.dumps(intent).encode()
            for batch in batches:
                by_hour: dict[int, list[bytes]] = defaultdict(list)
                newer: dict[int, set[str]] = defaultdict(set)
                bad: list[bytes] = []
                for record in batch.records:
                    if record.line is not None and record.ts_us is not None:
                        hour_number = record.ts_us // layout.MICROS_PER_HOUR
                        by_hour[hour_number].append(record.line)
                        if record.newer:
                            newer[hour_number].update(record.newer)
                    elif record.reason is not None:
                        bad.append(_quarantine_line(self.topic, partition, record))
                        dead_letters.append((partition, record))
                    elif record.retired is not None:
                        round_retired.append(record.retired)
                for hour_number, lines in sorted(by_hour.items()):
                    hour = layout.hour_start(hour_number)
                    name = layout.batch_name(
                        self.topic, partition, batch.start, batch.end, compression
                    )
                    data = _compress(b"\n".join(lines) + b"\n", compression)
                    files.append((f"{layout.hour_dir(self.topic, hour)}/{name}", data))
                    round_files.append(files[-1][0])
                    if hour_number in newer:
                        # Fields this version cannot type: the curated Parquet would lack
                        # them, so retention keeps this raw file until a version that
                        # knows them has compacted the hour again.
                        marker = layout.newer_fields_marker_path(self.topic, hour, name)
                        state[marker] = json.dumps(sorted(newer[hour_number])).encode()
                    if hour < late_before:
                        # Beyond the hourly job's look-back: tell it where to look.
                        state[layout.late_marker_path(self.topic, hour, name)] = b""
                        late_files += 1
                if bad:
                    path = layout.quarantine_path(self.topic, partition, batch.start, batch.end)
                    quarantine.append((path, b"\n".join(bad) + b"\n"))
                    log.warning(
                        "partition %d offsets %d-%d: %d messages quarantined",
                        partition,
                        batch.start,
                        batch.end,
                        len(bad),
                    )
            if round_files or round_retired:
                # The hourly job reads these instead of listing the lake; a replayed round
                # writes the same manifest again (same name, same files and retirements).
                manifest = RoundManifest(
                    partition, batches[0].start, batches[-1].end, round_files, round_retired
                )
                path = layout.manifest_path(self.topic, written, partition, batches[0].start)
                state[path] = manifest.encode()
                retirements += len(round_retired)
        created = self.store.create_files(files + quarantine, state)
        self._send_dead_letters(dead_letters)
        self._commit(
            {p: batches[-1].end + 1 for p, batches in cuts.items()},
            {p: (buffers[p], batches[0].start) for p, batches in cuts.items()},
        )
        for (rel, data), new in zip(files, created[: len(files)], strict=True):
            if new:
                self.stats.files += 1
                self.stats.bytes += len(data)
                self.stats.last_file = rel
        self.stats.quarantined += len(dead_letters)
        self.stats.late_files += late_files
        self.stats.retirements += retirements
        self.stats.last_flush_at = time.time()
        for partition, batches in cuts.items():
            buffer = buffers[partition]
            flushed = sum(len(b.records) for b in batches)
            del buffer.records[:flushed]
            buffer.pinned_ends = [e for e in buffer.pinned_ends if e > batches[-1].end]
            self.stats.records += flushed
            self.stats.batches += len(batches)
            self._publish_watermark(
                partition,
                buffer,
                batches[-1].end + 1,
                max(
                    (r.ts_us for b in batches for r in b.records if r.ts_us is not None),
                    default=None,
                ),
            )

    def _send_dead_letters(self, records: list[tuple[int, _Record]]) -> None:
        """Copy the round's quarantined ``records`` to the dead-letter topic, delivered before the
        commit (a replay sends them again: the topic is at-least-once, the lake exactly-once)."""
        if self._dead_letters is None:
            return
        failures: list[str] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error.str())

        for partition, record in records:
            assert record.reason is not None  # _add gives every record without an event one
            self._dead_letters.produce(
                str(self.settings.dead_letter_topic),
                value=record.raw,
                key=record.key,
                headers={
                    "sysmetrics.reason": record.reason.encode(),
                    "sysmetrics.source": f"{self.topic}/{partition}/{record.offset}".encode(),
                },
                on_delivery=delivered,
            )
        pending = self._dead_letters.flush(30.0)
        if pending or failures:
            # Not committed: the round is retried like a store outage.
            raise StoreError(
                f"dead-letter topic {self.settings.dead_letter_topic}: "
                f"{pending} undelivered, {len(failures)} failed {failures[:1]}"
            )

    def _commit(
        self, next_offsets: dict[int, int], rewind_to: dict[int, tuple[_PartitionBuffer, int]]
    ) -> None:
        try:
            self.runtime.commit(next_offsets)
        except KafkaException as exc:
            self.stats.commit_failures = self.runtime.stats.commit_failures
            # The files are durable and the intents pin the batches: whoever reads a partition
            # next (us after a rejoin, or a new owner) cuts the same batches and finds the same
            # names. Rewind to the round's start so nothing after it is written uncommitted.
            for partition, (buffer, start) in rewind_to.items():
                buffer.records.clear()
                buffer.intent_checked = False
                buffer.pinned_ends = []
                self.runtime.seek(partition, start)
            raise CommitFailed(
                f"commit of partitions {sorted(next_offsets)} failed: {exc}"
            ) from exc
        self._commit_failures_in_a_row = 0

    def _publish_watermark(
        self, partition: int, buffer: _PartitionBuffer, committed: int, max_ts_us: int | None
    ) -> None:
        oldest = min((r.ts_us for r in buffer.records if r.ts_us is not None), default=None)
        complete_before = datetime.now(UTC) if oldest is None else from_micros(oldest)
        max_ts = None if max_ts_us is None else from_micros(max_ts_us)
        mark = Watermark(partition, committed, complete_before, max_ts, datetime.now(UTC))
        try:
            publish_watermark(self.store, self.topic, mark)
        except StoreError as exc:
            log.warning("watermark of partition %d not published: %s", partition, exc)

    # ------------------------------------------------------------------ status
    def readings(self) -> list[Reading]:
        """The lake writer's numbers for /metrics (the status file's, read at scrape time)."""
        stats = self.stats
        out = counters(
            "sysmetrics_lake",
            [
                ("records", stats.records, "records made durable: in lake files or quarantined"),
                ("batches", stats.batches, "batches flushed"),
                ("files", stats.files, "lake files created"),
                ("bytes", stats.bytes, "bytes of lake files created"),
                ("quarantined", stats.quarantined, "invalid messages quarantined"),
                ("retirements", stats.retirements, "host retirements listed (no event)"),
                ("store_failures", stats.store_failures, "rounds the lake refused (retried)"),
                ("late_files", stats.late_files, "files written into hours beyond the look-back"),
            ],
        )
        out.append(
            Reading(
                "sysmetrics_lake_buffered_records",
                "gauge",
                "records consumed, not yet in a durable file",
                sum(len(b.records) for b in self._buffers.values()),
            )
        )
        out += [
            Reading(
                "sysmetrics_lake_consumer_lag",
                "gauge",
                "messages behind the partition's end (approximate on Tansu)",
                lag,
                {"partition": partition},
            )
            for partition, lag in sorted(stats.lag.items())
        ]
        return out + self.runtime.readings()

    def _write_status(self, force: bool = False) -> None:
        if self.status_file is None or (not force and time.monotonic() - self._last_status < 2.0):
            return
        self._last_status = time.monotonic()
        self.stats.lag = {str(p): lag for p, lag in self.runtime.measure_lag().items()}
        status = WriterStatus(
            **msgspec.structs.asdict(self.stats),
            pid=os.getpid(),
            process_start=this_process_start(),
            topic=self.topic,
            assigned=sorted(self.runtime.assigned),
            buffered=sum(len(b.records) for b in self._buffers.values()),
            paused=self.runtime.paused,
            updated_at=time.time(),
        )
        try:
            write_status(self.status_file, status)
        except OSError as exc:
            # A full disk holding the data dir must not stop a writer whose lake may be
            # elsewhere (or will have room again): `status` shows the file's age meanwhile.
            self._status.failed(exc, "going on")
        else:
            self._status.succeeded()


def run_writer(
    settings: Settings, idle_exit_s: float | None, announce: Callable[[str], None]
) -> WriterStats:
    """`sysmetrics consume`: ensure the topics, then write until SIGINT/SIGTERM (or
    ``idle_exit_s`` without messages), publishing a status file and /metrics meanwhile."""
    from sysmetrics.lake.status import remove_dead_writers, status_path
    from sysmetrics.observability import serve_metrics
    from sysmetrics.stop_signals import install_stop_signals
    from sysmetrics.stream.admin import ensure_topic

    # The writer allocates a few objects per message and builds no reference cycles: with
    # the default threshold the cyclic GC ran every 700 allocations and took a third of the
    # CPU while catching up (benchmarks/lake_writer.py).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    ensure_topic(settings)
    if settings.dead_letter_topic:
        ensure_topic(settings, settings.dead_letter_topic)
    stop = threading.Event()
    install_stop_signals(stop)
    remove_dead_writers(settings.data_dir)
    status_file = status_path(settings.data_dir, os.getpid())
    writer = LakeWriter(settings, stop=stop, status_file=status_file)
    metrics = serve_metrics(
        "consume", [writer.readings], settings.metrics_addr, settings.metrics_port
    )
    announce(f"writing {settings.topic} to {settings.lake_url} as group {settings.consumer_group}")
    try:
        return writer.run(max_idle_s=idle_exit_s)
    finally:
        metrics.close()
        status_file.unlink(missing_ok=True)
