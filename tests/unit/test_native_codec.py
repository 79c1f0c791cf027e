"""The compiled decoders (native/, optional: remote-write, OTLP) and their Python twins give
the same answer on the same payloads: recorded exporters and a recorded OTel Collector export,
the shapes the senders use, merges, poison and mutants."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import cramjam
import pytest

from sysmetrics.ingest import wire
from sysmetrics.ingest.wire import Decoded, PayloadError, decode_remote_write_python
from tests.support.remote_write import (
    STALE_MARKER,
    field,
    scraped_export,
    series_of,
    varint,
    write_request,
    write_request_v2,
)

native = pytest.importorskip(
    "sysmetrics_native", reason="the compiled codec is not built (make install-dev needs cargo)"
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"
T0 = 1_764_547_200_000


def _raw(payload: bytes) -> bytes:
    return bytes(cramjam.snappy.decompress_raw(payload))


def _label(name: bytes, value: bytes) -> bytes:
    return field(1, 2, field(1, 2, name) + field(2, 2, value))


def _sample(value: float, ts: int) -> bytes:
    return field(2, 2, field(1, 1, struct.pack("<d", value)) + field(2, 0, varint(ts)))


def _request(*series: bytes) -> bytes:
    return b"".join(field(1, 2, s) for s in series)


def _comparable(decoded: Decoded) -> tuple[object, ...]:
    """Each sample's facts as (name, labels, value) in the order they were set (both decoders
    must make the same dicts the same way); NaN (Prometheus' stale marker) by its bits."""
    samples = {
        key: [(n, v, struct.pack("<d", x) if math.isnan(x) else x) for (n, v), x in facts.items()]
        for key, facts in decoded.samples.items()
    }
    return (
        samples,
        decoded.series,
        decoded.dropped,
        decoded.values,
        decoded.histograms,
        decoded.exemplars,
        decoded.delta,
    )


def _both(
    data: bytes, host_label: str = "instance", max_series: int = 10**6, version: int = 1
) -> list[object]:
    answers: list[object] = []
    for decode in (wire.decode_remote_write, decode_remote_write_python):
        try:
            answers.append(_comparable(decode(data, host_label, max_series, version)))
        except PayloadError as exc:
            answers.append((exc.kind, str(exc), exc.status))
    return answers


def test_the_compiled_decoder_is_the_one_the_receiver_uses() -> None:
    assert isinstance(wire._NATIVE, native.RemoteWriteDecoder)


@pytest.mark.parametrize("fixture", ["node_exporter_darwin.prom", "windows_exporter_0.15.prom"])
def test_recorded_exporters_decode_the_same(fixture: str) -> None:
    series = series_of((FIXTURES / fixture).read_text())
    data = _raw(write_request(series, T0, {"instance": "host-1:9100", "job": "node"}))
    compiled, python = _both(data)
    assert compiled == python
    assert isinstance(compiled, tuple) and compiled[2] > 0 and compiled[0]


def test_several_samples_hosts_and_label_orders_decode_the_same() -> None:
    cpu = [_label(b"__name__", b"node_cpu_seconds_total"), _label(b"cpu", b"0")]
    data = _request(
        b"".join([*cpu, _label(b"mode", b"idle"), _label(b"instance", b"a:9100")])
        + _sample(1.5, T0)
        + _sample(2.5, T0 + 10_000),
        # labels out of order, a repeated label (the last wins, as in a dict), a stale marker
        _label(b"instance", b"b:9100")
        + _label(b"__name__", b"node_load1")
        + _label(b"instance", b"c:9100")
        + _sample(STALE_MARKER, T0),
        # an unmapped series, a series with no samples, unknown fields at every level
        _label(b"__name__", b"go_goroutines") + _label(b"instance", b"a:9100") + _sample(9, T0),
        _label(b"__name__", b"node_load5") + _label(b"instance", b"a:9100"),
        _label(b"__name__", b"node_load15")
        + _label(b"instance", b"a:9100")
        + field(3, 2, b"\x0a\x00")  # an exemplar
        + field(2, 2, field(1, 1, struct.pack("<d", 0.25)) + field(7, 0, b"\x01")),
    ) + field(3, 2, field(1, 0, b"\x02"))  # metadata
    compiled, python = _both(data)
    assert compiled == python
    # 1.0's exemplars and histograms are not counted: its answer has no place for them
    assert isinstance(compiled, tuple) and compiled[1:] == (5, 1, 5, 0, 0, 0)
    assert set(compiled[0]) == {  # type: ignore[call-overload]
        ("a:9100", T0, "node_exporter"),
        ("a:9100", T0 + 10_000, "node_exporter"),
        ("c:9100", T0, "node_exporter"),
        ("a:9100", 0, "node_exporter"),
    }


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x00\x01garbage", "bad_protobuf"),
        (b"\x0a\x05\x0a\x03", "bad_protobuf"),  # a length past the end
        (b"\x0a\x02\x0a\xff", "bad_protobuf"),  # a truncated nested message
        (_request(_label(b"__name__", b"node_load1") + _label(b"instance", b"\xff\xfe")), ""),
        (_request(_label(b"__name__", b"node_load1") + _sample(1, T0)), "no_host"),
        (_request(_label(b"__name__", b"node_load1") + _label(b"instance", b"a\nb")), "bad_host"),
        (_request(*[_label(b"__name__", b"x")] * 11), "too_many_series"),
    ],
)
def test_poison_is_refused_the_same_way(data: bytes, kind: str) -> None:
    compiled, python = _both(data, max_series=10)
    assert compiled == python
    assert isinstance(compiled, tuple) and isinstance(compiled[0], str)
    assert compiled[0] == (kind or "bad_protobuf") and 400 <= compiled[2] < 500


