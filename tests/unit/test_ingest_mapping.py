"""Recorded windows_exporter and macOS node_exporter outputs (tests/fixtures/ingest/SOURCES.md),
encoded as remote-write payloads, and a recorded OTel Collector export become the documented
fields; CPU % needs two samples."""

from __future__ import annotations

import re
import struct
from datetime import UTC, datetime
from pathlib import Path

import cramjam
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from sysmetrics.ingest.mapping import (
    REMOTE_WRITE_SERIES,
    TARGET,
    Facts,
    HostState,
    build_event,
)
from sysmetrics.ingest.wire import (
    PayloadError,
    SampleKey,
    decode_otlp_python,
    decode_remote_write,
)
from sysmetrics.schema import decode, encode
from tests.support.remote_write import STALE_MARKER as STALE
from tests.support.remote_write import scraped_export, series_of, write_request

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
PROTOBUF = "application/x-protobuf"


def _events(text: str, instance: str, times: list[int], advance: float = 0.0) -> list:
    """The exposition scraped at each time; each CPU spends ``advance`` of the time since the
    first sample in user mode and the rest idle."""
    state = HostState()
    events = []
    for ts in times:
        series = []
        for labels, value in series_of(text):
            if labels["__name__"] in ("node_cpu_seconds_total", "windows_cpu_time_total"):
                share = {"user": advance, "idle": 1 - advance}.get(labels["mode"], 0.0)
                value += (ts - times[0]) / 1000 * share
            series.append((labels, value))
        payload = write_request(series, ts, {"instance": instance, "job": "node"})
        decoded = decode_remote_write(
            bytes(cramjam.snappy.decompress_raw(payload)), "instance", 10**6
        )
        assert decoded.dropped > 0  # the Go runtime's own series are not ours
        [(key, facts)] = decoded.samples.items()
        assert key == (instance, ts, key[2])
        events.append(decode(encode(build_event(key[2], instance, ts, facts, state))))
    return events


def test_macos_node_exporter_fills_the_documented_fields() -> None:
    text = (FIXTURES / "node_exporter_darwin.prom").read_text()
    first, second = _events(text, "mac-mini:9100", [T0, T0 + 10_000], advance=0.25)
    assert first.source == "node_exporter" and first.host.os == "darwin"
    assert first.host.arch == "x86_64" and first.host.hostname == "MacBook-Pro-16"
    assert first.cpu.utilization_pct is None, "the first sample has no CPU %, never a guess"
    assert second.cpu.utilization_pct == pytest.approx(25.0, abs=0.01)
    assert second.cpu.logical_cores == 12 and len(second.cpu.per_core_pct) == 12
    assert second.cpu.load_1m == pytest.approx(2.5048828125)
    assert first.memory.total_bytes == 17179869184
    # psutil's macOS meaning: available = free + inactive, used = active + wired
    assert first.memory.available_bytes == 501157888 + 5574938624
    assert first.memory.used_bytes == 5238034432 + 3383091200
    assert first.swap.total_bytes == 2147483648 and first.swap.used_bytes == 1095499776
    root = next(d for d in first.disks if d.mountpoint == "/")
    assert root.total_bytes == round(
        float(
            re.search(r'node_filesystem_size_bytes\{device="/dev/disk1s5s1".*\} (\S+)', text).group(
                1
            )
        )
    )
    assert root.free_bytes == 425092554752 and root.fstype == "apfs"
    assert all(d.fstype != "autofs" for d in first.disks)
    assert first.disk_io.read_bytes == 111846789120 and first.disk_io.write_count == 2666872
    en0 = next(i for i in first.network.interfaces if i.name == "en0")
    assert en0.bytes_recv == 3019623424
    lo0 = next(i for i in first.network.interfaces if i.name == "lo0")
    assert lo0.bytes_recv == 222496768, "loopback is listed with its counters"
    assert first.network.bytes_recv == sum(
        i.bytes_recv for i in first.network.interfaces if i.name != "lo0"
    ), "the total leaves loopback out, as the collector's does"
    assert first.host.boot_time is not None
    assert second.interval_s == 10.0
    assert first.gpus == [] and first.battery is None


