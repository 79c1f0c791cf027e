"""CPU utilization from deltas between samples (never a blocking interval), load, frequency."""

from __future__ import annotations

import os

import psutil

from sysmetrics.collect._safe import clamp_pct, guarded
from sysmetrics.schema import Cpu


class CpuReader:
    """Utilization is over the time since the previous call (or since construction)."""

    def __init__(self) -> None:
        # Prime psutil's per-process reference point so the first sample covers real time.
        guarded("cpu.prime", lambda: psutil.cpu_percent(interval=None, percpu=True), None)
        guarded("cpu.prime", lambda: psutil.cpu_percent(interval=None), None)

    def read(self) -> Cpu:
        total = guarded("cpu.utilization", lambda: psutil.cpu_percent(interval=None), None)
        per_core = guarded(
            "cpu.per_core", lambda: psutil.cpu_percent(interval=None, percpu=True), None
        )
        load = guarded("cpu.load", os.getloadavg, None)
        freq = guarded("cpu.freq", psutil.cpu_freq, None)
        return Cpu(
            utilization_pct=clamp_pct(total),
            per_core_pct=[p for p in (clamp_pct(c) for c in per_core) if p is not None]
            if per_core
            else None,
            load_1m=round(load[0], 3) if load else None,
            load_5m=round(load[1], 3) if load else None,
            load_15m=round(load[2], 3) if load else None,
            freq_mhz=round(freq.current, 1) if freq and freq.current else None,
            logical_cores=guarded("cpu.count", psutil.cpu_count, None),
        )
