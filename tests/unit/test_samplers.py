"""The Linux readers on fixture trees, and every reader on this real machine."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sysmetrics.collect.battery import health_pct, read_linux_battery
from sysmetrics.collect.gpu import GpuReader, nvml_library_present
from sysmetrics.collect.host import host_id_warning, read_host, sanitize_host_id
from sysmetrics.collect.network import read_network
from sysmetrics.collect.sampler import Sampler
from sysmetrics.collect.temperatures import read_linux_hwmon
from sysmetrics.schema import decode, encode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_laptop_battery_health_and_time_left() -> None:
    battery = read_linux_battery(FIXTURES / "laptop")
    assert battery is not None
    assert battery.health_pct == 90.0  # 45 Wh of 50 Wh design
    assert battery.percent == 57
    assert battery.plugged_in is False
    assert battery.secs_left == 10800  # 25.65 Wh at 8.55 W
    assert battery.cycle_count == 312


def test_nonsense_firmware_health_is_dropped_not_reported() -> None:
    battery = read_linux_battery(FIXTURES / "badfirmware")
    assert battery is not None
    assert battery.health_pct is None  # 9 % is firmware nonsense
    assert battery.cycle_count is None  # 0 cycles means "unknown"
    assert battery.plugged_in is True and battery.percent == 80


@pytest.mark.parametrize("tree", ["server", "bare"])
def test_machines_without_battery_report_null(tree: str) -> None:
    assert read_linux_battery(FIXTURES / tree) is None


def test_health_ratio_sanity_bounds() -> None:
    assert health_pct(80, 100) == 80.0
    assert health_pct(9, 100) is None
    assert health_pct(300, 100) is None
    assert health_pct(None, 100) is None
    assert health_pct(50, 0) is None


def test_hwmon_temperatures_with_labels() -> None:
    temps = read_linux_hwmon(FIXTURES / "laptop")
    assert [(t.sensor, t.label, t.celsius) for t in temps] == [
        ("coretemp", "Package id 0", 52.0),
        ("coretemp", "Core 0", 49.5),
        ("acpitz", "temp1", 45.0),
    ]


def test_implausible_sensor_values_are_skipped() -> None:
    temps = read_linux_hwmon(FIXTURES / "server")
    assert [(t.sensor, t.celsius) for t in temps] == [("k10temp", round(61.25, 1))]


def test_thermal_zone_fallback_and_no_sensors() -> None:
    temps = read_linux_hwmon(FIXTURES / "badfirmware")
    assert [(t.sensor, t.celsius) for t in temps] == [("x86_pkg_temp", 48.0)]
    assert read_linux_hwmon(FIXTURES / "bare") == []


def test_host_id_from_machine_id_and_fallback() -> None:
    assert read_host(FIXTURES / "laptop").host_id == "0123456789abcdef0123456789abcdef"
    bare = read_host(FIXTURES / "bare")
    assert bare.host_id.startswith("mac-")
    assert read_host(FIXTURES / "bare", host_id_override="rack 4/../x").host_id == "rack-4-..-x"


def test_ids_that_clones_share_are_warned_about(tmp_path: Path) -> None:
    assert host_id_warning(FIXTURES / "laptop") is None
    assert "MAC address" in str(host_id_warning(FIXTURES / "bare"))
    assert host_id_warning(FIXTURES / "bare", host_id_override="web-1") is None
    placeholder = tmp_path / "image"
    (placeholder / "etc").mkdir(parents=True)
    (placeholder / "etc" / "machine-id").write_text("uninitialized\n")
    assert "SYSMETRICS_HOST_ID" in str(host_id_warning(placeholder))
    container = tmp_path / "container"
    (container / "etc").mkdir(parents=True)
    (container / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (container / ".dockerenv").touch()
    assert "container" in str(host_id_warning(container))


def test_sanitized_host_ids_are_always_path_safe() -> None:
    for raw in ['a"b', "../../etc/passwd", "\x00\x1b[31m", "x" * 10_000, ""]:
        cleaned = sanitize_host_id(raw)
        assert cleaned and len(cleaned) <= 128
        assert "/" not in cleaned and '"' not in cleaned and cleaned[0] not in "._:-"


def test_no_gpu_means_empty_list() -> None:
    gpus = GpuReader().read()
    assert isinstance(gpus, list)
    for gpu in gpus:  # on a GPU machine, values are in range
        assert gpu.utilization_pct is None or 0 <= gpu.utilization_pct <= 100


def test_the_nvml_probe_agrees_with_nvidia_ml_py() -> None:
    import pynvml

    present = nvml_library_present()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        assert not present
    except pynvml.NVMLError:  # the library loads, the driver or the GPU is not there
        assert present
    else:
        assert present
        pynvml.nvmlShutdown()


def test_a_machine_without_the_nvidia_library_never_imports_pynvml() -> None:
    # pynvml is ~18 MB of a collector's RSS: only a machine that can use it pays for it.
    probe = "import sys; from sysmetrics.collect.sampler import Sampler; Sampler().sample(); "
    probe += "print('pynvml' in sys.modules)"
    imported = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert imported == str(nvml_library_present())


def test_full_sample_on_fixture_tree_without_sensors_is_valid() -> None:
    event = Sampler(FIXTURES / "bare").sample()
    assert event.battery is None
    assert event.temperatures == []
    assert decode(encode(event)) == event


def test_real_machine_sample_has_sane_values() -> None:
    sampler = Sampler()
    time.sleep(0.3)
    event = sampler.sample()
    assert decode(encode(event)) == event
    assert event.cpu is not None and event.cpu.utilization_pct is not None
    assert 0 <= event.cpu.utilization_pct <= 100
    assert event.cpu.logical_cores and event.cpu.logical_cores >= 1
    assert event.memory is not None and event.memory.total_bytes
    assert event.memory.used_pct is not None and 0 < event.memory.used_pct <= 100
    assert event.disks and all(d.total_bytes and d.total_bytes > 0 for d in event.disks)
    assert all(d.fstype not in ("proc", "sysfs", "tmpfs") for d in event.disks)
    assert event.network is not None and event.network.bytes_recv is not None
    assert event.network.bytes_recv >= 0
    assert event.disk_io is None or (event.disk_io.read_bytes or 0) >= 0
    assert event.host.host_id and event.host.boot_time is not None


NET_DEV = """\
Inter-|   Receive                        |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop ...
    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0
  nic0: 18446744073709551615 20 0 0 0 0 0 0 5000 30 0 0 0 0 0 0
  nic1: 7000 40 0 0 0 0 0 0 8000 50 0 0 0 0 0 0
"""


def test_a_counter_beyond_what_the_event_can_carry_is_null_not_a_lost_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver reporting 2**64 - 1 ("unknown"): that counter, and the total it is part of,
    are null; the rest of the sample is kept and valid (the lake writer would quarantine an
    event carrying it, and with it the whole sample)."""
    sample = Sampler().sample()
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "dev").write_text(NET_DEV)
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))  # psutil reads net/dev there
    # psutil remembers each interface's last counters to undo wraps: a fresh memory
    psutil.net_io_counters.cache_clear()
    try:
        network = read_network()
    finally:
        psutil.net_io_counters.cache_clear()
    assert network is not None
    nic0, nic1 = (i for i in network.interfaces if i.name in ("nic0", "nic1"))
    assert (nic0.bytes_recv, nic0.bytes_sent, nic1.bytes_recv) == (None, 5000, 7000)
    assert (network.bytes_recv, network.bytes_sent, network.packets_recv) == (None, 13000, 60)
    sample.network = network
    assert decode(encode(sample)).network == network
