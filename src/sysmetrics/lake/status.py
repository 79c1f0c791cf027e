"""The lake writers' status files: each running `sysmetrics consume` publishes its progress in
the data dir, and `status` and `up` read them. Light on purpose (no Kafka client)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sysmetrics.stream.broker import pid_alive


def status_path(data_dir: Path, pid: int) -> Path:
    """Where the writer with process id ``pid`` publishes its status."""
    return data_dir / "status" / f"lake-writer-{pid}.json"


def read_writer_status(data_dir: Path) -> list[dict[str, Any]]:
    """The status of every live lake writer of this data dir (a dead writer's file is
    skipped)."""
    out = []
    for path in sorted(status_path(data_dir, 0).parent.glob("lake-writer-*.json")):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if pid_alive(int(status.get("pid", 0))):
            out.append(status)
    return out
