"""What `sysmetrics up` records of itself in ``<data dir>/up.json`` (its pid, its components'
pids, whether it started the broker), read back without importing the pipeline: `up` reads it
to take over after a killed `up`, `status` to say whether one runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sysmetrics.stream.broker import runs

COMMAND_WORD = {"airflow": "airflow"}
"""A word of each component's command line other than "sysmetrics": a recorded pid counts as
the component only while it runs that command (after a reboot it is often another process's)."""


@dataclass(frozen=True)
class UpState:
    pid: int | None
    running: bool
    """Whether that `up` still runs."""
    components: dict[str, int] = field(default_factory=dict)
    """Its components still running, by name."""
    broker_pid: int | None = None
    own_broker: bool = False
    """Whether it started the broker (and stops it when it stops)."""


def state_file(data_dir: Path) -> Path:
    return data_dir / "up.json"


def read_up_state(data_dir: Path) -> UpState | None:
    """The state the last `up` of ``data_dir`` wrote, None when there is none (no `up` ran, or
    it stopped cleanly). In a container restarted on the same volume the last `up` may have had
    this very pid, a component its parent's (a shell that started it): neither counts."""
    try:
        state = json.loads(state_file(data_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    ours = _this_process_and_its_parents()
    up_pid = state.get("pid") if isinstance(state.get("pid"), int) else None
    recorded = state.get("components")
    if not isinstance(recorded, dict):
        recorded = {}
    components = {
        name: pid
        for name, pid in recorded.items()
        if isinstance(pid, int)
        and pid not in ours
        and runs(pid, COMMAND_WORD.get(name, "sysmetrics"))
    }
    broker_pid = state.get("broker_pid")
    return UpState(
        pid=up_pid,
        running=up_pid is not None and up_pid not in ours and runs(up_pid, "sysmetrics", "up"),
        components=components,
        broker_pid=broker_pid if isinstance(broker_pid, int) else None,
        own_broker=state.get("own_broker") is True,
    )


def _this_process_and_its_parents() -> set[int]:
    import psutil

    me = psutil.Process()
    return {me.pid, *(parent.pid for parent in me.parents())}
