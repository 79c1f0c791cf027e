"""A bounded, crash-safe, on-disk FIFO of messages not yet acknowledged by Kafka.

The collector appends every event here before producing it, and acknowledges it when the
delivery report says the broker has it. A broker outage of any length (up to the bound) or a
restart of the collector therefore loses nothing. When the bound is hit, the oldest segment is
dropped, loudly, and counted.

Layout: ``seg-<first seq>.log`` files of records ``[seq u64][key len u32][value len u32][key]
[value]`` and a ``acked`` file with the first sequence number not yet acknowledged. A record
torn by a crash mid-write is cut off when the spool is opened. An append that fails (a full
disk writes part of a record, then refuses) is undone before the error is raised, so the
spool holds whole records only and the next append after the disk has room starts clean.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from sysmetrics.logs import RepeatedFailure

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">QII")


@dataclass(slots=True)
class SpooledRecord:
    seq: int
    key: bytes
    value: bytes
    acked: bool = False

    @property
    def size(self) -> int:
        return _HEADER.size + len(self.key) + len(self.value)


def _rejected_name(seq: int) -> str:
    return f"{seq:020d}.msg"


def _rejected_bytes(record: SpooledRecord) -> bytes:
    """What :meth:`Spool.set_aside` keeps of a record: its key, a newline, its value."""
    return record.key + b"\n" + record.value


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(4 * 1024 * 1024, max_bytes // 8))
        self.dropped = 0
        self._pending: deque[SpooledRecord] = deque()
        self._segments: deque[tuple[int, Path, int]] = deque()  # (first seq, path, bytes)
        self._ack_file = directory / "acked"
        self._acked_unsaved = False
        self._ack_save = RepeatedFailure(
            log, logging.ERROR, "save how far the spool's delivery got"
        )
        directory.mkdir(parents=True, exist_ok=True)
        self._out: int | None = None
        self._next_seq = self._load()

    # ------------------------------------------------------------------ state
    @property
    def pending(self) -> int:
        return sum(1 for r in self._pending if not r.acked)

    @property
    def size_bytes(self) -> int:
        return sum(size for _, _, size in self._segments)

    def unacked(self) -> list[SpooledRecord]:
        return [r for r in self._pending if not r.acked]

    # ------------------------------------------------------------------ load
    def _load(self) -> int:
        acked_upto = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            acked_upto = int(self._ack_file.read_text().strip() or 0)
        next_seq = acked_upto
        for path in sorted(self.directory.glob("seg-*.log")):
            data = path.read_bytes()
            pos = 0
            while pos + _HEADER.size <= len(data):
                seq, key_len, value_len = _HEADER.unpack_from(data, pos)
                end = pos + _HEADER.size + key_len + value_len
                if end > len(data):
                    break
                if seq >= acked_upto:
                    body = pos + _HEADER.size
                    self._pending.append(
                        SpooledRecord(seq, data[body : body + key_len], data[body + key_len : end])
                    )
                next_seq = max(next_seq, seq + 1)
                pos = end
            if pos < len(data):
                log.warning("spool segment %s: cut a torn record at byte %d", path.name, pos)
                with path.open("r+b") as fh:
                    fh.truncate(pos)
            self._segments.append((int(path.stem[4:]), path, pos))
        self._next_seq = next_seq
        self._skip_set_aside()
        self._drop_acked_segments()
        if self._pending:
            log.info("spool holds %d unsent events from an earlier run", len(self._pending))
        return next_seq

    def _skip_set_aside(self) -> None:
        """Acknowledge the records :meth:`set_aside` kept before a restart (the acknowledged
        prefix saved stops at the first record still in flight): resent, each would be refused
        and set aside again. Only a file holding the record's very bytes counts (a torn one, or
        one of an earlier spool whose sequence numbers started again, does not)."""
        rejected = self.directory / "rejected"
        try:
            names = {path.name for path in rejected.iterdir()}
        except FileNotFoundError:
            return
        for record in self._pending:
            path = rejected / _rejected_name(record.seq)
            if path.name in names and path.read_bytes() == _rejected_bytes(record):
                self.ack(record)

    # ------------------------------------------------------------------ write
    def append(self, key: bytes, value: bytes) -> SpooledRecord:
        return self.extend([(key, value)])[0]

    def extend(self, messages: list[tuple[bytes, bytes]]) -> list[SpooledRecord]:
        """Append messages, durable (one fsync for all) when this returns; an OSError (a full
        disk) leaves the spool as it was, none of them in it."""
        before = (self._next_seq, list(self._segments))
        try:
            records = self._write(messages)
        except OSError:
            self._undo(*before)
            raise
        self._pending.extend(records)
        try:
            self._enforce_bound()
        except OSError as exc:  # the records are spooled; the bound is enforced next time
            log.error("spool: cannot drop the oldest segment (%s)", exc)
        return records

    def _undo(self, next_seq: int, segments: list[tuple[int, Path, int]]) -> None:
        self._close_out()
        self._next_seq = next_seq
        kept = {path for _, path, _ in segments}
        for _, path, _ in self._segments:
            if path not in kept:
                path.unlink(missing_ok=True)
        self._segments = deque(segments)
        if not segments:
            return
        first, path, size = segments[-1]
        try:
            os.truncate(path, size)
        except OSError as exc:
            # Never append after bytes that may be a torn record: the next append starts a
            # new segment, and opening the spool cuts this one's tail.
            log.error("spool segment %s: cannot cut a failed append (%s)", path.name, exc)
            self._segments[-1] = (first, path, max(size, self.segment_bytes))

    def _write(self, messages: list[tuple[bytes, bytes]]) -> list[SpooledRecord]:
        records = []
        for key, value in messages:
            record = SpooledRecord(self._next_seq, key, value)
            self._next_seq += 1
            if not self._segments or self._segments[-1][2] >= self.segment_bytes:
                self._close_out()
                path = self.directory / f"seg-{record.seq:020d}.log"
                self._segments.append((record.seq, path, 0))
            first, path, size = self._segments[-1]
            if self._out is None:
                self._out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            write_all(self._out, _HEADER.pack(record.seq, len(key), len(value)) + key + value)
            self._segments[-1] = (first, path, size + record.size)
            records.append(record)
            if self._segments[-1][2] >= self.segment_bytes:
                os.fsync(self._out)  # a segment is closed durable before the next one starts
        if self._out is not None:
            os.fsync(self._out)
        return records

    def _close_out(self) -> None:
        if self._out is not None:
            os.close(self._out)
            self._out = None

    def _enforce_bound(self) -> None:
        while self.size_bytes > self.max_bytes and len(self._segments) > 1:
            _, path, dropped_bytes = self._segments.popleft()
            next_first = self._segments[0][0]
            lost = 0
            while self._pending and self._pending[0].seq < next_first:
                if not self._pending.popleft().acked:
                    lost += 1
            path.unlink(missing_ok=True)
            self._write_acked(next_first)
            self.dropped += lost
            if lost:
                log.error(
                    "SPOOL FULL (%d bytes > SYSMETRICS_SPOOL_MAX_BYTES=%d): dropped the %d "
                    "oldest undelivered events (%d dropped so far); is the broker reachable?",
                    self.size_bytes + dropped_bytes,
                    self.max_bytes,
                    lost,
                    self.dropped,
                )

    # ------------------------------------------------------------------ ack
    def set_aside(self, record: SpooledRecord) -> Path:
        """Move a record Kafka can never take (over its message size limit) out of the FIFO
        into ``rejected/<seq>.msg`` (its key, a newline, its value), durable before the record
        counts as acknowledged; OSError (a full disk) leaves it spooled."""
        rejected = self.directory / "rejected"
        rejected.mkdir(exist_ok=True)
        path = rejected / _rejected_name(record.seq)
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(handle, _rejected_bytes(record))
            os.fsync(handle)
        finally:
            os.close(handle)
        self.ack(record)
        return path

    def ack(self, record: SpooledRecord) -> None:
        """Mark ``record`` delivered; :meth:`save_acked` makes the progress durable."""
        record.acked = True
        while self._pending and self._pending[0].acked:
            self._pending.popleft()
            self._acked_unsaved = True

    def save_acked(self) -> None:
        """Write how far delivery got and delete fully delivered segments: once per poll, not
        per record (a receiver acknowledges thousands of events a second). A crash before it
        only makes the next start resend what Kafka already has, which dedup by event_id
        absorbs."""
        if self._acked_unsaved:
            try:
                self._write_acked(self._pending[0].seq if self._pending else self._next_seq)
            except OSError as exc:  # a full disk: kept for the next call
                self._ack_save.failed(exc, "will retry")
                return
            self._ack_save.succeeded()
            self._acked_unsaved = False
            self._drop_acked_segments()

    def _write_acked(self, upto: int) -> None:
        tmp = self._ack_file.with_suffix(".tmp")
        tmp.write_text(f"{upto}\n")
        os.replace(tmp, self._ack_file)

    def _drop_acked_segments(self) -> None:
        upto = self._pending[0].seq if self._pending else self._next_seq
        # A segment is fully acknowledged when the next segment starts at or before `upto`.
        while len(self._segments) > 1 and self._segments[1][0] <= upto:
            _, path, _ = self._segments.popleft()
            path.unlink(missing_ok=True)
        if not self._pending and self._segments and self._segments[-1][2] >= self.segment_bytes:
            self._close_out()
            _, path, _ = self._segments.popleft()
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self.save_acked()
        self._close_out()


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` or raise OSError: a full disk (or a file-size limit) may take part
    of a write and refuse the rest."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, "no byte written")
        view = view[written:]