# Remote-write 2.0: labels are references into the request's symbols; the facts are those of
# the same series sent as 1.0.


@pytest.mark.parametrize("fixture", ["node_exporter_darwin.prom", "windows_exporter_0.15.prom"])
def test_recorded_exporters_as_remote_write_2_decode_as_they_do_as_1(fixture: str) -> None:
    series = series_of((FIXTURES / fixture).read_text())
    host = {"instance": "host-1:9100", "job": "node"}
    v2 = _both(_raw(write_request_v2(series, T0, host)), version=2)
    assert v2[0] == v2[1] == _both(_raw(write_request(series, T0, host)))[0]


def _series_v2(refs: list[int], *samples: bytes, packed: bool = True, extra: bytes = b"") -> bytes:
    if packed:
        labels = field(1, 2, b"".join(varint(r) for r in refs))
    else:
        labels = b"".join(field(1, 0, varint(r)) for r in refs)
    return field(5, 2, labels + b"".join(samples) + extra)


def _symbols(*texts: bytes) -> bytes:
    return b"".join(field(4, 2, t) for t in texts)


SYMBOLS = _symbols(b"", b"__name__", b"node_load1", b"instance", b"a:9100", b"go_goroutines")


def test_remote_write_2_shapes_decode_the_same() -> None:
    data = (
        # packed references, then the same series with unpacked ones, at another time
        _series_v2([1, 2, 3, 4], _sample(0.5, T0))
        + _series_v2([3, 4, 1, 2], _sample(0.75, T0 + 10_000), packed=False)
        # an unmapped series with two samples; a sample's start_timestamp, a histogram, an
        # exemplar and metadata, none of which the decoders read
        + _series_v2([1, 5, 3, 4], _sample(7, T0), _sample(8, T0 + 10_000))
        + _series_v2(
            [1, 2, 3, 4],
            field(2, 2, field(1, 1, struct.pack("<d", 0.25)) + field(3, 0, varint(T0))),
            extra=field(3, 2, field(1, 0, b"\x05"))
            + field(4, 2, field(2, 1, struct.pack("<d", 1.0)))
            + field(5, 2, field(1, 0, b"\x02")),
        )
        # an unmapped series of two native histograms and no float sample
        + _series_v2([1, 5, 3, 4], extra=field(3, 2, b"") * 2)
        + SYMBOLS  # the symbols after the series that refer to them
    )
    compiled, python = _both(data, version=2)
    assert compiled == python
    # (series, dropped, float samples, native histograms, exemplars): what the answer counts
    assert isinstance(compiled, tuple) and compiled[1:] == (5, 2, 5, 3, 1, 0)
    assert compiled[0] == {
        ("a:9100", T0, "node_exporter"): [("node_load1", (), 0.5)],
        ("a:9100", T0 + 10_000, "node_exporter"): [("node_load1", (), 0.75)],
        ("a:9100", 0, "node_exporter"): [("node_load1", (), 0.25)],
    }


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x00\x01garbage", "bad_protobuf"),
        (SYMBOLS + _series_v2([1, 2, 3], _sample(1, T0)), "bad_protobuf"),  # an odd count
        (SYMBOLS + _series_v2([1, 2, 3, 6], _sample(1, T0)), "bad_protobuf"),  # past the symbols
        (_symbols(b"", b"\xff") + _series_v2([1, 1]), "bad_protobuf"),  # a symbol not UTF-8
        (SYMBOLS + _series_v2([1, 2], _sample(1, T0)), "no_host"),
        (
            _symbols(b"", b"__name__", b"node_load1", b"instance", b"a\nb")
            + _series_v2([1, 2, 3, 4]),
            "bad_host",
        ),
        (SYMBOLS + _series_v2([1, 2, 3, 4]) * 11, "too_many_series"),
    ],
)
def test_remote_write_2_poison_is_refused_the_same_way(data: bytes, kind: str) -> None:
    compiled, python = _both(data, max_series=10, version=2)
    assert compiled == python
    assert isinstance(compiled, tuple) and compiled[0] == kind and 400 <= compiled[2] < 500


