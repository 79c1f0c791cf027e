"""Server-side SVG line charts: no JavaScript, no external assets, readable without a network."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from datetime import datetime
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")
DOTS_UP_TO = 48
"""Series with this many values or fewer also mark each value with a dot (hourly views)."""


@dataclass
class Series:
    label: str
    points: list[tuple[datetime, float | None]]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    scale = 1.0
    while scale * 10 < value:
        scale *= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * scale >= value:
            return step * scale if step * scale < math.inf else value
    return value


def line_chart(
    title: str,
    series: list[Series],
    unit: str = "",
    y_max: float | None = None,
    width: int = 640,
    height: int = 220,
) -> str:
    """An SVG chart with axes, gridlines, a legend and one polyline per series."""
    pad_l, pad_r, pad_t, pad_b = 56, 12, 28, 34
    # An average that overflowed (a host sending the schema's largest values) is no point to
    # draw: it becomes a gap, as a missing value does.
    series = [
        Series(s.label, [(t, v if v is None or math.isfinite(v) else None) for t, v in s.points])
        for s in series
    ]
    xs = [t for s in series for t, v in s.points if v is not None]
    ys = [v for s in series for _, v in s.points if v is not None]
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" data-points="{len(set(xs))}"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{pad_l}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    if not xs:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
            'class="chart-empty">no data yet</text></svg>'
        )
        return "".join(parts)
    t0, t1 = min(xs).timestamp(), max(xs).timestamp()
    span = max(t1 - t0, 1.0)
    headroom = min(max(ys) * 1.1, sys.float_info.max)  # 10 % above the peak, if a double can
    top = y_max if y_max is not None else _nice_max(headroom)
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(t: datetime) -> float:
        return pad_l + (t.timestamp() - t0) / span * plot_w

    def y(v: float) -> float:
        return pad_t + plot_h - min(v, top) / top * plot_h

    for i in range(5):
        value = top / 4 * i  # not top * i: near the largest double that is infinite
        yy = y(value)
        parts.append(
            f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{pad_l - 6}" y="{yy + 4:.1f}" text-anchor="end" class="tick">'
            f"{_fmt(value)}{escape(unit)}</text>"
        )
    if span_is_zero := t1 == t0:
        ticks: tuple[tuple[float, str], ...] = ((0.5, "middle"),)
    else:
        ticks = ((0.0, "start"), (0.5, "middle"), (1.0, "end"))
    label_format = _time_format(t1 - t0)
    for frac, anchor in ticks:
        t = datetime.fromtimestamp(t0 + frac * span, tz=min(xs).tzinfo)
        parts.append(
            f'<text x="{pad_l + frac * plot_w:.1f}" y="{height - 12}" '
            f'text-anchor="{anchor}" class="tick time">{t:{label_format}}</text>'
        )
    for index, s in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        known = [(t, v) for t, v in s.points if v is not None]
        for segment in _segments(s.points):
            if len(segment) > 1:
                pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in segment)
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>'
                )
        if span_is_zero or len(known) <= DOTS_UP_TO:
            # A lone value draws no line; few values read better as visible points.
            for t, v in known:
                cx = pad_l + plot_w / 2 if span_is_zero else x(t)
                parts.append(
                    f'<circle cx="{cx:.1f}" cy="{y(v):.1f}" r="3" fill="{color}">'
                    f"<title>{t:%Y-%m-%d %H:%M} {_fmt(v)}{escape(unit)}</title></circle>"
                )
        parts.append(
            f'<rect x="{width - pad_r - 150}" y="{6 + 14 * index}" width="10" height="10"'
            f' fill="{color}"/><text x="{width - pad_r - 136}" y="{15 + 14 * index}" '
            f'class="legend">{escape(s.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _segments(
    points: list[tuple[datetime, float | None]],
) -> list[list[tuple[datetime, float]]]:
    """Runs of known values: a missing value breaks the line instead of bridging the gap."""
    runs: list[list[tuple[datetime, float]]] = [[]]
    for t, v in points:
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, v))
    return [run for run in runs if run]


def _time_format(span_s: float) -> str:
    """Axis labels that differ from each other and read naturally for the span shown."""
    if span_s < 600:
        return "%H:%M:%S"
    if span_s <= 86400:
        return "%H:%M"
    if span_s <= 7 * 86400:
        return "%a %H:%M"
    return "%d %b"


def _fmt(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"
