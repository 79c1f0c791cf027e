"""The lake writers' status files: each running `sysmetrics consume` publishes its progress in
the data dir, and `status` and `up` read them. Light on purpose (no Kafka client)."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from sysmetrics import status_files


class WriterStats(msgspec.Struct, kw_only=True):
    """A lake writer's counters, kept while it runs."""

    records: int = 0
    batches: int = 0
    files: int = 0
    bytes: int = 0
    quarantined: int = 0
    retirements: int = 0  # hosts retired (schema.RETIRED_HEADER): in the manifests, no event
    clock_ahead: int = 0  # events whose ts is ahead of their arrival by more than the tolerance
    delayed: int = 0  # events that arrived later than the tolerance (spool replay, slow clock)
    late_files: int = 0  # files written into hours older than the hourly job's look-back
    commit_failures: int = 0
    store_failures: int = 0
    last_file: str | None = None
    last_flush_at: float | None = None
    started_at: float = msgspec.field(default_factory=time.time)
    lag: dict[str, int] = {}
    """Messages behind each assigned partition's end: approximate (Tansu's end offsets are
    not exact)."""


class WriterStatus(WriterStats, kw_only=True):
    """What a writer publishes: its counters and where it stands."""

    pid: int
    process_start: str | None = None
    """The writer process's :func:`~sysmetrics.status_files.process_start`."""
    topic: str
    assigned: list[int]
    buffered: int = 0
    paused: bool = False
    updated_at: float = 0.0

    @property
    def total_lag(self) -> int | None:
        return sum(self.lag.values()) if self.lag else None


def status_path(data_dir: Path, pid: int) -> Path:
    """Where the writer with process id ``pid`` publishes its status."""
    return status_files.status_path(data_dir, "lake-writer", pid)


def read_writer_status(data_dir: Path) -> list[WriterStatus]:
    """The status of every live lake writer of this data dir (a dead writer's file is
    skipped)."""
    return status_files.read_statuses(data_dir, "lake-writer", WriterStatus)


def remove_dead_writers(data_dir: Path) -> None:
    """Delete the status files of writers that are gone (see status_files.remove_dead)."""
    status_files.remove_dead(data_dir, "lake-writer", WriterStatus)