# OTLP/HTTP: the compiled decoder answers only where it reads every field; elsewhere it hands
# over (None) and the Python decoder answers, so both entry points must agree everywhere.

HOST_ATTRIBUTES = ("host.id", "host.name")
PROTOBUF = "application/x-protobuf"


def _otlp_both(data: bytes, max_series: int = 10**6) -> list[object]:
    answers: list[object] = []
    for decode in (wire.decode_otlp, wire.decode_otlp_python):
        try:
            decoded = decode(data, PROTOBUF, HOST_ATTRIBUTES, "instance", max_series)
            answers.append(_comparable(decoded))
        except PayloadError as exc:
            answers.append((exc.kind, str(exc), exc.status))
    return answers


def _compiled_reads(data: bytes) -> bool:
    native_otlp = wire._NATIVE_OTLP
    assert native_otlp is not None
    return native_otlp.decode(data, list(HOST_ATTRIBUTES), "instance") is not None


def _kv(key: bytes, value: bytes) -> bytes:
    """A KeyValue; ``value`` is an AnyValue's body."""
    return field(1, 2, key) + field(2, 2, value)


def _text(value: bytes) -> bytes:
    return field(1, 2, value)


def _point(attributes: list[bytes], time_ns: int, value: bytes) -> bytes:
    return (
        b"".join(field(7, 2, a) for a in attributes)
        + field(2, 1, struct.pack("<Q", time_ns - 10**9))
        + field(3, 1, struct.pack("<Q", time_ns))
        + value
    )


def _double(x: float) -> bytes:
    return field(4, 1, struct.pack("<d", x))


def _int(n: int) -> bytes:
    return field(6, 1, struct.pack("<q", n))


def _metric(name: bytes, kind: int, *points: bytes, extra: bytes = b"") -> bytes:
    """A Metric with a Gauge (kind 5) or a Sum (kind 7) of ``points``."""
    data = b"".join(field(1, 2, p) for p in points) + extra
    return field(1, 2, name) + field(3, 2, b"By") + field(kind, 2, data)


def _resource(attributes: list[bytes], *metrics: bytes) -> bytes:
    resource = b"".join(field(1, 2, a) for a in attributes)
    scope = field(1, 2, field(1, 2, b"hostmetricsreceiver") + field(2, 2, b"0.160.0"))
    return field(1, 2, resource) + field(2, 2, scope + b"".join(field(2, 2, m) for m in metrics))


def _export(*resources: bytes) -> bytes:
    return b"".join(field(1, 2, r) for r in resources)


T0_NS = T0 * 1_000_000
HOST = _kv(b"host.name", _text(b"otel-1"))


def test_the_compiled_otlp_decoder_is_the_one_the_receiver_uses() -> None:
    assert isinstance(wire._NATIVE_OTLP, native.OtlpDecoder)


def test_a_recorded_collector_export_is_read_by_the_compiled_decoder_the_same() -> None:
    data = (FIXTURES / "otelcol_hostmetrics_export.pb").read_bytes()
    assert _compiled_reads(data)
    compiled, python = _otlp_both(data)
    assert compiled == python
    assert isinstance(compiled, tuple) and compiled[1:] == (84, 27, 0, 0, 0, 0)
    facts = [fact for facts in compiled[0].values() for fact in facts]  # type: ignore[attr-defined]
    assert {"system.cpu.time", "system.memory.usage", "resource", "started"} <= {
        f[0] for f in facts
    }


