"""Every Prometheus series sysmetrics serves, named once (Prometheus' naming conventions:
base units, ``_total`` for counters, ``_percent`` for 0-100).

Each series has the labels ``host_id``, ``hostname`` and ``os``; per-device series add
``mountpoint`` or ``gpu``. Raw series are one sample per event (the warehouse's raw table, or
the lake for hours the warehouse no longer holds); ``…_1h`` series are the hourly table's
aggregates, one sample per host and hour stamped at the hour's end (the value a recording rule
``avg_over_time(x[1h])`` would give on the hour), so a year costs 8,760 samples per host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

HOST_LABELS: Final = ("host_id", "hostname", "os")
"""The labels every series carries; matchers on them are pushed down into the warehouse."""


@dataclass(frozen=True)
class RawSeries:
    name: str
    column: str
    """The raw table's column."""
    kind: Literal["gauge", "counter"] = "gauge"


@dataclass(frozen=True)
class DeviceSeries:
    name: str
    column: Literal["disks_json", "gpus_json"]
    key: str
    """The device's identity in the JSON array, served as the ``label``."""
    label: str
    field: str


@dataclass(frozen=True)
class HourlySeries:
    name: str
    column: str
    """The hourly table's column."""


RAW: Final = (
    RawSeries("sysmetrics_cpu_utilization_percent", "cpu_pct"),
    RawSeries("sysmetrics_cpu_logical_cores", "logical_cores"),
    RawSeries("sysmetrics_load1", "load_1m"),
    RawSeries("sysmetrics_memory_used_percent", "mem_used_pct"),
    RawSeries("sysmetrics_memory_used_bytes", "mem_used_bytes"),
    RawSeries("sysmetrics_memory_total_bytes", "mem_total_bytes"),
    RawSeries("sysmetrics_swap_used_percent", "swap_used_pct"),
    RawSeries("sysmetrics_filesystem_fullest_used_percent", "disk_used_pct"),
    RawSeries("sysmetrics_filesystem_used_bytes", "disk_used_bytes"),
    RawSeries("sysmetrics_filesystem_size_bytes", "disk_total_bytes"),
    RawSeries("sysmetrics_disk_read_bytes_total", "disk_read_bytes", "counter"),
    RawSeries("sysmetrics_disk_written_bytes_total", "disk_write_bytes", "counter"),
    RawSeries("sysmetrics_network_receive_bytes_total", "net_bytes_recv", "counter"),
    RawSeries("sysmetrics_network_transmit_bytes_total", "net_bytes_sent", "counter"),
    RawSeries("sysmetrics_temperature_max_celsius", "temp_max_celsius"),
    RawSeries("sysmetrics_gpu_count", "gpu_count"),
    RawSeries("sysmetrics_battery_percent", "battery_pct"),
    RawSeries("sysmetrics_battery_health_percent", "battery_health_pct"),
    RawSeries("sysmetrics_battery_plugged", "battery_plugged"),
)
COUNTERS: Final = frozenset(s.name for s in RAW if s.kind == "counter")
"""Cumulative totals: served carried over a step down that is no reboot
(:func:`sysmetrics.remote_read.query.carried_over`)."""

DEVICES: Final = (
    DeviceSeries(
        "sysmetrics_filesystem_used_percent", "disks_json", "mountpoint", "mountpoint", "used_pct"
    ),
    DeviceSeries(
        "sysmetrics_gpu_utilization_percent", "gpus_json", "index", "gpu", "utilization_pct"
    ),
    DeviceSeries(
        "sysmetrics_gpu_memory_used_bytes", "gpus_json", "index", "gpu", "memory_used_bytes"
    ),
    DeviceSeries(
        "sysmetrics_gpu_temperature_celsius", "gpus_json", "index", "gpu", "temperature_celsius"
    ),
    DeviceSeries("sysmetrics_gpu_power_watts", "gpus_json", "index", "gpu", "power_watts"),
)