def test_one_short_gap_does_not_shorten_a_hosts_interval_two_do() -> None:
    """A target scraped at a new moment (its address changed: Prometheus scrapes a new target
    at another offset in the interval) gives its host one gap well under its interval. The
    interval stays. Before, it fell to that gap (0.4 s here) and grew back by half a sample:
    HostDown's silence (3 intervals, never under 5 s) was under the 10 s between the host's
    samples for the next six of them, and it paged down and back between each two. Two short
    gaps in a row are a host sampled more often now."""
    text = (FIXTURES / "node_exporter_darwin.prom").read_text()

    def intervals(offsets_ms: list[int]) -> list[float | None]:
        return [e.interval_s for e in _events(text, "web-1", [T0 + t for t in offsets_ms])]

    moved = [0, 10_000, 20_000, 20_400, 30_000, 40_000]
    assert intervals(moved) == [None, 10.0, 10.0, 10.0, 9.6, 10.0]
    faster = [0, 60_000, 120_000, 135_000, 150_000, 165_000]
    assert intervals(faster) == [None, 60.0, 60.0, 60.0, 15.0, 15.0]
    state = HostState(interval_s=60.0)
    state.learn_interval(15.0)
    assert HostState.from_json(state.to_json()).shorter_s == 15.0, "kept across restarts"


def test_windows_exporter_fills_the_documented_fields() -> None:
    text = (FIXTURES / "windows_exporter_0.15.prom").read_text()
    first, second = _events(text, "10.0.0.7:9182", [T0, T0 + 15_000], advance=0.5)
    assert first.source == "windows_exporter" and first.host.os == "windows"
    assert first.host.hostname == "kvn-test-bsp"
    assert first.cpu.utilization_pct is None
    # busy = user + privileged (which holds dpc and interrupt); total adds idle
    assert second.cpu.utilization_pct == pytest.approx(50.0, abs=0.01)
    assert first.cpu.logical_cores == 1 and first.cpu.freq_mhz == 2095
    assert first.memory.total_bytes == 2147012608 and first.memory.used_bytes is None
    nic = first.network.interfaces[0]
    assert nic.name == "Microsoft_Hyper_V_Network_Adapter"
    assert (nic.bytes_recv, nic.bytes_sent, nic.packets_recv, nic.packets_sent) == (
        105848279,
        141699537,
        200810,
        109826,
    )
    assert first.disks == [] and first.disk_io is None  # no logical_disk collector ran


def test_windows_exporter_0_31_names_fill_the_same_fields() -> None:
    """windows_exporter 0.30 moved the paging file readings to its `pagefile` collector and 0.31
    removed `cs` and renamed the boot time (the project's history: pull requests #1735, #2112,
    #2115; names from its collectors' source at 589ec15d): the recorded 0.15 output under the
    current names, with the current boot time, available memory, `pagefile` and logical disk
    `_info` lines (those of docs/collector.pagefile.md and collector.logical_disk.md), makes the
    event the old names make, and more. Before, such a host was named by its address and had no
    boot time, and every volume was said to be NTFS."""
    old = (FIXTURES / "windows_exporter_0.15.prom").read_text()
    samples = "".join(f"{line}\n" for line in old.splitlines() if not line.startswith("#"))
    renamed = (
        samples.replace("windows_cs_hostname{", "windows_os_hostname{")
        .replace("windows_cs_logical_processors ", "windows_cpu_logical_processor ")
        .replace("windows_cs_physical_memory_bytes ", "windows_memory_physical_total_bytes ")
    )
    assert "windows_cs_" not in renamed
    current = renamed + (
        "windows_system_boot_time_timestamp 1.7645e+09\n"
        "windows_memory_available_bytes 1.073506304e+09\n"
        'windows_pagefile_free_bytes{file="C:\\\\pagefile.sys"} 6.025797632e+09\n'
        'windows_pagefile_limit_bytes{file="C:\\\\pagefile.sys"} 6.442450944e+09\n'
        # docs/collector.logical_disk.md's `_info` lines; E: has none
        'windows_logical_disk_info{disk_id="0",filesystem="NTFS",serial_number="668EEC37",'
        'type="fixed",volume="C:",volume_name="Windows"} 1\n'
        'windows_logical_disk_info{disk_id="1",filesystem="ReFS",serial_number="C69B59AD",'
        'type="fixed",volume="G:",volume_name="Volume"} 1\n'
    )
    for volume in ("C:", "G:", "E:"):
        current += f'windows_logical_disk_size_bytes{{volume="{volume}"}} 1e+11\n'
        current += f'windows_logical_disk_free_bytes{{volume="{volume}"}} 4e+10\n'
    (before,) = _events(old, "10.0.0.7:9182", [T0])
    (now,) = _events(current, "10.0.0.7:9182", [T0])
    assert now.host.hostname == before.host.hostname == "kvn-test-bsp"
    assert now.cpu.logical_cores == before.cpu.logical_cores == 1
    assert now.memory.total_bytes == before.memory.total_bytes
    assert now.host.boot_time == datetime.fromtimestamp(1.7645e9, UTC)
    assert now.memory.used_bytes == 2147012608 - 1073506304
    assert (now.swap.total_bytes, now.swap.used_bytes) == (6442450944, 6442450944 - 6025797632)
    assert [(d.mountpoint, d.fstype, d.used_pct) for d in now.disks] == [
        ("C:", "NTFS", 60.0),
        ("E:", None, 60.0),
        ("G:", "ReFS", 60.0),
    ], "a filesystem where windows_exporter names one, never a made-up one"