@pytest.mark.parametrize(
    "fixture",
    [
        "otelcol_prometheus_node_exporter_darwin.pb",
        "otelcol_prometheus_windows_exporter_0.15.pb",
        "otelcol_prometheus_trimmed_node_exporter_darwin.pb",
        "otelcol_prometheus_trimmed_windows_exporter_0.15.pb",
    ],
)
def test_an_exporter_scraped_by_a_collector_is_read_by_the_compiled_decoder_the_same(
    fixture: str,
) -> None:
    """Exporter series under their Prometheus names (a Collector's `prometheus` receiver,
    with and without `trim_metric_suffixes`) make the same facts in both decoders."""
    data = (FIXTURES / fixture).read_bytes()
    assert _compiled_reads(data)
    compiled, python = _otlp_both(data)
    assert compiled == python
    assert isinstance(compiled, tuple) and len(compiled[0]) == 2  # type: ignore[arg-type]


def test_scraped_stale_markers_and_hosts_are_read_the_same_in_both() -> None:
    """A scraped target's stale `up` and series (points flagged NO_RECORDED_VALUE) become the
    stale marker with its bits in both decoders; a series without the host label is refused
    the same way, and a target's `up` without it dropped the same way."""
    series: list[tuple[dict[str, str], float | None]] = [
        ({"__name__": "node_load1"}, 0.5),
        ({"__name__": "node_load5"}, None),
        ({"__name__": "up"}, None),
        ({"__name__": "node_cpu_seconds", "cpu": "0", "mode": "idle"}, 7.0),  # a gauge: not trimmed
    ]
    data = scraped_export(series, T0, "node", "web-1:9100")
    assert _compiled_reads(data)
    compiled, python = _otlp_both(data)
    assert compiled == python
    samples = compiled[0]  # type: ignore[index]
    stale = struct.pack("<d", STALE_MARKER)
    assert samples[("web-1:9100", T0, "target")] == [("up", ("node", "web-1:9100"), stale)]
    loads = samples[("web-1:9100", T0, "node_exporter")]
    assert loads == [("node_load1", (), 0.5), ("node_load5", (), stale)]
    nameless = scraped_export([({"__name__": "node_load1"}, 0.5)], T0, "node", "")
    assert _otlp_both(nameless)[0] == _otlp_both(nameless)[1]
    assert _otlp_both(nameless)[0][0] == "no_host"  # type: ignore[index]
    only_up = scraped_export([({"__name__": "up"}, 1.0)], T0, "node", "")
    compiled, python = _otlp_both(only_up)
    assert compiled == python and compiled[0] == {}  # type: ignore[index]


def test_the_start_time_of_cpu_points_is_kept_in_both() -> None:
    """`system.cpu.time`'s start time (the Collector's boot time) is the fact `started`, in
    seconds; another metric's is not kept, nor an unset one (0)."""
    cpu = _kv(b"cpu", _text(b"cpu0")), _kv(b"state", _text(b"idle"))
    unset = field(7, 2, cpu[0]) + field(7, 2, cpu[1]) + field(3, 1, struct.pack("<Q", T0_NS))
    data = _export(
        _resource(
            [HOST],
            _metric(b"system.cpu.time", 7, _point(list(cpu), T0_NS, _double(2.5))),
            _metric(b"system.network.io", 7, _point([], T0_NS - 5 * 10**9, _int(7))),
        ),
        _resource(
            [_kv(b"host.name", _text(b"otel-2"))],
            _metric(b"system.cpu.time", 7, unset + _double(2.5)),
        ),
    )
    assert _compiled_reads(data)
    compiled, python = _otlp_both(data)
    assert compiled == python
    samples = wire.decode_otlp(data, PROTOBUF, HOST_ATTRIBUTES, "instance", 10**6).samples
    assert samples[("otel-1", T0, "otel")][("started", ())] == (T0_NS - 10**9) / 1e9
    assert ("started", ()) not in samples[("otel-1", T0 - 5000, "otel")]
    assert ("started", ()) not in samples[("otel-2", T0, "otel")]


