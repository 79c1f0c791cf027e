"""The evaluator's firing alerts as a small file beside it, for the dashboard on the same
machine (no Kafka client needed to read them)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sysmetrics.config import Settings


def live_state_path(settings: Settings) -> Path:
    return settings.data_dir / "status" / "alerts-firing.json"


def write_firing(settings: Settings, updated_at: datetime, firing: list[dict[str, Any]]) -> None:
    path = live_state_path(settings)
    tmp = path.with_suffix(".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps({"updated_at": updated_at.isoformat(), "firing": firing}))
    tmp.replace(path)  # readers never see half a file


def read_firing(settings: Settings) -> tuple[datetime, list[dict[str, Any]]] | None:
    """(when the evaluator last wrote, its firing alerts); None when no evaluator runs here."""
    try:
        body = json.loads(live_state_path(settings).read_text())
    except (OSError, ValueError):
        return None
    return datetime.fromisoformat(body["updated_at"]), list(body["firing"])
