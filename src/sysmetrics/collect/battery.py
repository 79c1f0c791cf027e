"""Battery charge and health (full-charge / design capacity), or None without a battery.

Health sources: Linux sysfs (under a configurable root), macOS ``ioreg`` (+ ``pmset``),
Windows WMI. The macOS and Windows parsers take the tools' outputs, so tests run them on
recorded outputs of real machines (tests/fixtures/macos, tests/fixtures/windows).
Firmware sometimes reports nonsense (a 9 % ratio, or 300 %): such a health is dropped.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from sysmetrics.collect._safe import clamp_pct, guarded, read_int, read_text, wmi_records
from sysmetrics.schema import Battery

HEALTH_SANE_RANGE = (20.0, 130.0)


def health_pct(full: float | None, design: float | None) -> float | None:
    if not full or not design or design <= 0:
        return None
    pct = 100.0 * full / design
    if not HEALTH_SANE_RANGE[0] <= pct <= HEALTH_SANE_RANGE[1]:
        return None
    return round(pct, 1)


def read_linux_battery(root: Path) -> Battery | None:
    supplies = root / "sys" / "class" / "power_supply"
    batteries = sorted(
        p
        for p in supplies.glob("*")
        if read_text(p / "type") == "Battery"
        and read_text(p / "present") != "0"
        and read_text(p / "scope") != "Device"
    )
    if not batteries:
        return None
    bat = batteries[0]
    full = read_int(bat / "energy_full") or read_int(bat / "charge_full")
    design = read_int(bat / "energy_full_design") or read_int(bat / "charge_full_design")
    now = read_int(bat / "energy_now") or read_int(bat / "charge_now")
    rate = read_int(bat / "power_now") or read_int(bat / "current_now")
    status = read_text(bat / "status")
    capacity = read_int(bat / "capacity")
    ac_online = [
        read_int(p / "online") for p in supplies.glob("*") if read_text(p / "type") == "Mains"
    ]
    plugged = any(ac_online) if ac_online else (status != "Discharging" if status else None)
    secs_left = int(3600 * now / rate) if status == "Discharging" and now and rate else None
    cycles = read_int(bat / "cycle_count")
    return Battery(
        percent=clamp_pct(capacity),
        plugged_in=plugged,
        secs_left=secs_left,
        health_pct=health_pct(full, design),
        cycle_count=cycles if cycles and cycles > 0 else None,
    )


_IOREG_LINE = re.compile(r'^[\s|]*"(?P<key>[A-Za-z]+)" = (?P<value>-?\d+|Yes|No)\s*$', re.M)
_PMSET_LINE = re.compile(r"(?P<pct>\d+)%; (?P<state>[^;]+);(?: (?P<left>\d+:\d+|\(no estimate\)))?")
IOREG_BATTERY = ("ioreg", "-rn", "AppleSmartBattery")
"""The battery's registry entry: readable without administrator rights."""
IOREG_NO_ESTIMATE = 65535
"""``TimeRemaining`` while macOS is still estimating."""


def parse_ioreg_battery(text: str) -> Battery | None:
    """``ioreg -rn AppleSmartBattery`` (text) of a Mac: None when it lists no battery.

    Full-charge capacity is ``AppleRawMaxCapacity`` (mAh); ``MaxCapacity`` is mAh only on Intel
    Macs (Apple silicon reports 100, a percentage, there and in ``CurrentCapacity``)."""
    if "AppleSmartBattery" not in text and '"DesignCapacity"' not in text:
        return None
    values: dict[str, int | bool] = {}
    for match in _IOREG_LINE.finditer(text):
        raw = match["value"]
        values.setdefault(match["key"], raw == "Yes" if raw in ("Yes", "No") else int(raw))

    def number(key: str) -> int | None:
        value = values.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    max_capacity = number("MaxCapacity")
    full = number("AppleRawMaxCapacity") or (
        max_capacity if max_capacity and max_capacity > 100 else None
    )
    current, percent = number("CurrentCapacity"), None
    if current is not None and max_capacity:
        percent = current if max_capacity == 100 else 100.0 * current / max_capacity
    plugged = values.get("ExternalConnected")
    minutes = number("TimeRemaining")
    secs_left = (
        60 * minutes
        if plugged is False and minutes is not None and 0 < minutes < IOREG_NO_ESTIMATE
        else None
    )
    cycles = number("CycleCount")
    return Battery(
        percent=clamp_pct(percent),
        plugged_in=plugged if isinstance(plugged, bool) else None,
        secs_left=secs_left,
        health_pct=health_pct(full, number("DesignCapacity")),
        cycle_count=cycles if cycles and cycles > 0 else None,
    )