def test_every_shape_the_compiled_decoder_reads_decodes_the_same() -> None:
    cpu = b"system.cpu.time"
    data = _export(
        _resource(
            # host.name twice (the last wins), an int and a bool attribute, a double not kept
            [
                _kv(b"host.name", _text(b"old")),
                HOST,
                _kv(b"host.arch", field(3, 0, varint(64))),
                _kv(b"os.type", field(2, 0, b"\x01")),
                _kv(b"load", _double(0.5)),
            ],
            _metric(
                cpu,
                7,
                _point(
                    [_kv(b"cpu", _text(b"cpu0")), _kv(b"state", _text(b"idle"))],
                    T0_NS,
                    _double(9.5),
                ),
                # an int value, attributes out of order, one repeated, one an int
                _point(
                    [
                        _kv(b"state", _text(b"user")),
                        _kv(b"cpu", field(3, 0, varint(1))),
                        _kv(b"state", _text(b"system")),
                    ],
                    T0_NS + 400_000_000,
                    _int(-3),
                ),
                # 1.2 s later: a sample of its own; -0.0, then no value at all
                _point([_kv(b"cpu", _text(b"cpu0"))], T0_NS + 1_600_000_000, _double(-0.0)),
                _point([], T0_NS + 1_600_000_000, b""),
                extra=field(2, 0, b"\x02") + field(3, 0, b"\x01"),
            ),
            _metric(b"system.memory.usage", 5, _point([], T0_NS, _double(float("nan")))),
            _metric(b"process.cpu.time", 7, _point([], T0_NS, _double(1.0))),  # not mapped
            field(1, 2, b"system.cpu.logical.count"),  # a metric with no data
        ),
        # the same host again in a second resource; a resource with no points
        _resource([HOST], _metric(b"system.cpu.load_average.1m", 5, _point([], T0_NS, _double(1)))),
        _resource([_kv(b"host.name", _text(b"idle-host"))]),
    )
    assert _compiled_reads(data)
    compiled, python = _otlp_both(data)
    assert compiled == python
    assert isinstance(compiled, tuple) and compiled[1:] == (8, 1, 0, 0, 0, 0)
    assert set(compiled[0]) == {  # type: ignore[call-overload]
        ("otel-1", T0, "otel"),
        ("otel-1", T0 + 1_600, "otel"),
    }


def test_delta_sums_of_mapped_metrics_are_dropped_and_counted_in_both() -> None:
    """A sum in delta temporality (an SDK preferring delta, a Collector with the
    cumulativetodelta processor) was read as the cumulative counter the field is: the lake's
    network counter stood at one interval's bytes, its rate 0, and CPU % came from the
    difference of two deltas. Its points are dropped and counted; the gauges and cumulative
    sums beside it are read, and an unmapped delta sum is only unmapped."""
    delta, cumulative = field(2, 0, b"\x01"), field(2, 0, b"\x02")
    network = _point([_kv(b"direction", _text(b"receive"))], T0_NS, _int(1500))
    data = _export(
        _resource(
            [HOST],
            _metric(b"system.network.io", 7, network, network, extra=delta + field(3, 0, b"\x01")),
            _metric(b"system.cpu.time", 7, _point([], T0_NS, _double(1.5)), extra=delta),
            _metric(b"system.disk.io", 7, _point([], T0_NS, _int(7)), extra=cumulative),
            _metric(b"process.cpu.time", 7, _point([], T0_NS, _double(1.0)), extra=delta),
            MEMORY,
        )
    )
    assert not _compiled_reads(data), "handed to the Python decoder"
    compiled, python = _otlp_both(data)
    assert compiled == python
    assert isinstance(compiled, tuple)
    samples, series, dropped, *_, delta_points = compiled
    assert (series, dropped, delta_points) == (6, 1, 3)
    names = {name for facts in samples.values() for name, _labels, _value in facts}  # type: ignore[attr-defined]
    assert names == {"resource", "system.disk.io", "system.memory.usage"}


def test_points_with_no_recorded_value_make_no_sample_in_both() -> None:
    """FLAG_NO_RECORDED_VALUE (flags bit 0) is OTLP's stale marker: no reading, even with a
    value set; other flag bits change nothing."""
    no_value = field(8, 0, b"\x01")
    memory = b"system.memory.usage"
    data = _export(
        _resource(
            [HOST],
            _metric(memory, 5, _point([], T0_NS, _double(5.0) + field(8, 0, b"\x02"))),
            _metric(b"system.cpu.load_average.1m", 5, _point([], T0_NS, _double(1) + no_value)),
            _metric(memory, 5, _point([], T0_NS + 5 * 10**9, _double(7.0) + no_value)),
        ),
    )
    assert _compiled_reads(data)
    compiled, python = _otlp_both(data)
    assert compiled == python
    samples = compiled[0]  # type: ignore[index]
    assert set(samples) == {("otel-1", T0, "otel")}
    assert [f[0] for f in samples[("otel-1", T0, "otel")]] == ["resource", "system.memory.usage"]


