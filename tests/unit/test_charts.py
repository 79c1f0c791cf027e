"""The SVG charts: one value is a visible point, gaps are not bridged, time labels differ."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from sysmetrics.dashboard.charts import Series, line_chart

T0 = datetime(2026, 11, 27, 14, tzinfo=UTC)


def ticks(svg: str) -> list[str]:
    return re.findall(r'class="tick time">([^<]*)<', svg)


def test_a_single_hourly_value_is_drawn_as_a_point_with_one_time_label() -> None:
    svg = line_chart("CPU %", [Series("average", [(T0, 42.0)])], "%", 100)
    assert "<polyline" not in svg  # a line of one point draws nothing
    assert svg.count("<circle") == 1 and 'data-points="1"' in svg
    assert ticks(svg) == ["14:00:00"]  # not the same label three times


def test_a_missing_value_breaks_the_line() -> None:
    points = [(T0 + timedelta(minutes=m), None if m == 3 else float(m)) for m in range(7)]
    svg = line_chart("CPU %", [Series("average", points)], "%", 100)
    assert svg.count("<polyline") == 2 and 'data-points="6"' in svg


def test_time_labels_follow_the_span() -> None:
    day = [(T0 + timedelta(hours=h), 1.0) for h in range(24)]
    month = [(T0 + timedelta(days=d), 1.0) for d in range(30)]
    assert ticks(line_chart("a", [Series("s", day)])) == ["14:00", "01:30", "13:00"]
    assert ticks(line_chart("a", [Series("s", month)])) == ["27 Nov", "12 Dec", "26 Dec"]


def test_the_largest_doubles_draw_and_an_overflowed_average_is_a_gap() -> None:
    points = [(T0 + timedelta(minutes=m), v) for m, v in enumerate((1.7e308, math.inf, 1e308))]
    svg = line_chart("Load", [Series("load", points)])
    coordinates = re.findall(r'\b(?:x|y|x1|x2|y1|y2|cx|cy)="([^"]*)"', svg)
    assert coordinates and all(math.isfinite(float(c)) for c in coordinates)
    assert svg.count("<circle") == 2 and 'data-points="2"' in svg  # inf left out, not drawn
