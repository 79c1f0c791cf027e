"""Every NVIDIA GPU through NVIDIA's own NVML bindings (nvidia-ml-py); [] without driver/GPU."""

from __future__ import annotations

import logging
from typing import Any

from sysmetrics.collect._safe import clamp_pct, guarded
from sysmetrics.schema import Gpu

log = logging.getLogger(__name__)


class GpuReader:
    """Initializes NVML once; a machine without the driver yields an empty list forever."""

    def __init__(self) -> None:
        self._nvml: Any = None
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
            handle = guarded("gpu.handle", lambda i=index: nvml.nvmlDeviceGetHandleByIndex(i), None)
            if handle is None:
                continue
            util = guarded("gpu.util", lambda h=handle: nvml.nvmlDeviceGetUtilizationRates(h), None)
            mem = guarded("gpu.memory", lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h), None)
            temp = guarded(
                "gpu.temperature",
                lambda h=handle: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
                None,
            )
            power_mw = guarded("gpu.power", lambda h=handle: nvml.nvmlDeviceGetPowerUsage(h), None)
            fan = guarded("gpu.fan", lambda h=handle: nvml.nvmlDeviceGetFanSpeed(h), None)
            name = guarded("gpu.name", lambda h=handle: nvml.nvmlDeviceGetName(h), None)
            uuid = guarded("gpu.uuid", lambda h=handle: nvml.nvmlDeviceGetUUID(h), None)
            gpus.append(
                Gpu(
                    index=index,
                    name=_text(name),
                    uuid=_text(uuid),
                    utilization_pct=clamp_pct(util.gpu) if util is not None else None,
                    memory_used_bytes=int(mem.used) if mem is not None else None,
                    memory_total_bytes=int(mem.total) if mem is not None else None,
                    temperature_celsius=float(temp) if temp is not None else None,
                    power_watts=round(power_mw / 1000, 2) if power_mw is not None else None,
                    fan_pct=clamp_pct(fan),
                )
            )
        return gpus


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text[:256]
