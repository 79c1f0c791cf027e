"""Memory and swap, in bytes and percent."""

from __future__ import annotations

import psutil

from sysmetrics.collect._safe import clamp_pct, guarded
from sysmetrics.schema import Memory, Swap


def read_memory() -> Memory | None:
    def read() -> Memory:
        vm = psutil.virtual_memory()
        return Memory(
            total_bytes=vm.total,
            used_bytes=vm.used,
            available_bytes=vm.available,
            used_pct=clamp_pct(vm.percent),
        )

    return guarded("memory", read, None)


def read_swap() -> Swap | None:
    def read() -> Swap:
        sm = psutil.swap_memory()
        return Swap(total_bytes=sm.total, used_bytes=sm.used, used_pct=clamp_pct(sm.percent))

    return guarded("swap", read, None)
