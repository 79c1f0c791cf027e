"""Battery charge and health (full-charge / design capacity), or None without a battery.

Health sources: Linux sysfs (under a configurable root), macOS ``ioreg``, Windows WMI.
Firmware sometimes reports nonsense (a 9 % ratio, or 300 %): such a health is dropped.
"""

from __future__ import annotations

import plistlib
import subprocess
import sys
from pathlib import Path

import psutil

from sysmetrics.collect._safe import clamp_pct, guarded, read_int, read_text
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


def _read_macos_battery() -> Battery | None:
    out = subprocess.run(
        ["ioreg", "-r", "-c", "AppleSmartBattery", "-a"], capture_output=True, timeout=5, check=True
    ).stdout
    if not out.strip():
        return None
    info = plistlib.loads(out)[0]
    full = info.get("AppleRawMaxCapacity") or info.get("MaxCapacity")
    return _with_psutil(health_pct(full, info.get("DesignCapacity")), info.get("CycleCount"))


def _read_windows_battery() -> Battery | None:
    import wmi  # optional, Windows only

    conn = wmi.WMI(namespace="root\\wmi")
    full = {b.InstanceName: b.FullChargedCapacity for b in conn.BatteryFullChargedCapacity()}
    design = {b.InstanceName: b.DesignedCapacity for b in conn.BatteryStaticData()}
    cycles = {b.InstanceName: b.CycleCount for b in conn.BatteryCycleCount()}
    name = next(iter(full), None)
    if name is None:
        return _with_psutil(None, None)
    return _with_psutil(health_pct(full[name], design.get(name)), cycles.get(name))


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
