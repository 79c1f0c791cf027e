"""Remote-write payloads as Prometheus sends them, built from a `/metrics` exposition, and the
OTLP export an OTel Collector scraping the same exposition sends."""

from __future__ import annotations

import struct

import cramjam
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from prometheus_client.parser import text_string_to_metric_families

from sysmetrics import prompb

STALE_MARKER = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
"""Prometheus' stale marker: the NaN it sends on every series of a target that went away."""


def series_of(exposition: str) -> list[tuple[dict[str, str], float]]:
    """Every sample line of ``exposition`` as (labels with __name__, value)."""
    out = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out.append(({"__name__": sample.name, **sample.labels}, float(sample.value)))
    return out


def write_request(
    series: list[tuple[dict[str, str], float]], ts_ms: int, extra: dict[str, str] | None = None
) -> bytes:
    """A snappy-compressed WriteRequest: each series with one sample at ``ts_ms``."""
    request = prompb.WriteRequest()
    for labels, value in series:
        ts = request.timeseries.add()
        for name, label_value in sorted({**labels, **(extra or {})}.items()):
            ts.labels.add(name=name, value=label_value)
        ts.samples.add(value=value, timestamp=ts_ms)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def varint(n: int) -> bytes:
    """A protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire_type: int, body: bytes) -> bytes:
    """A protobuf field: its tag, then ``body`` (length-prefixed for wire type 2)."""
    tag = varint(number << 3 | wire_type)
    return tag + (varint(len(body)) + body if wire_type == 2 else body)


def write_request_v2(
    series: list[tuple[dict[str, str], float]],
    ts_ms: int,
    extra: dict[str, str] | None = None,
    histograms: int = 0,
    exemplars: int = 0,
) -> bytes:
    """A snappy-compressed remote-write 2.0 ``io.prometheus.write.v2.Request`` (as Prometheus 3
    sends with ``protobuf_message: io.prometheus.write.v2.Request``), encoded by hand from the
    specification: a symbol table, each series' labels as references into it, one sample each,
    and ``histograms`` native histograms and ``exemplars`` exemplars each (empty messages)."""
    symbols = {"": 0}
    body = b""
    for labels, value in series:
        refs = b""
        for name, label_value in sorted({**labels, **(extra or {})}.items()):
            for text in (name, label_value):
                refs += varint(symbols.setdefault(text, len(symbols)))
        sample = field(1, 1, struct.pack("<d", value)) + field(2, 0, varint(ts_ms))
        others = field(3, 2, b"") * histograms + field(4, 2, b"") * exemplars
        body += field(5, 2, field(1, 2, refs) + field(2, 2, sample) + others)
    request = b"".join(field(4, 2, text.encode()) for text in symbols) + body
    return bytes(cramjam.snappy.compress_raw(request))


def scraped_export(
    series: list[tuple[dict[str, str], float | None]], ts_ms: int, job: str, instance: str
) -> bytes:
    """One scrape as the OTel Collector's ``prometheus`` receiver exports it over OTLP (its
    internal/prom_to_otlp.go and metricfamily.go at v0.160.0): ``job`` and ``instance`` as the
    resource's ``service.name`` and ``service.instance.id``, the other labels on each point, a
    stale marker (value None) as a point flagged NO_RECORDED_VALUE with no value."""
    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    for key, value in (("service.name", job), ("service.instance.id", instance)):
        resource.resource.attributes.add(key=key).value.string_value = value
    scope = resource.scope_metrics.add()
    for labels, number in series:
        point = scope.metrics.add(name=labels["__name__"]).gauge.data_points.add()
        point.time_unix_nano = ts_ms * 1_000_000
        for key, value in labels.items():
            if key != "__name__":
                point.attributes.add(key=key).value.string_value = value
        if number is None:
            point.flags = 1
        else:
            point.as_double = number
    return request.SerializeToString()