HOURLY: Final = (
    HourlySeries("sysmetrics_samples_1h", "samples"),
    HourlySeries("sysmetrics_completeness_percent_1h", "completeness_pct"),
    HourlySeries("sysmetrics_cpu_utilization_percent_avg_1h", "cpu_avg"),
    HourlySeries("sysmetrics_cpu_utilization_percent_min_1h", "cpu_min"),
    HourlySeries("sysmetrics_cpu_utilization_percent_max_1h", "cpu_max"),
    HourlySeries("sysmetrics_cpu_utilization_percent_p95_1h", "cpu_p95"),
    HourlySeries("sysmetrics_load1_avg_1h", "load_avg"),
    HourlySeries("sysmetrics_memory_used_percent_avg_1h", "mem_avg"),
    HourlySeries("sysmetrics_memory_used_percent_max_1h", "mem_max"),
    HourlySeries("sysmetrics_memory_used_percent_p95_1h", "mem_p95"),
    HourlySeries("sysmetrics_swap_used_percent_avg_1h", "swap_avg"),
    HourlySeries("sysmetrics_swap_used_percent_max_1h", "swap_max"),
    HourlySeries("sysmetrics_filesystem_fullest_used_percent_avg_1h", "disk_used_avg"),
    HourlySeries("sysmetrics_filesystem_fullest_used_percent_max_1h", "disk_used_max"),
    HourlySeries("sysmetrics_temperature_max_celsius_avg_1h", "temp_avg"),
    HourlySeries("sysmetrics_temperature_max_celsius_max_1h", "temp_max"),
    HourlySeries("sysmetrics_temperature_max_celsius_p95_1h", "temp_p95"),
    HourlySeries("sysmetrics_gpu_utilization_percent_avg_1h", "gpu_util_avg"),
    HourlySeries("sysmetrics_gpu_utilization_percent_max_1h", "gpu_util_max"),
    HourlySeries("sysmetrics_gpu_utilization_percent_p95_1h", "gpu_util_p95"),
    HourlySeries("sysmetrics_gpu_memory_used_bytes_max_1h", "gpu_mem_used_max"),
    HourlySeries("sysmetrics_gpu_temperature_celsius_max_1h", "gpu_temp_max"),
    HourlySeries("sysmetrics_gpu_power_watts_avg_1h", "gpu_power_avg"),
    HourlySeries("sysmetrics_gpu_power_watts_max_1h", "gpu_power_max"),
    HourlySeries("sysmetrics_network_receive_bytes_1h", "net_recv_bytes"),
    HourlySeries("sysmetrics_network_transmit_bytes_1h", "net_sent_bytes"),
    HourlySeries("sysmetrics_network_receive_bytes_per_second_avg_1h", "net_recv_rate_avg"),
    HourlySeries("sysmetrics_network_transmit_bytes_per_second_avg_1h", "net_sent_rate_avg"),
    HourlySeries("sysmetrics_network_receive_bytes_per_second_max_1h", "net_recv_rate_peak"),
    HourlySeries("sysmetrics_network_transmit_bytes_per_second_max_1h", "net_sent_rate_peak"),
    HourlySeries("sysmetrics_disk_read_bytes_1h", "disk_read_bytes"),
    HourlySeries("sysmetrics_disk_written_bytes_1h", "disk_write_bytes"),
    HourlySeries("sysmetrics_disk_read_bytes_per_second_max_1h", "disk_read_rate_peak"),
    HourlySeries("sysmetrics_disk_written_bytes_per_second_max_1h", "disk_write_rate_peak"),
    HourlySeries("sysmetrics_counter_resets_1h", "counter_resets"),
    HourlySeries("sysmetrics_battery_percent_min_1h", "battery_min_pct"),
    HourlySeries("sysmetrics_battery_health_percent_1h", "battery_health_pct"),
)

ALL_NAMES: Final = tuple(s.name for s in (*RAW, *DEVICES, *HOURLY))
