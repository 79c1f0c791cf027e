"""Status files: a long-running process (a lake writer, an ingest receiver) publishes where it
stands as one JSON file in the data dir, and `sysmetrics status` and `up` read them. Light on
purpose (no Kafka client): a reader needs only this module and the file's struct."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from sysmetrics.stream.broker import pid_alive

Status = TypeVar("Status", bound=msgspec.Struct)


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def process_start(pid: int) -> str | None:
    """When ``pid`` started, as text that no other process with that pid has: after a reboot a
    status file's pid is often another process's, and a file naming a live pid showed a dead
    writer as running. Linux: the boot's id and the start tick since boot (a clock stepped since
    does not move them, as it moves a start time derived from the boot time); elsewhere the
    start time the system recorded. None when the process is gone or cannot be read."""
    if BOOT_ID.exists():
        try:
            ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
            return f"{BOOT_ID.read_text().strip()}:{ticks}"
        except (OSError, IndexError):
            return None
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.3f}"
    except psutil.Error:
        return None


def this_process_start() -> str | None:
    """:func:`process_start` of this process, read once (a status is rewritten every seconds)."""
    return _start_of(os.getpid())


@functools.lru_cache(maxsize=1)
def _start_of(pid: int) -> str | None:
    return process_start(pid)


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


def remove_dead(data_dir: Path, kind: str, struct: type[Status]) -> None:
    """Delete the status files of ``kind`` whose process is gone (a ``kill -9``, a crash, a
    reboot): readers skip them, but nothing else removes them. Called by a process of that kind
    as it starts; a file it may not delete is left."""
    statuses = read_statuses(data_dir, kind, struct)
    alive = {status.pid for status in statuses}  # type: ignore[attr-defined]
    for path in status_path(data_dir, kind, 0).parent.glob(f"{kind}-*.json"):
        pid = path.stem.removeprefix(f"{kind}-")
        if pid.isdigit() and int(pid) not in alive:
            with contextlib.suppress(OSError):
                path.unlink()


def read_statuses(data_dir: Path, kind: str, struct: type[Status]) -> list[Status]:
    """The status of every live process of ``kind`` of this data dir (one whose process is
    gone, whose pid another process took since, or unreadable, is skipped); ``struct`` has the
    process id as ``pid`` and its :func:`process_start` as ``process_start`` (None in files
    written before 2026-12-06: the pid alone is trusted)."""
    out = []
    for path in sorted(status_path(data_dir, kind, 0).parent.glob(f"{kind}-*.json")):
        try:
            status = msgspec.json.decode(path.read_bytes(), type=struct)
        except (OSError, msgspec.DecodeError):
            continue
        pid, started = status.pid, status.process_start  # type: ignore[attr-defined]
        if pid_alive(pid) and started in (None, process_start(pid)):
            out.append(status)
    return out
