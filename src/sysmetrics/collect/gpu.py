"""Every NVIDIA GPU through NVIDIA's own NVML bindings (nvidia-ml-py); [] without driver/GPU."""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from sysmetrics.collect._safe import clamp_pct, guarded
from sysmetrics.schema import Gpu

log = logging.getLogger(__name__)


def nvml_library_present() -> bool:
    """Whether NVIDIA's driver library loads, probed the way nvidia-ml-py loads it on Linux and
    macOS. Importing pynvml costs ~18 MB of RSS (thousands of ctypes types), most of a small
    collector's memory: a machine without the driver skips it. On Windows pynvml's own search
    (System32, then NVSMI) decides."""
    if sys.platform.startswith("win"):
        return True
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


class GpuReader:
    """Initializes NVML once; a machine without the driver yields an empty list forever."""

    def __init__(self) -> None:
        self._nvml: Any = None
        if not nvml_library_present():
            log.debug("no NVIDIA GPU: libnvidia-ml.so.1 not found")
            return
        try:
            import pynvml  # provided by nvidia-ml-py

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception as exc:  # no library, no driver or no GPU: all mean "no GPUs"
            log.debug("no NVIDIA GPU: %s", exc)

    def read(self) -> list[Gpu]:
        nvml = self._nvml
        if nvml is None:
            return []
        count = guarded("gpu.count", nvml.nvmlDeviceGetCount, 0)
        gpus = []
        for index in range(count):
            handle = guarded("gpu.handle", partial(nvml.nvmlDeviceGetHandleByIndex, index), None)
            if handle is None:
                continue

            def query(name: str, call: Callable[..., Any], *args: Any, h: Any = handle) -> Any:
                return guarded(f"gpu.{name}", partial(call, h, *args), None)

            util = query("utilization", nvml.nvmlDeviceGetUtilizationRates)
            mem = _memory(nvml, handle)
            temp = query("temperature", nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
            power_mw = query("power", nvml.nvmlDeviceGetPowerUsage)
            gpus.append(
                Gpu(
                    index=index,
                    name=_text(query("name", nvml.nvmlDeviceGetName)),
                    uuid=_text(query("uuid", nvml.nvmlDeviceGetUUID)),
                    utilization_pct=clamp_pct(util.gpu) if util is not None else None,
                    memory_used_bytes=int(mem.used) if mem is not None else None,
                    memory_total_bytes=int(mem.total) if mem is not None else None,
                    temperature_celsius=float(temp) if temp is not None else None,
                    power_watts=round(power_mw / 1000, 2) if power_mw is not None else None,
                    fan_pct=clamp_pct(query("fan", nvml.nvmlDeviceGetFanSpeed)),
                )
            )
        return gpus


def _memory(nvml: Any, handle: Any) -> Any:
    """Memory as nvidia-smi shows it: the v2 query leaves driver-reserved memory out of "used"
    (about 615 MiB on an idle H200 that nvidia-smi shows at 0 MiB); drivers before R510 only
    answer v1."""
    v2 = getattr(nvml, "nvmlMemory_v2", None)
    if v2 is not None:
        try:
            return nvml.nvmlDeviceGetMemoryInfo(handle, version=v2)
        except Exception as exc:  # an older driver answers NOT_SUPPORTED / FUNCTION_NOT_FOUND
            log.debug("NVML memory v2 unavailable, using v1: %s", exc)
    return guarded("gpu.memory", partial(nvml.nvmlDeviceGetMemoryInfo, handle), None)


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text[:256]
