"""Status files: a long-running process (a lake writer, an ingest receiver) publishes where it
stands as one JSON file in the data dir, and `sysmetrics status` and `up` read them. Light on
purpose (no Kafka client): a reader needs only this module and the file's struct."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from sysmetrics.stream.broker import pid_alive

Status = TypeVar("Status", bound=msgspec.Struct)


def status_path(data_dir: Path, kind: str, pid: int) -> Path:
    """Where the process ``pid`` of ``kind`` (``lake-writer``, ``ingest``) publishes."""
    return data_dir / "status" / f"{kind}-{pid}.json"


def write_status(path: Path, status: msgspec.Struct | dict[str, Any]) -> None:
    """Replace the status file atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_bytes(msgspec.json.encode(status))
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: not left behind
        raise
    os.replace(tmp, path)


def read_statuses(data_dir: Path, kind: str, struct: type[Status]) -> list[Status]:
    """The status of every live process of ``kind`` of this data dir (one whose process is
    gone, or unreadable, is skipped); ``struct`` has the process id as ``pid``."""
    out = []
    for path in sorted(status_path(data_dir, kind, 0).parent.glob(f"{kind}-*.json")):
        try:
            status = msgspec.json.decode(path.read_bytes(), type=struct)
        except (OSError, msgspec.DecodeError):
            continue
        if pid_alive(getattr(status, "pid")):  # noqa: B009 (a field every status struct has)
            out.append(status)
    return out
