"""The --from / --to / --last options, parsed once for every command that takes a range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sysmetrics.timeutil import parse_range

END = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_last_counts_back_from_to_else_from_the_default_end() -> None:
    assert parse_range(None, "2026-11-30T12", "6h") == (END - timedelta(hours=6), END)
    assert parse_range(None, None, "1d", default_end=END) == (END - timedelta(days=1), END)
    assert parse_range("2026-11-30T09Z", None, None) == (END - timedelta(hours=3), None)
    assert parse_range(None, None, None) == (None, None)


@pytest.mark.parametrize(
    ("start", "end", "last", "message"),
    [
        ("2026-11-30T09", None, "6h", "either --from or --last"),
        ("2026-11-30T12", "2026-11-30T12", None, "--to must be after --from"),
        (None, None, "six hours", "not a duration"),
        ("yesterday", None, None, "not a UTC time"),
    ],
)
def test_a_wrong_range_says_what_to_type(
    start: str | None, end: str | None, last: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_range(start, end, last)
