"""Temperature sensors as a list of {sensor, label, celsius}.

Linux reads hwmon (and thermal zones when hwmon has nothing) under a configurable root, so
tests run it on fixture trees; Windows uses WMI (LibreHardwareMonitor's sensors when it runs,
else the ACPI thermal zones); macOS the battery's sensor (the only one readable without root);
elsewhere psutil where it has sensors.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from sysmetrics.collect._safe import guarded, read_int, read_text, wmi_records
from sysmetrics.collect.battery import IOREG_BATTERY
from sysmetrics.schema import Temperature

_PLAUSIBLE_CELSIUS = (-60.0, 200.0)


def _plausible(celsius: float) -> bool:
    return _PLAUSIBLE_CELSIUS[0] <= celsius <= _PLAUSIBLE_CELSIUS[1]


def read_linux_hwmon(root: Path) -> list[Temperature]:
    readings: list[Temperature] = []
    for hwmon in sorted((root / "sys" / "class" / "hwmon").glob("hwmon*")):
        sensor = read_text(hwmon / "name") or hwmon.name
        for temp_input in sorted(hwmon.glob("temp*_input")):
            millideg = read_int(temp_input)
            if millideg is None or not _plausible(millideg / 1000):
                continue
            label = read_text(temp_input.with_name(temp_input.name.replace("_input", "_label")))
            readings.append(
                Temperature(
                    sensor=sensor[:256],
                    label=(label or temp_input.name[:-6])[:256],
                    celsius=round(millideg / 1000, 1),
                )
            )
    if readings:
        return readings
    for zone in sorted((root / "sys" / "class" / "thermal").glob("thermal_zone*")):
        millideg = read_int(zone / "temp")
        if millideg is None or not _plausible(millideg / 1000):
            continue
        readings.append(
            Temperature(
                sensor=(read_text(zone / "type") or zone.name)[:256],
                label=zone.name,
                celsius=round(millideg / 1000, 1),
            )
        )
    return readings


def windows_temperatures(
    zones: list[dict[str, Any]], sensors: list[dict[str, Any]]
) -> list[Temperature]:
    """WMI temperatures: LibreHardwareMonitor's sensors when it runs (``root\\LibreHardwareMonitor``
    ``Sensor``, °C, per CPU core / GPU / drive), else the ACPI thermal zones
    (``MSAcpi_ThermalZoneTemperature``, tenths of a kelvin; administrators only)."""
    readings = [
        Temperature(
            sensor="librehardwaremonitor",
            label=str(s.get("Identifier") or s.get("Name"))[:256],
            celsius=round(float(s["Value"]), 1),
        )
        for s in sensors
        if s.get("SensorType") == "Temperature"
        and s.get("Value") is not None
        and _plausible(float(s["Value"]))
    ]
    if readings:
        return readings
    return [
        Temperature(
            sensor="acpi",
            label=str(z.get("InstanceName"))[:256],
            celsius=round(z["CurrentTemperature"] / 10 - 273.15, 1),
        )
        for z in zones
        if z.get("CurrentTemperature") is not None
        and _plausible(z["CurrentTemperature"] / 10 - 273.15)
    ]


def _read_windows_wmi() -> list[Temperature]:
    import wmi  # Windows only (an environment-marked dependency)

    def lhm() -> Any:
        return wmi.WMI(namespace="root\\LibreHardwareMonitor").Sensor()

    def zones() -> Any:
        return wmi.WMI(namespace="root\\wmi").MSAcpi_ThermalZoneTemperature()

    return windows_temperatures(
        wmi_records(zones, "MSAcpi_ThermalZoneTemperature"),
        wmi_records(lhm, "LibreHardwareMonitor Sensor"),
    )


_IOREG_TEMPERATURE = re.compile(r'^[\s|]*"Temperature" = (\d+)\s*$', re.M)


def parse_ioreg_battery_temperature(text: str) -> list[Temperature]:
    """``ioreg -rn AppleSmartBattery``: the battery's ``Temperature`` in hundredths of a °C.

    macOS exposes no CPU sensor to an unprivileged process (psutil has none there, ``powermetrics``
    needs root); the battery's is the one thermal reading a service user can always take."""
    match = _IOREG_TEMPERATURE.search(text)
    if match is None:
        return []
    celsius = int(match.group(1)) / 100
    if not _plausible(celsius):
        return []
    return [Temperature(sensor="battery", label="AppleSmartBattery", celsius=round(celsius, 1))]


def _read_macos() -> list[Temperature]:
    out = subprocess.run(IOREG_BATTERY, capture_output=True, text=True, timeout=5).stdout
    return parse_ioreg_battery_temperature(out)


def _read_psutil() -> list[Temperature]:
    sensors: dict[str, Any] = getattr(psutil, "sensors_temperatures", dict)()
    return [
        Temperature(
            sensor=name[:256], label=(entry.label or name)[:256], celsius=round(entry.current, 1)
        )
        for name, entries in sensors.items()
        for entry in entries
        if entry.current is not None and _plausible(entry.current)
    ]


def read_temperatures(root: Path = Path("/")) -> list[Temperature]:
    if sys.platform.startswith("linux"):
        return guarded("temperatures", lambda: read_linux_hwmon(root), [])
    if sys.platform == "win32":
        return guarded("temperatures", _read_windows_wmi, [])
    if sys.platform == "darwin":
        return guarded("temperatures", _read_macos, [])
    return guarded("temperatures", _read_psutil, [])
