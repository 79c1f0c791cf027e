"""The host page's charts from the rows the read model returns: the chart families, rates from
the raw counters, and one line per mount or GPU on raw ranges."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sysmetrics.dashboard.charts import Series, line_chart

MOUNTS_SHOWN = 6
"""Per-mount chart: the fullest mounts (a host with dozens of container mounts stays legible)."""
COUNTER_RATES = (
    ("net_recv_counter", "net_recv_rate_avg"),
    ("net_sent_counter", "net_sent_rate_avg"),
    ("disk_read_counter", "disk_read_rate_avg"),
    ("disk_write_counter", "disk_write_rate_avg"),
)
"""Raw cumulative counters and the per-bucket rate (bytes/s) the host page draws from them."""


def with_counter_rates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bytes/s between consecutive buckets of the raw counters; a counter that went back (a
    reboot) or a missing value leaves that bucket's rate unknown, never negative."""
    previous: dict[str, Any] | None = None
    for row in rows:
        for counter, rate in COUNTER_RATES:
            value, before = row[counter], previous[counter] if previous else None
            seconds = (row["ts"] - previous["ts"]).total_seconds() if previous else 0
            ok = value is not None and before is not None and value >= before and seconds > 0
            row[rate] = (value - before) / seconds if ok else None
        previous = row
    return rows


def with_hourly_rates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        for total, rate in (
            ("disk_read_bytes", "disk_read_rate_avg"),
            ("disk_write_bytes", "disk_write_rate_avg"),
        ):
            row[rate] = row[total] / 3600 if row[total] is not None else None
    return rows


HOST_CHARTS: tuple[tuple[str, str, float | None, tuple[tuple[str, str], ...]], ...] = (
    ("CPU %", "%", 100, (("cpu_avg", "average"), ("cpu_p95", "p95"), ("cpu_max", "max"))),
    ("Load (1 min)", "", None, (("load_avg", "average"),)),
    (
        "Memory and swap %",
        "%",
        100,
        (("mem_avg", "memory avg"), ("mem_max", "memory max"), ("swap_avg", "swap avg")),
    ),
    ("Disk used % (fullest mount)", "%", 100, (("disk_used_max", "max"),)),
    (
        "Disk I/O bytes/s",
        "",
        None,
        (("disk_read_rate_avg", "read"), ("disk_write_rate_avg", "write")),
    ),
    (
        "Network bytes/s",
        "",
        None,
        (("net_recv_rate_avg", "received"), ("net_sent_rate_avg", "sent")),
    ),
    ("Temperature °C (hottest sensor)", "°", None, (("temp_avg", "average"), ("temp_max", "max"))),
    (
        "GPU utilization % (mean of GPUs)",
        "%",
        100,
        (("gpu_util_avg", "average"), ("gpu_util_max", "max")),
    ),
    ("GPU memory used bytes (all GPUs)", "", None, (("gpu_mem_used_max", "max"),)),
    ("GPU temperature °C", "°", None, (("gpu_temp_max", "hottest GPU"),)),
    ("GPU power W (all GPUs)", "", None, (("gpu_power_avg", "average"), ("gpu_power_max", "max"))),
    (
        "Battery %",
        "%",
        100,
        (("battery_min_pct", "charge (lowest)"), ("battery_health_pct", "health")),
    ),
)
"""The host page's chart families: (title, unit, y max, ((column, legend), ...)). Hourly and
raw-bucket rows carry the same column names; a series a view lacks (p95 of a bucket) is empty."""
OPTIONAL_FAMILIES = ("GPU", "Battery")
"""Chart families drawn only for hosts that have the hardware."""


def device_series(rows: list[dict[str, Any]], bucket_s: int) -> dict[str, list[Series]]:
    """Each mount's and each GPU's own lines from the raw rows' JSON columns, in ``bucket_s``
    buckets: the fullest mount at its maximum, each GPU's mean utilization and hottest reading."""
    mounts: dict[str, dict[datetime, float]] = defaultdict(dict)
    util: dict[int, dict[datetime, list[float]]] = defaultdict(lambda: defaultdict(list))
    temp: dict[int, dict[datetime, float]] = defaultdict(dict)
    stamps: list[datetime] = []
    for row in rows:
        epoch = int(row["ts"].timestamp()) // bucket_s * bucket_s
        stamp = datetime.fromtimestamp(epoch, UTC)
        if not stamps or stamps[-1] != stamp:
            stamps.append(stamp)
        for disk in json.loads(row["disks_json"] or "[]"):
            if disk.get("used_pct") is not None:
                seen = mounts[disk["mountpoint"]]
                seen[stamp] = max(seen.get(stamp, 0.0), disk["used_pct"])
        for gpu in json.loads(row["gpus_json"] or "[]"):
            if gpu.get("utilization_pct") is not None:
                util[gpu["index"]][stamp].append(gpu["utilization_pct"])
            if gpu.get("temperature_celsius") is not None:
                hottest = temp[gpu["index"]]
                hottest[stamp] = max(hottest.get(stamp, -273.0), gpu["temperature_celsius"])
    fullest = sorted(mounts, key=lambda m: -max(mounts[m].values()))[:MOUNTS_SHOWN]
    return {
        "Disk used %": [
            Series(m, [(t, mounts[m].get(t)) for t in stamps]) for m in sorted(fullest)
        ],
        "GPU utilization %": [
            Series(
                f"GPU {i}",
                [(t, sum(v) / len(v) if (v := util[i].get(t)) else None) for t in stamps],
            )
            for i in sorted(util)
        ],
        "GPU temperature °C": [
            Series(f"GPU {i}", [(t, temp[i].get(t)) for t in stamps]) for i in sorted(temp)
        ],
    }


PER_DEVICE_TITLES = {
    "Disk used %": "Disk used % per mount",
    "GPU utilization %": "GPU utilization % per GPU",
    "GPU temperature °C": "GPU temperature °C per GPU",
}


def host_charts(
    rows: list[dict[str, Any]],
    time_key: str,
    period: str,
    per_device: dict[str, list[Series]] | None = None,
) -> list[str]:
    """The host page's charts; ``per_device`` (raw ranges) replaces a family's summary lines
    with one line per mount or GPU."""
    charts = []
    for family_title, unit, y_max, columns in HOST_CHARTS:
        title = family_title
        series = [
            Series(label, [(r[time_key], r.get(column)) for r in rows]) for column, label in columns
        ]
        for prefix, replacement in (per_device or {}).items():
            if family_title.startswith(prefix) and replacement:
                title, series = PER_DEVICE_TITLES[prefix], replacement
        has_values = any(v is not None for s in series for _, v in s.points)
        if family_title.startswith(OPTIONAL_FAMILIES) and not has_values:
            continue
        charts.append(line_chart(f"{title} {period}", series, unit, y_max))
    return charts
