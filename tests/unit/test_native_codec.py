"""The compiled remote-write decoder (native/, optional) and its Python twin give the same
answer on the same payloads: the recorded exporters, the shapes Prometheus sends, and poison."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import cramjam
import pytest

from sysmetrics.ingest import wire
from sysmetrics.ingest.wire import Decoded, PayloadError, decode_remote_write_python
from tests.support.remote_write import series_of, write_request

native = pytest.importorskip(
    "sysmetrics_native", reason="the compiled codec is not built (make install-dev needs cargo)"
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"
T0 = 1_764_547_200_000


def _raw(payload: bytes) -> bytes:
    return bytes(cramjam.snappy.decompress_raw(payload))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire_type: int, body: bytes) -> bytes:
    tag = _varint(number << 3 | wire_type)
    return tag + (_varint(len(body)) + body if wire_type == 2 else body)


def _label(name: bytes, value: bytes) -> bytes:
    return _field(1, 2, _field(1, 2, name) + _field(2, 2, value))


def _sample(value: float, ts: int) -> bytes:
    return _field(2, 2, _field(1, 1, struct.pack("<d", value)) + _field(2, 0, _varint(ts)))


def _request(*series: bytes) -> bytes:
    return b"".join(_field(1, 2, s) for s in series)


def _comparable(decoded: Decoded) -> tuple[object, ...]:
    """NaN (Prometheus' stale marker) compared by its bits."""
    samples = {
        key: [(n, v, struct.pack("<d", x) if math.isnan(x) else x) for n, v, x in facts]
        for key, facts in decoded.samples.items()
    }
    return samples, decoded.series, decoded.dropped


def _both(data: bytes, host_label: str = "instance", max_series: int = 10**6) -> list[object]:
    answers: list[object] = []
    for decode in (wire.decode_remote_write, decode_remote_write_python):
        try:
            answers.append(_comparable(decode(data, host_label, max_series)))
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
        + _sample(struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0], T0),
        # an unmapped series, a series with no samples, unknown fields at every level
        _label(b"__name__", b"go_goroutines") + _label(b"instance", b"a:9100") + _sample(9, T0),
        _label(b"__name__", b"node_load5") + _label(b"instance", b"a:9100"),
        _label(b"__name__", b"node_load15")
        + _label(b"instance", b"a:9100")
        + _field(3, 2, b"\x0a\x00")  # an exemplar
        + _field(2, 2, _field(1, 1, struct.pack("<d", 0.25)) + _field(7, 0, b"\x01")),
    ) + _field(3, 2, _field(1, 0, b"\x02"))  # metadata
    compiled, python = _both(data)
    assert compiled == python
    assert isinstance(compiled, tuple) and compiled[1:] == (5, 1)
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