@pytest.mark.parametrize(
    ("data", "compiled_reads"),
    [
        # a merged message: the metric's gauge given twice, then switched to a sum
        (
            _export(
                _resource(
                    [HOST],
                    _metric(b"system.memory.usage", 5, _point([], T0_NS, _double(1)))
                    + field(5, 2, field(1, 2, _point([], T0_NS, _double(2))))
                    + field(7, 2, field(1, 2, _point([], T0_NS, _double(3)))),
                )
            ),
            True,
        ),
        # a resource given twice on the wire (merged: the host in the second part)
        (
            field(
                1,
                2,
                field(1, 2, b"")
                + _resource(
                    [HOST], _metric(b"system.cpu.load_average.5m", 5, _point([], T0_NS, _double(1)))
                ),
            ),
            True,
        ),
        # an empty histogram (read since 2026-12-06: a scraped exporter has summaries and
        # histograms, none of their points a fact); a kept attribute that is a double, an
        # exemplar, a string-table index (handed over)
        (
            _export(
                _resource(
                    [HOST],
                    _metric(
                        b"system.cpu.frequency",
                        5,
                        _point([_kv(b"cpu", _double(1))], T0_NS, _double(1)),
                    ),
                )
            ),
            False,
        ),
        (_export(_resource([HOST], field(1, 2, b"system.cpu.time") + field(9, 2, b""))), True),
        (
            _export(
                _resource(
                    [HOST],
                    _metric(
                        b"system.cpu.time", 7, _point([], T0_NS, _double(1)) + field(5, 2, b"")
                    ),
                )
            ),
            False,
        ),
        (
            _export(
                _resource(
                    [_kv(b"host.name", field(8, 0, b"\x01"))],
                    _metric(b"system.cpu.time", 7, _point([], T0_NS, _double(1))),
                )
            ),
            False,
        ),
    ],
)
def test_merges_and_what_the_compiled_decoder_hands_over_decode_the_same(
    data: bytes, compiled_reads: bool
) -> None:
    assert _compiled_reads(data) is compiled_reads
    compiled, python = _otlp_both(data)
    assert compiled == python
    assert isinstance(compiled, tuple) and compiled[1] >= 1  # decoded, not refused


MEMORY = _metric(b"system.memory.usage", 5, _point([], T0_NS, _double(1)))


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x00\x01garbage", "bad_protobuf"),
        (_export(_resource([_kv(b"host.name", b"\x0a\x02\xff\xfe")], MEMORY)), "bad_protobuf"),
        (
            _export(_resource([_kv(b"k", field(5, 2, field(1, 2, _text(b"\xff"))))], MEMORY)),
            "bad_protobuf",
        ),
        (_export(_resource([_kv(b"os.type", _text(b"linux"))], MEMORY)), "no_host"),
        (_export(_resource([_kv(b"host.name", _text(b"a\nb"))], MEMORY)), "bad_host"),
        # a host given as a key-value list: Python's str() of the message has line breaks
        (
            _export(
                _resource(
                    [_kv(b"host.name", field(6, 2, field(1, 2, _kv(b"a", _text(b"b")))))], MEMORY
                )
            ),
            "bad_host",
        ),
        (_export(_resource([HOST], *[MEMORY] * 6), _resource([], MEMORY)), "too_many_series"),
        (_export(_resource([], MEMORY), _resource([HOST], *[MEMORY] * 6)), "no_host"),
    ],
)
def test_otlp_poison_is_refused_the_same_way(data: bytes, kind: str) -> None:
    compiled, python = _otlp_both(data, max_series=5)
    assert compiled == python
    assert isinstance(compiled, tuple) and compiled[0] == kind and 400 <= compiled[2] < 500


def _mutants(data: bytes, seed: int, count: int = 3_000) -> Iterator[bytes]:
    """``count`` copies of ``data``, each with 1 to 3 bytes flipped, runs cut or bytes added."""
    rng = random.Random(seed)
    for _ in range(count):
        mutant = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(mutant))
            action = rng.random()
            if action < 0.6:
                mutant[at] = rng.randrange(256)
            elif action < 0.8:
                del mutant[at : at + rng.randint(1, 8)]
            else:
                mutant[at:at] = rng.randbytes(rng.randint(1, 4))
        yield bytes(mutant)


