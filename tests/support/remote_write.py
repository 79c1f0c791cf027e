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
