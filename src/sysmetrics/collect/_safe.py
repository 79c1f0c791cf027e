"""Run a sensor read so that any failure becomes a default value and a debug log line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("sysmetrics.collect")


def guarded(name: str, read: Callable[[], T], default: T) -> T:
    try:
        return read()
    except Exception as exc:  # a sensor failing must never stop the sample
        log.debug("sensor %s unavailable: %s: %s", name, type(exc).__name__, exc)
        return default


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def read_int(path: Path) -> int | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def clamp_pct(value: float | None) -> float | None:
    if value is None:
        return None
    return min(100.0, max(0.0, round(float(value), 2)))


_denied_logged: set[str] = set()


def wmi_records(query: Callable[[], Any], name: str) -> list[dict[str, Any]]:
    """A WMI class's instances as plain dicts (their properties). A class this account may
    not read (thermal zones need an administrator) or that the machine lacks gives [] and one
    log line per class, not one per sample."""
    try:
        return [{p: getattr(o, p) for p in o.properties} for o in query()]
    except Exception as exc:
        if name not in _denied_logged:
            _denied_logged.add(name)
            log.info("WMI %s unavailable (%s): its fields stay null", name, exc)
        return []
