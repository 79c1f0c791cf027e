"""Parsing of the times and durations users type (always UTC)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_MAX_S = 100 * 366 * 86400
"""No duration users type here (a rule's ``for``, a backfill's ``--last``, a simulation) is
longer than a century; a far longer one made no date (an OverflowError)."""


def parse_duration(text: str) -> float:
    """'90' / '90s' / '30m' / '6h' / '2d' → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 6h, 2d)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > DURATION_MAX_S:
        raise ValueError(f"not a duration: {text!r} is longer than a century")
    return seconds


def parse_utc(text: str) -> datetime:
    """ISO 8601, hour precision allowed ('2026-11-27T14'); naive means UTC."""
    cleaned = text.strip().replace("Z", "+00:00")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}", cleaned):
        cleaned += ":00"
    try:
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"not a UTC time: {text!r} (use e.g. 2026-11-27T14:00Z)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def hour_floor(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def parse_range(
    start_text: str | None,
    end_text: str | None,
    last_text: str | None,
    default_end: datetime | None = None,
) -> tuple[datetime | None, datetime | None]:
    """The ``--from`` / ``--to`` / ``--last`` options every command takes as [start, end):
    ``--last`` counts back from ``--to``, else from ``default_end``, else from now; None where
    the range is open."""
    if start_text and last_text:
        raise ValueError("give either --from or --last, not both")
    end = parse_utc(end_text) if end_text else default_end
    start = parse_utc(start_text) if start_text else None
    if last_text:
        start = (end or datetime.now(UTC)) - timedelta(seconds=parse_duration(last_text))
    if start is not None and end is not None and end <= start:
        raise ValueError("--to must be after --from")
    return start, end