def parse_pmset_batt(text: str) -> tuple[float | None, bool | None, int | None]:
    """``pmset -g batt``: (charge %, on AC, seconds left while discharging)."""
    plugged = True if "'AC Power'" in text else False if "'Battery Power'" in text else None
    match = _PMSET_LINE.search(text)
    if match is None:
        return None, plugged, None
    secs_left = None
    if match["state"].strip() == "discharging" and match["left"] and ":" in match["left"]:
        hours, minutes = match["left"].split(":")
        secs_left = 3600 * int(hours) + 60 * int(minutes) or None
    return float(match["pct"]), plugged, secs_left


def _read_macos_battery() -> Battery | None:
    def run(*command: str) -> str:
        return subprocess.run(command, capture_output=True, text=True, timeout=5).stdout

    battery = parse_ioreg_battery(run(*IOREG_BATTERY))
    if battery is not None and battery.percent is None:
        # Newer macOS versions moved keys out of the top level: pmset still says the charge.
        battery.percent, battery.plugged_in, battery.secs_left = parse_pmset_batt(
            run("pmset", "-g", "batt")
        )
    return battery


WIN32_NO_ESTIMATE = 71582788
"""``Win32_Battery.EstimatedRunTime`` on AC power (no estimate)."""
WIN32_DISCHARGING = 1
"""``Win32_Battery.BatteryStatus``: "The battery is discharging"; 2 is "on AC"."""


def windows_battery(
    batteries: list[dict[str, Any]],
    full: list[dict[str, Any]],
    static: list[dict[str, Any]],
    cycles: list[dict[str, Any]],
) -> Battery | None:
    """WMI's view of the first battery: ``Win32_Battery`` (charge, status, run time) and
    ``root\\wmi`` ``BatteryFullChargedCapacity`` / ``BatteryStaticData`` /
    ``BatteryCycleCount``, joined on ``InstanceName``. None without a battery."""
    if not batteries and not full:
        return None
    first = batteries[0] if batteries else {}
    status = first.get("BatteryStatus")
    minutes = first.get("EstimatedRunTime")
    designed = {b.get("InstanceName"): b.get("DesignedCapacity") for b in static}
    cycle_counts = {b.get("InstanceName"): b.get("CycleCount") for b in cycles}
    name = full[0].get("InstanceName") if full else None
    cycle = cycle_counts.get(name)
    return Battery(
        percent=clamp_pct(first.get("EstimatedChargeRemaining")),
        plugged_in=None if status is None else status != WIN32_DISCHARGING,
        secs_left=60 * minutes
        if status == WIN32_DISCHARGING and minutes and 0 < minutes < WIN32_NO_ESTIMATE
        else None,
        health_pct=health_pct(full[0].get("FullChargedCapacity"), designed.get(name))
        if full
        else None,
        cycle_count=cycle if cycle and cycle > 0 else None,
    )


def _read_windows_battery() -> Battery | None:
    import wmi  # Windows only (an environment-marked dependency)

    cimv2, root_wmi = wmi.WMI(), wmi.WMI(namespace="root\\wmi")
    return windows_battery(
        wmi_records(lambda: cimv2.Win32_Battery(), "Win32_Battery"),
        wmi_records(lambda: root_wmi.BatteryFullChargedCapacity(), "BatteryFullChargedCapacity"),
        wmi_records(lambda: root_wmi.BatteryStaticData(), "BatteryStaticData"),
        wmi_records(lambda: root_wmi.BatteryCycleCount(), "BatteryCycleCount"),
    )


def _with_psutil(health: float | None, cycles: int | None) -> Battery | None:
    info = psutil.sensors_battery()
    if info is None and health is None:
        return None
    secs = info.secsleft if info is not None else None
    return Battery(
        percent=clamp_pct(info.percent) if info is not None else None,
        plugged_in=info.power_plugged if info is not None else None,
        secs_left=secs if isinstance(secs, int) and secs >= 0 else None,
        health_pct=health,
        cycle_count=cycles if cycles and cycles > 0 else None,
    )


def read_battery(root: Path = Path("/")) -> Battery | None:
    if sys.platform.startswith("linux"):
        return guarded("battery", lambda: read_linux_battery(root), None)
    if sys.platform == "darwin":
        return guarded("battery", _read_macos_battery, None)
    if sys.platform == "win32":
        return guarded("battery", _read_windows_battery, None)
    return guarded("battery", lambda: _with_psutil(None, None), None)