def test_same_sample_same_event_id_and_a_new_sample_a_new_one() -> None:
    text = (FIXTURES / "windows_exporter_0.15.prom").read_text()
    a = _events(text, "w:9182", [T0])[0]
    b = _events(text, "w:9182", [T0])[0]
    c = _events(text, "w:9182", [T0 + 1])[0]
    assert a.event_id == b.event_id != c.event_id


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"\x00\x01garbage", "bad_protobuf"),
        (write_request([({"__name__": "node_load1"}, 1.0)], T0), "no_host"),
        (write_request([({"__name__": "node_load1", "instance": "a\nb"}, 1.0)], T0), "bad_host"),
    ],
)
def test_payloads_that_can_never_succeed_say_why(payload: bytes, kind: str) -> None:
    try:
        data = bytes(cramjam.snappy.decompress_raw(payload))
    except Exception:
        data = payload
    with pytest.raises(PayloadError) as raised:
        decode_remote_write(data, "instance", 1000)
    assert raised.value.kind == kind and 400 <= raised.value.status < 500


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [("application/x-protobuf", "bad_protobuf"), ("application/json", "bad_json")],
)
def test_an_otlp_body_that_does_not_parse_is_counted_under_its_encoding(
    content_type: str, kind: str
) -> None:
    with pytest.raises(PayloadError) as raised:
        decode_otlp_python(b"\x00\x01garbage", content_type, ("host.name",), "instance", 1000)
    assert raised.value.kind == kind and raised.value.status == 400


NETWORK_METRICS = (
    "system.network.io",
    "system.network.packets",
    "system.network.errors",
    "system.network.dropped",
)


