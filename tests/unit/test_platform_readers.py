"""The macOS and Windows readers on recorded outputs of real machines (tests/fixtures/macos,
tests/fixtures/windows; each file's source is in tests/fixtures/SOURCES.md and below)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from sysmetrics.collect._safe import wmi_records
from sysmetrics.collect.battery import parse_ioreg_battery, parse_pmset_batt, windows_battery
from sysmetrics.collect.host import host_id_warning, parse_ioreg_platform_uuid, sanitize_host_id
from sysmetrics.collect.temperatures import parse_ioreg_battery_temperature, windows_temperatures

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def wmi(name: str) -> dict[str, list[dict[str, object]]]:
    return json.loads((FIXTURES / "windows" / name).read_text())


def test_ioreg_of_a_new_macbook_health_above_design() -> None:
    """github.com/drecali/til macos/get-macbook-battery-info-with-terminal-command.md: a new
    battery holds more than its design capacity (6406 of 6249 mAh)."""
    battery = parse_ioreg_battery((FIXTURES / "macos" / "ioreg-grep-new-macbook.txt").read_text())
    assert battery is not None
    assert battery.health_pct == 102.5
    assert battery.percent is None  # CurrentCapacity was not in this output: null, not 0
    assert battery.cycle_count is None


def test_ioreg_of_an_intel_macbook_after_155_cycles() -> None:
    """github.com/shushen/shushen.github.io _posts/2017-12-29-macos-battery-data.md: the whole
    `ioreg -r -c AppleSmartBattery` entry of an Intel MacBook on battery (mAh capacities)."""
    text = (FIXTURES / "macos" / "ioreg-applesmartbattery-intel-macbook.txt").read_text()
    battery = parse_ioreg_battery(text)
    assert battery is not None
    assert battery.health_pct == 89.8  # 5889 / 6559 mAh: "about 10% degradation", as the post says
    assert battery.percent == 80.85  # 4761 / 5889 mAh
    assert (battery.plugged_in, battery.secs_left, battery.cycle_count) == (False, 271 * 60, 155)
    (temperature,) = parse_ioreg_battery_temperature(text)
    assert (temperature.sensor, temperature.celsius) == ("battery", 29.9)  # "Temperature" = 2991


def test_ioreg_without_a_temperature_key_has_no_reading() -> None:
    grep_only = (FIXTURES / "macos" / "ioreg-grep-new-macbook.txt").read_text()
    assert parse_ioreg_battery_temperature(grep_only) == []


def test_mac_host_id_is_the_platform_uuid() -> None:
    """github.com/denisbrodbeck/machineid id_darwin_test.go: `ioreg -rd1 -c
    IOPlatformExpertDevice` of a MacBookPro12,1 (serials masked by its author)."""
    text = (FIXTURES / "macos" / "ioreg-platform-expert-macbookpro12-1.txt").read_text()
    uuid = parse_ioreg_platform_uuid(text)
    assert uuid == "A3344D1DD-1234-22A1-B123-11AB1C11D111"
    assert sanitize_host_id(uuid) == uuid  # already in the schema's alphabet: kept as is
    assert parse_ioreg_platform_uuid("+-o Root  <class IORegistryEntry>") is None


def test_windows_machine_guid_format_is_a_host_id_as_is() -> None:
    """HKLM\\SOFTWARE\\Microsoft\\Cryptography MachineGuid is a REG_SZ GUID without braces
    (documented format, read with winreg; no recorded output found). Images cloned without
    sysprep share it, as cloned Linux machines share /etc/machine-id."""
    guid = "6f6d8d4e-5b2f-4b07-9d5c-0e1c2a3b4c5d"
    assert sanitize_host_id(guid) == guid
    assert host_id_warning(host_id_override=guid) is None


def test_ioreg_apple_silicon_reports_percentages_in_max_capacity() -> None:
    """Apple silicon's layout: MaxCapacity/CurrentCapacity are percentages, AppleRawMaxCapacity
    is mAh (a format case with values of the kind such a Mac prints, not a cited recording)."""
    text = (
        '  "CurrentCapacity" = 97\n  "TimeRemaining" = 17\n  "ExternalConnected" = No\n'
        '  "MaxCapacity" = 100\n  "DesignCapacity" = 8579\n  "AppleRawMaxCapacity" = 8546\n'
        '  "CycleCount" = 11\n'
    )
    battery = parse_ioreg_battery(text)
    assert battery is not None
    assert (battery.percent, battery.plugged_in, battery.secs_left) == (97.0, False, 17 * 60)
    assert battery.health_pct == 99.6 and battery.cycle_count == 11


def test_ioreg_without_a_battery_is_none() -> None:
    assert parse_ioreg_battery("") is None


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("pmset-ac-charged.txt", (97.0, True, None)),
        ("pmset-battery-no-estimate.txt", (97.0, False, None)),
    ],
)
def test_pmset_charge_and_power_source(fixture: str, expected: tuple[object, ...]) -> None:
    """Stack Overflow answer 42361337: `pmset -g batt` on AC (charged) and on battery while
    macOS has no estimate yet."""
    assert parse_pmset_batt((FIXTURES / "macos" / fixture).read_text()) == expected


def test_pmset_time_left_while_discharging() -> None:
    text = (
        "Now drawing from 'Battery Power'\n"
        " -InternalBattery-0 (id=1)\t85%; discharging; 4:26 remaining present: true"
    )
    assert parse_pmset_batt(text) == (85.0, False, 4 * 3600 + 26 * 60)


def windows(name: str):  # type: ignore[no-untyped-def]
    data = wmi(name)
    return windows_battery(
        data["Win32_Battery"],
        data["BatteryFullChargedCapacity"],
        data["BatteryStaticData"],
        data["BatteryCycleCount"],
    )


def test_wmi_battery_wear_joined_on_instance_name() -> None:
    """scriptrunner.com "Detecting Laptop Battery Wear": 26486 of 49985 = 52.99 %."""
    battery = windows("wmi-battery-wear-scriptrunner.json")
    assert battery is not None and battery.health_pct == 53.0


def test_wmi_battery_of_an_asus_k52f_zero_cycles_means_unknown() -> None:
    """superuser.com question 994185: DesignedCapacity 48400, FullChargedCapacity 47157,
    CycleCount 0 (firmware that does not count)."""
    battery = windows("wmi-battery-asus-k52f.json")
    assert battery is not None
    assert battery.health_pct == 97.4 and battery.cycle_count is None


def test_win32_battery_on_ac_has_no_time_left() -> None:
    """powershell.one "Win32_Battery": EstimatedRunTime is 71582788 on AC power."""
    battery = windows("win32-battery-on-ac.json")
    assert battery is not None
    assert (battery.plugged_in, battery.secs_left, battery.health_pct) == (True, None, None)


def test_windows_without_a_battery_is_none() -> None:
    assert windows_battery([], [], [], []) is None


def test_windows_temperatures_prefer_librehardwaremonitor_then_acpi_zones() -> None:
    """Documented formats (no recorded output found, see SOURCES.md)."""
    zones = [{"InstanceName": "ACPI\\ThermalZone\\TZ00_0", "CurrentTemperature": 3132}]
    (acpi,) = windows_temperatures(zones, [])
    assert (acpi.sensor, acpi.celsius) == ("acpi", 40.1)  # 313.2 K = 40.05 °C
    sensors = [
        {
            "SensorType": "Temperature",
            "Name": "CPU Package",
            "Identifier": "/amdcpu/0/temperature/2",
            "Value": 54.25,
        },
        {
            "SensorType": "Load",
            "Name": "CPU Total",
            "Identifier": "/amdcpu/0/load/0",
            "Value": 12.0,
        },
        {"SensorType": "Temperature", "Name": "broken", "Identifier": "/x/0", "Value": 9999.0},
    ]
    (lhm,) = windows_temperatures(zones, sensors)
    assert (lhm.label, lhm.celsius) == ("/amdcpu/0/temperature/2", 54.2)


def test_a_wmi_class_this_account_may_not_read_is_empty_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def denied() -> list[object]:
        raise PermissionError("0x80041003 access denied")

    with caplog.at_level(logging.INFO, logger="sysmetrics.collect"):
        assert wmi_records(denied, "MSAcpi_ThermalZoneTemperature (test)") == []
        assert wmi_records(denied, "MSAcpi_ThermalZoneTemperature (test)") == []
    assert sum("unavailable" in r.message for r in caplog.records) == 1
