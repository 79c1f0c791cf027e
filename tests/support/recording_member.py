"""A consumer-group member on the shared runtime whose stage only records what the runtime
handed it, one JSON line per ``HANDLED`` messages as it handles them (``handover`` true on the
first line of each call): run as a process (``python -m``) so a test can stop it with SIGSTOP
as a paused VM would be, which a thread of the test cannot be.

Usage: ``python -m tests.support.recording_member BOOTSTRAP TOPIC GROUP RECORD HANDOVER``
(the runtime's messages per call to the stage)
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Message

from sysmetrics.config import load_settings
from sysmetrics.stream.runtime import ConsumerRuntime

COMMIT_EVERY_S = 1.0
HANDLED = 50
HANDLING_S = 0.001
"""Each ``HANDLED`` messages take this long to handle: a member with a backlog stays behind it,
so librdkafka has fetched messages ahead of it, waiting in the client, when it is stopped; and
a stop lands most likely in the stage's handling."""


class RecordingStage:
    def __init__(self, record: Path) -> None:
        self._record = record.open("a", buffering=1)
        self.runtime: ConsumerRuntime | None = None
        self._handled: dict[int, int] = {}
        self._last_commit = time.monotonic()

    def _write(self, what: str, **fields: Any) -> None:
        self._record.write(json.dumps({"at": time.time(), "what": what, **fields}) + "\n")

    def assigned(self, partitions: list[int]) -> None:
        self._write("assigned", partitions=partitions)

    def revoked(self, partitions: list[int]) -> None:
        self._commit(partitions)
        self._write("revoked", partitions=partitions)

    def lost(self, partitions: list[int]) -> None:
        for partition in partitions:
            self._handled.pop(partition, None)
        self._write("lost", partitions=partitions)

    def receive(self, messages: list[Message], received: object) -> None:
        for start in range(0, len(messages), HANDLED):
            by_partition: dict[int, list[int]] = {}
            for message in messages[start : start + HANDLED]:
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None  # set on consumed messages
                by_partition.setdefault(partition, []).append(offset)
            for partition, offsets in by_partition.items():
                self._handled[partition] = max(offsets) + 1
                self._write(
                    "handled",
                    partition=partition,
                    offsets=[min(offsets), max(offsets)],
                    handover=start == 0,
                )
            time.sleep(HANDLING_S)

    def after_poll(self) -> None:
        if time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
            self._commit(list(self._handled))

    def poll_timeout(self) -> float:
        return 0.2

    def finish(self) -> None:
        self._commit(list(self._handled))

    def _commit(self, partitions: list[int]) -> None:
        assert self.runtime is not None
        self._last_commit = time.monotonic()
        offsets = {p: self._handled.pop(p) for p in partitions if p in self._handled}
        try:
            self.runtime.commit(offsets)
        except KafkaException as exc:  # fenced: what it had not committed is read again
            self._write("commit refused", error=str(exc))


def main(bootstrap: str, topic: str, group: str, record: str, handover: str) -> None:
    settings = load_settings(bootstrap_servers=bootstrap, topic=topic, consumer_group=group)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stage = RecordingStage(Path(record))
    stage.runtime = ConsumerRuntime(settings, topic, group, stage, stop, handover=int(handover))
    stage.runtime.run()


if __name__ == "__main__":
    main(*sys.argv[1:6])
