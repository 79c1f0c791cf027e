"""Remote-write payloads as Prometheus sends them, built from a `/metrics` exposition."""

from __future__ import annotations

import struct

import cramjam
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


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def write_request_v2(series: list[tuple[dict[str, str], float]], ts_ms: int) -> bytes:
    """A snappy-compressed remote-write 2.0 ``io.prometheus.write.v2.Request`` (as Prometheus 3
    sends with ``protobuf_message: io.prometheus.write.v2.Request``), encoded by hand from the
    specification: a symbol table, each series' labels as references into it, one sample each."""
    symbols = [""]
    body = b""
    for labels, value in series:
        refs = b""
        for name, label_value in sorted(labels.items()):
            for text in (name, label_value):
                if text not in symbols:
                    symbols.append(text)
                refs += _varint(symbols.index(text))
        sample = b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(ts_ms)
        body += _field(5, _field(1, refs) + _field(2, sample))
    request = b"".join(_field(4, text.encode()) for text in symbols) + body
    return bytes(cramjam.snappy.compress_raw(request))