@pytest.mark.parametrize(
    ("fixture", "seed"),
    [
        ("otelcol_hostmetrics_export.pb", 23),
        ("otelcol_prometheus_node_exporter_darwin.pb", 29),  # scraped: with a summary
    ],
)
def test_mutants_of_a_recorded_export_decode_the_same(fixture: str, seed: int) -> None:
    """Bytes flipped, cut and inserted anywhere in a real export: the compiled decoder either
    hands over or gives the Python decoder's answer, never another one."""
    data = (FIXTURES / fixture).read_bytes()
    read = 0
    for mutant in _mutants(data, seed=seed):
        compiled, python = _otlp_both(mutant)
        assert compiled == python, mutant.hex()
        read += _compiled_reads(mutant)
    assert read > 300  # most mutants a flipped value or name the compiled decoder still reads


def test_a_targets_up_without_a_host_is_dropped_not_the_request() -> None:
    """``up`` is no reading: a target without the host label (set by metric relabelling, it is
    not on ``up``) loses its ``up``, and the request its mapped series are in is kept; a mapped
    series with that host is still refused. The stale marker on ``up`` keeps its bits."""
    load = _label(b"__name__", b"node_load1") + _label(b"instance", b"a:9100") + _sample(1, T0)
    up = _label(b"__name__", b"up") + _label(b"job", b"node")
    data = _request(
        up + _sample(1, T0),
        load,
        up + _label(b"instance", b"a:9100") + _sample(STALE_MARKER, T0 + 1),
    )
    compiled, python = _both(data)
    assert compiled == python
    assert isinstance(compiled, tuple)
    assert compiled[0] == {
        ("a:9100", T0, "node_exporter"): [("node_load1", (), 1.0)],
        ("a:9100", T0 + 1, "target"): [("up", ("node", "a:9100"), struct.pack("<d", STALE_MARKER))],
    }
    refused = _both(
        _request(up + _sample(1, T0), _label(b"__name__", b"node_load1") + _sample(1, T0))
    )
    assert refused[0] == refused[1] and refused[0][0] == "no_host"  # type: ignore[index]


def test_wire_shapes_no_sender_writes_decode_the_same() -> None:
    """Two the mutants below found, where the compiled decoder answered otherwise: a label
    with a group among its fields (protobuf: the Python parser skips it; the compiled one
    refused the request) and a tag past 32 bits (no protobuf: the Python parser refuses it;
    the compiled one read it as a field to skip)."""
    group = varint(7 << 3 | 3) + field(1, 0, varint(5)) + varint(7 << 3 | 4)
    job = field(1, 2, field(1, 2, b"job") + group + field(2, 2, b"node"))
    load = _label(b"__name__", b"node_load1") + _label(b"instance", b"a:9100")
    compiled, python = _both(_request(load + job + _sample(1.5, T0)))
    assert compiled == python
    assert isinstance(compiled, tuple)
    assert compiled[0] == {("a:9100", T0, "node_exporter"): [("node_load1", (), 1.5)]}
    beyond = varint((1 << 29) << 3 | 1) + struct.pack("<d", 2.0)
    refused = _both(_request(load + field(2, 2, beyond + field(2, 0, varint(T0)))))
    assert refused[0] == refused[1] and refused[0][0] == "bad_protobuf"  # type: ignore[index]


@pytest.mark.parametrize("version", [1, 2])
def test_mutants_of_a_recorded_remote_write_request_decode_the_same(version: int) -> None:
    """Bytes flipped, cut and inserted anywhere in a request of a recorded exporter (what a
    hostile or broken sender may post): the compiled decoder gives the Python decoder's
    answer, a refusal included, never another one and never an exception of its own."""
    series = series_of((FIXTURES / "node_exporter_darwin.prom").read_text())
    encode = write_request if version == 1 else write_request_v2
    data = _raw(encode(series, T0, {"instance": "host-1:9100", "job": "node"}))
    decoded = 0
    for mutant in _mutants(data, seed=25 + version):
        compiled, python = _both(mutant, version=version)
        assert compiled == python, mutant.hex()
        decoded += isinstance(compiled[0], dict)  # type: ignore[index]
    assert decoded > 300  # most mutants a flipped value or name both decoders still read