def test_recorded_otel_collector_export_fills_the_documented_fields() -> None:
    """The network, CPU and host fields of an event built from a real Collector export equal
    what the export itself says, read straight from its protobuf; the boot time is the start
    time the Collector gives its CPU counters."""
    data = (FIXTURES / "otelcol_hostmetrics_export.pb").read_bytes()
    export = ExportMetricsServiceRequest.FromString(data)
    counters: dict[tuple[str, str, str], float] = {}
    logical_cpus = None
    cpu_started: set[int] = set()
    for resource in export.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.sum.data_points:
                    labels = {a.key: a.value.string_value for a in point.attributes}
                    if metric.name == "system.cpu.time":
                        cpu_started.add(point.start_time_unix_nano)
                    if metric.name in NETWORK_METRICS:
                        key = (metric.name, labels["device"], labels["direction"])
                        counters[key] = point.as_int
                    if metric.name == "system.cpu.logical.count":
                        logical_cpus = point.as_int
    decoded = decode_otlp_python(data, "application/x-protobuf", ("host.name",), "instance", 10**6)
    facts = {k: v for facts in decoded.samples.values() for k, v in facts.items()}
    key = min(decoded.samples)
    event = decode(encode(build_event("otel", key[0], key[1], facts, HostState())))
    assert event.host.hostname == "otel-fixture-host" and event.host.os == "linux"
    (started_ns,) = cpu_started
    assert event.host.boot_time == datetime.fromtimestamp(started_ns // 10**9, UTC)
    assert event.source == "otel" and event.cpu is not None
    assert event.cpu.logical_cores == logical_cpus
    assert event.network is not None
    devices = {device for _, device, _ in counters}
    assert [i.name for i in event.network.interfaces] == sorted(devices)
    fields = {
        "bytes_recv": ("system.network.io", "receive"),
        "bytes_sent": ("system.network.io", "transmit"),
        "packets_recv": ("system.network.packets", "receive"),
        "packets_sent": ("system.network.packets", "transmit"),
        "errin": ("system.network.errors", "receive"),
        "errout": ("system.network.errors", "transmit"),
        "dropin": ("system.network.dropped", "receive"),
        "dropout": ("system.network.dropped", "transmit"),
    }
    for field, (metric, direction) in fields.items():
        for interface in event.network.interfaces:
            assert getattr(interface, field) == counters[(metric, interface.name, direction)]
        total = sum(counters[(metric, device, direction)] for device in devices - {"lo"})
        assert getattr(event.network, field) == total, "the total leaves loopback out"
    assert event.network.bytes_recv > 0
    assert "lo" in devices and counters[("system.network.io", "lo", "receive")] > 0


def recorded_otel_sample_with(metric: str) -> tuple[SampleKey, Facts]:
    """The recorded Collector export's sample (its key and facts) that holds ``metric``."""
    data = (FIXTURES / "otelcol_hostmetrics_export.pb").read_bytes()
    decoded = decode_otlp_python(data, "application/x-protobuf", ("host.name",), "instance", 10**6)
    return next(
        (key, facts)
        for key, facts in decoded.samples.items()
        if any(name == metric for name, _ in facts)
    )


def test_otel_disk_io_counts_each_disk_once_not_its_partitions_again() -> None:
    """The Collector reports every line of /proc/diskstats: a partition's I/O (sda1, nvme0n1p2,
    mmcblk0p1) is in its disk's too. Summed with them, a host's disk I/O was about twice what
    our collector and node_exporter count; device-mapper volumes (dm-0) count, as in both."""
    key, facts = recorded_otel_sample_with("system.disk.io")
    reads = {
        "sda": 9000, "sda1": 1000, "sda2": 8000, "nvme0n1": 700, "nvme0n1p1": 700,
        "dm-0": 8000, "mmcblk0": 50, "mmcblk0p1": 50,
    }  # fmt: skip
    disks = {k: v for k, v in facts.items() if not k[0].startswith("system.disk.")}
    for device, read in reads.items():
        disks[("system.disk.io", (device, "read"))] = float(read * 4096)
        disks[("system.disk.operations", (device, "read"))] = float(read)
    event = decode(encode(build_event("otel", key[0], key[1], disks, HostState())))
    assert event.disk_io is not None
    assert event.disk_io.read_count == 9000 + 700 + 8000 + 50
    assert event.disk_io.read_bytes == (9000 + 700 + 8000 + 50) * 4096


def test_otel_memory_total_is_the_limit_when_the_collector_sends_it() -> None:
    """Since Collector v0.137 `used` is total - MemAvailable, so the states no longer add up
    to the memory: `system.memory.limit` (MemTotal; the README's config turns it on) is the
    total when sent, else the states' sum without the slab breakdown."""
    key, facts = recorded_otel_sample_with("system.memory.usage")
    states = {
        labels[0]: value for (name, labels), value in facts.items() if name == "system.memory.usage"
    }
    assert {"used", "free", "slab_reclaimable"} <= set(states)

    def memory(extra: dict) -> object:  # type: ignore[type-arg]
        event = build_event("otel", key[0], key[1], facts | extra, HostState())
        return decode(encode(event)).memory

    without = memory({})
    assert without.total_bytes == sum(v for k, v in states.items() if not k.startswith("slab"))
    limit = states["used"] + states["free"] + 123_456_789
    with_limit = memory({("system.memory.limit", ()): float(limit)})
    assert with_limit.total_bytes == limit
    assert with_limit.used_bytes == states["used"]
    assert with_limit.used_pct == pytest.approx(100 * states["used"] / limit, abs=0.01)


def test_the_readmes_relabelling_keeps_exactly_the_mapped_series() -> None:
    """The README's ``write_relabel_configs`` regex (Prometheus anchors it) lets every mapped
    name through, ``up`` included (a dropped target retires its host), and not the rest."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (regex,) = re.findall(r'^        regex: "(.*)"$', readme, re.MULTILINE)
    keep = re.compile(regex)
    assert [n for n in REMOTE_WRITE_SERIES if not keep.fullmatch(n)] == []
    others = ["go_goroutines", "node_cpu_guest_seconds_total", "scrape_duration_seconds", "upx"]
    assert [n for n in others if keep.fullmatch(n)] == []


def _comparable(samples: dict[SampleKey, Facts]) -> dict[SampleKey, dict[object, bytes]]:
    """Samples with each value as its bytes: a stale marker is a NaN, equal to no float."""
    return {
        key: {fact: struct.pack("<d", value) for fact, value in facts.items()}
        for key, facts in samples.items()
    }


RECORDED_EXPORTERS = pytest.mark.parametrize(
    ("fixture", "job", "instance"),
    [
        ("node_exporter_darwin", "node", "mac-mini:9100"),
        ("windows_exporter_0.15", "windows", "10.0.0.7:9182"),
    ],
)
"""The recorded exporter outputs, each with the job and instance it is scraped as."""


def _remote_written(
    series: list[tuple[dict[str, str], float]], ts_ms: int, job: str, instance: str
) -> dict[SampleKey, Facts]:
    payload = write_request(series, ts_ms, {"job": job, "instance": instance})
    data = bytes(cramjam.snappy.decompress_raw(payload))
    return decode_remote_write(data, "instance", 10**6).samples


@RECORDED_EXPORTERS
def test_a_collector_scraping_an_exporter_gives_over_otlp_what_remote_write_gives(
    fixture: str, job: str, instance: str
) -> None:
    """A Collector scraping node_exporter or windows_exporter and exporting OTLP sends their
    series under their Prometheus names: they make the facts remote-writing them makes, a stale
    marker included (``up``'s retires a host). Before, every point was dropped and the request
    answered 200: such a fleet sent nothing, silently."""
    series: list[tuple[dict[str, str], float | None]] = list(
        series_of((FIXTURES / f"{fixture}.prom").read_text())
    )
    series += [({"__name__": "up"}, None), ({"__name__": "node_load5"}, None)]
    otlp = decode_otlp_python(
        scraped_export(series, T0, job, instance), PROTOBUF, ("host.name",), "instance", 10**6
    )
    written = [(labels, STALE if value is None else value) for labels, value in series]
    assert _comparable(otlp.samples) == _comparable(_remote_written(written, T0, job, instance))
    assert (instance, T0, TARGET) in otlp.samples and otlp.dropped > 0


@RECORDED_EXPORTERS
@pytest.mark.parametrize("trimmed", ["", "trimmed_"])
def test_a_recorded_collector_scrape_makes_the_event_remote_write_makes(
    fixture: str, job: str, instance: str, trimmed: str
) -> None:
    """The request a real Collector (v0.160.0, `prometheus` receiver) exported after scraping
    the recorded exporter output makes the event the same output remote-written makes; with
    `trim_metric_suffixes` too (its counters without `_total`: before, their CPU, network and
    disk I/O were null while the rest was read)."""
    data = (FIXTURES / f"otelcol_prometheus_{trimmed}{fixture}.pb").read_bytes()
    decoded = decode_otlp_python(data, PROTOBUF, ("host.id", "host.name"), "instance", 10**6)
    [key] = [key for key in decoded.samples if key[2] != TARGET]
    assert key[0] == instance and (instance, key[1], TARGET) in decoded.samples
    otlp = build_event(key[2], instance, key[1], decoded.samples[key], HostState())
    text = (FIXTURES / f"{fixture}.prom").read_text()
    remote = _remote_written(list(series_of(text)), key[1], job, instance)
    written = build_event(key[2], instance, key[1], remote[key], HostState())
    assert otlp.host.hostname in ("MacBook-Pro-16", "kvn-test-bsp")
    assert encode(otlp) == encode(written)


def test_a_scraped_series_over_otlp_names_its_host_by_the_host_label() -> None:
    """With ``SYSMETRICS_INGEST_HOST_LABEL`` another label than ``instance`` (one set in the
    scrape's relabelling), the receiver puts it on each point, where it is read; a mapped
    series without it is refused as remote-write refuses it, a target's ``up`` without it is
    no reading of a host and is left out."""
    load = {"__name__": "node_load1", "host": "web-1"}
    data = scraped_export([(load, 0.5), ({"__name__": "up"}, 1.0)], T0, "node", "10.0.0.1:9100")
    decoded = decode_otlp_python(data, PROTOBUF, ("host.name",), "host", 10**6)
    assert decoded.samples == {("web-1", T0, "node_exporter"): {("node_load1", ()): 0.5}}
    nameless = scraped_export([({"__name__": "node_load1"}, 0.5)], T0, "node", "10.0.0.1:9100")
    with pytest.raises(PayloadError) as raised:
        decode_otlp_python(nameless, PROTOBUF, ("host.name",), "host", 10**6)
    assert raised.value.kind == "no_host" and raised.value.status == 400
