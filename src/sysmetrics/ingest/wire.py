"""Payloads in, facts out: Prometheus remote-write 1.0 and 2.0 and OTLP/HTTP metrics.

Each decoder returns the request's facts grouped by (host, sample time, source), drops the
series the mapping does not name as soon as it reads their name, and raises
:class:`PayloadError` for a payload that can never succeed, so the sender gets a 4xx and no
part of it is kept.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import cramjam
from google.protobuf.message import DecodeError

from sysmetrics import prompb
from sysmetrics.ingest.mapping import (
    OTEL_METRICS,
    OTEL_RESOURCE,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_STARTED,
    OTEL_STARTED_METRIC,
    PROMETHEUS_RESOURCE_LABELS,
    REMOTE_WRITE_SERIES,
    STALE_MARKER,
    TARGET,
    FactKey,
    Facts,
)

SampleKey = tuple[str, int, str]
"""(host_id, sample time in Unix ms, source)."""

_STARTED: Final[FactKey] = (OTEL_STARTED, ())
_STALE: Final[float] = struct.unpack("<d", STALE_MARKER)[0]
_TOTAL: Final = "_total"
_SCRAPED: Final[dict[str, tuple[str, str, tuple[str, ...], bool]]] = {
    **{
        name.removesuffix(_TOTAL): (name, source, keep, True)
        for name, (source, keep) in REMOTE_WRITE_SERIES.items()
        if name.endswith(_TOTAL)
    },
    **{name: (name, source, keep, False) for name, (source, keep) in REMOTE_WRITE_SERIES.items()},
}
"""An exporter's series name as it may arrive over OTLP -> (its name as mapped, source, labels
kept, whether only a sum is it): its Prometheus name, or a counter's without ``_total``, as a
Collector's ``prometheus`` receiver sends it with ``trim_metric_suffixes`` (no unit suffix is
trimmed: the exporters state no unit). Where a trimmed name is another series' own, that one."""

_HOST_ID: Final = re.compile(r"^[^\x00-\x1f\x7f]{1,256}\Z")

try:
    from sysmetrics_native import OtlpDecoder, RemoteWriteDecoder
except ImportError:  # the optional compiled codec is not installed: the Python twins run
    _NATIVE = None
    _NATIVE_OTLP = None
else:
    _NATIVE = RemoteWriteDecoder(REMOTE_WRITE_SERIES)
    _NATIVE_OTLP = OtlpDecoder(
        OTEL_METRICS,
        OTEL_RESOURCE,
        OTEL_RESOURCE_ATTRIBUTES,
        OTEL_STARTED_METRIC,
        OTEL_STARTED,
        _SCRAPED,
        PROMETHEUS_RESOURCE_LABELS,
        _STALE,
    )


class PayloadError(ValueError):
    """The request can never succeed; ``reason`` is the one-line answer, ``kind`` its counter."""

    def __init__(self, kind: str, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.kind = kind
        self.status = status


REMOTE_WRITE_MESSAGES: Final = {"prometheus.WriteRequest": 1, "io.prometheus.write.v2.Request": 2}
"""The remote-write messages this receiver reads, by the name a Content-Type's ``proto=`` gives,
and their protocol version; without ``proto=`` a request is 1.0."""


def media_type(header: bytes) -> tuple[str, dict[str, str]]:
    """A Content-Type header as its media type (lower case) and its parameters."""
    kind, *pairs = header.decode("latin-1").split(";")
    params = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), params


def remote_write_version(params: dict[str, str]) -> int:
    """The remote-write version of a request, from its Content-Type's ``proto=``. A message this
    receiver does not know is refused (415, as the 2.0 specification asks): read as another
    message it could decode without error to nothing, and a 2xx would drop every sample while
    the sender counts them delivered."""
    message = params.get("proto", "prometheus.WriteRequest")
    version = REMOTE_WRITE_MESSAGES.get(message)
    if version is None:
        raise PayloadError(
            "unsupported_message",
            f"Content-Type proto={message}: this receiver reads "
            + " and ".join(REMOTE_WRITE_MESSAGES),
            415,
        )
    return version


@dataclass
class Decoded:
    samples: dict[SampleKey, Facts] = field(default_factory=lambda: defaultdict(dict))
    series: int = 0
    dropped: int = 0
    values: int = 0
    """Remote-write: every float sample of the request, kept or dropped by the mapping."""
    histograms: int = 0
    exemplars: int = 0
    """Remote-write 2.0: the native histograms and exemplars of the request, all dropped."""
    delta: int = 0
    """OTLP: points of mapped sums in delta temporality, dropped: the fields they would fill
    are cumulative counters (CPU time, bytes), which a delta is not."""


def _host(value: str | None, where: str) -> str:
    if not value:
        raise PayloadError("no_host", f"{where}: a mapped series has no host identity")
    if not _HOST_ID.match(value):
        raise PayloadError("bad_host", f"{where}: host id {value[:40]!r} is not a valid host_id")
    return value


_FRAMED_SNAPPY: Final = b"\xff\x06\x00\x00sNaPpY"
"""The stream identifier a framed snappy body starts with: the OTel Collector's
``compression: snappy`` sends the framed format (opentelemetry-collector#10584; its own
receiver peeks at these bytes too), remote-write the block format."""
_ZSTD_WINDOW_MAX: Final = 1 << 25
"""The largest zstd window a request may ask the decoder to hold (32 MiB): a body of 16 MiB
needs no more, and a hostile frame cannot make the receiver allocate its 2 GiB."""


def _too_large(size: int | None, limit: int) -> PayloadError:
    inflated = "over the" if size is None else f"{size} bytes, over the"
    return PayloadError("too_large", f"body inflates to {inflated} {limit} bytes allowed", 413)


def _framed_snappy_len(body: bytes) -> int:
    """The bytes a framed snappy body inflates to, from its chunk headers (each chunk holds
    at most 64 KiB), so that the limit is checked before anything is inflated."""
    total, at = 0, 0
    while at < len(body):
        if at + 4 > len(body):
            raise cramjam.DecompressionError("a chunk header is cut off")
        kind, length = body[at], int.from_bytes(body[at + 1 : at + 4], "little")
        chunk = body[at + 4 : at + 4 + length]
        if kind == 0x00:  # compressed: a CRC, then a snappy block
            total += cramjam.snappy.decompress_raw_len(chunk[4:])
        elif kind == 0x01:  # uncompressed: a CRC, then the bytes
            total += max(length - 4, 0)
        at += 4 + length
    return total


_LZ4_MAGIC: Final = b"\x04\x22\x4d\x18"
_LZ4_BLOCK_MAX: Final = {4: 1 << 16, 5: 1 << 18, 6: 1 << 20, 7: 1 << 22}
"""An LZ4 frame's block maximum size, by its descriptor's code."""


def _lz4_bound(body: bytes) -> int:
    """The most LZ4 frames inflate to, from their headers: a stored block its length, a
    compressed one its frame's block maximum (the Collector's frames state no content size)."""
    total, at = 0, 0
    while at < len(body):
        if body[at : at + 4] != _LZ4_MAGIC or at + 7 > len(body):
            raise cramjam.DecompressionError("not an LZ4 frame")
        flags, block_max = body[at + 4], _LZ4_BLOCK_MAX.get(body[at + 5] >> 4 & 7)
        if block_max is None:
            raise cramjam.DecompressionError("an LZ4 frame with no valid block size")
        at += 7 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0)
        while True:
            if at + 4 > len(body):
                raise cramjam.DecompressionError("an LZ4 frame is cut off")
            word = int.from_bytes(body[at : at + 4], "little")
            at += 4
            if word == 0:  # the end mark, then the content checksum if the frame has one
                at += 4 if flags & 0x04 else 0
                break
            length = word & 0x7FFFFFFF
            total += length if word & 0x80000000 else block_max
            at += length + (4 if flags & 0x10 else 0)
    return total


def _inflate_lz4(body: bytes, limit: int) -> bytes:
    if _lz4_bound(body) <= limit:
        return bytes(cramjam.lz4.decompress(body))
    # It may inflate past the limit: into a buffer one byte over it, which it cannot overrun.
    buffer = bytearray(limit + 1)
    try:
        size = cramjam.lz4.decompress_into(body, buffer)
    except cramjam.DecompressionError as exc:
        if "whole buffer" in str(exc):
            raise _too_large(None, limit) from None
        raise
    if size > limit:
        raise _too_large(None, limit)
    return bytes(buffer[:size])


def _inflate_zstd(body: bytes, limit: int) -> bytes:
    """Inflated in a bounded stream first (a frame need not say its size), then whole by
    cramjam, which refuses a frame cut short (the stream reader ends quietly there)."""
    import zstandard  # only a zstd request needs it

    decompressor = zstandard.ZstdDecompressor(max_window_size=_ZSTD_WINDOW_MAX)
    size = 0
    try:
        with decompressor.stream_reader(body, read_across_frames=True) as reader:
            while part := reader.read(min(limit + 1 - size, 1 << 20)):
                size += len(part)
                if size > limit:
                    raise _too_large(None, limit)
    except zstandard.ZstdError as exc:
        raise PayloadError("bad_encoding", f"body is not valid zstd: {exc}") from None
    return bytes(cramjam.zstd.decompress(body, output_len=size))


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded per its Content-Encoding, refusing to inflate past ``limit`` bytes:
    snappy (block, or framed as older OTel Collectors send it), gzip, deflate/zlib, zstd, lz4
    (frames): every ``compression`` of the Collector's ``otlphttp``."""
    try:
        framed = encoding == "x-snappy-framed"
        if framed or (encoding == "snappy" and body.startswith(_FRAMED_SNAPPY)):
            if (size := _framed_snappy_len(body)) > limit:
                raise _too_large(size, limit)
            return bytes(cramjam.snappy.decompress(body))
        if encoding == "snappy":
            if (size := cramjam.snappy.decompress_raw_len(body)) > limit:
                raise _too_large(size, limit)
            return bytes(cramjam.snappy.decompress_raw(body))
        if encoding in ("gzip", "deflate", "zlib"):
            # gzip's header, or zlib's: what HTTP calls deflate, as the Collector sends it
            inflater = zlib.decompressobj((16 if encoding == "gzip" else 0) + zlib.MAX_WBITS)
            data = inflater.decompress(body, limit + 1)
            if len(data) > limit:
                raise _too_large(None, limit)
            if not inflater.eof:
                raise zlib.error("the body ends before its stream does")
            return data
        if encoding == "zstd":
            return _inflate_zstd(body, limit)
        if encoding == "lz4":
            return _inflate_lz4(body, limit)
    except (cramjam.DecompressionError, zlib.error, gzip.BadGzipFile) as exc:
        raise PayloadError("bad_encoding", f"body is not valid {encoding}: {exc}") from None
    if encoding in ("", "identity"):
        return body
    raise PayloadError(
        "bad_encoding",
        f"Content-Encoding {encoding!r} is not supported: send gzip, zstd, snappy, deflate, lz4 "
        "or none",
        415,
    )


def decode_remote_write(data: bytes, host_label: str, max_series: int, version: int = 1) -> Decoded:
    """A decompressed remote-write request (``version`` 1: ``WriteRequest``, 2: a 2.0
    ``Request``) as facts: through the compiled decoder when it is installed (``native/``: the
    receiver's profile is half protobuf field reads), else :func:`decode_remote_write_python`,
    which also decides on what the compiled one does not read; both give the same answer
    (tests/unit run both, on mutants too)."""
    if _NATIVE is None:
        return decode_remote_write_python(data, host_label, max_series, version)
    try:
        samples, series, dropped, hosts, (values, histograms, exemplars) = _NATIVE.decode(
            data, host_label, max_series, version
        )
    except ValueError as exc:
        if exc.args[0] == "too_many_series":
            raise _too_many_series(exc.args[1], max_series) from None
        # Bytes the compiled decoder does not read (no request, or a wire shape no sender
        # uses, such as a group): the Python parser decides, so both answer the same.
        return decode_remote_write_python(data, host_label, max_series, version)
    _check_hosts(samples, hosts)
    return Decoded(samples, series, dropped, values, histograms, exemplars)


def _check_hosts(samples: dict[SampleKey, Facts], hosts: list[tuple[str, str]]) -> None:
    """Refuse a request with a mapped series whose host identity is missing or invalid
    (``hosts``: each distinct host with the first series it came with). A target's ``up`` is
    no reading: without a valid host (a host label set by ``metric_relabel_configs`` is not on
    it) it is dropped, and the request kept."""
    for host, name in hosts:
        if _HOST_ID.match(host):
            continue
        if name == "up" and all(k[0] != host or k[2] == TARGET for k in samples):
            for key in [k for k in samples if k[0] == host]:
                del samples[key]
            continue
        _host(host, f"series {name}")


def _too_many_series(count: int, max_series: int) -> PayloadError:
    return PayloadError(
        "too_many_series", f"{count} series in one request, over the {max_series} allowed", 413
    )


def _not_a_request(version: int) -> PayloadError:
    message = "WriteRequest" if version == 1 else "2.0 Request (or a label reference is invalid)"
    return PayloadError("bad_protobuf", f"body is not a remote-write {message}")


def _series_labels_v2(request: object, out: Decoded) -> list[tuple[dict[str, str], object]]:
    """Each series of a 2.0 request with its labels looked up in the request's symbols; all
    of them before any is used, as the compiled decoder does, so both refuse the same way.
    Counts the request's native histograms and exemplars into ``out``."""
    symbols = list(request.symbols)  # type: ignore[attr-defined]
    labelled = []
    for series in request.timeseries:  # type: ignore[attr-defined]
        out.histograms += len(series.histograms)
        out.exemplars += len(series.exemplars)
        refs = series.labels_refs
        if len(refs) % 2:
            raise _not_a_request(2)
        try:
            labels = {symbols[refs[i]]: symbols[refs[i + 1]] for i in range(0, len(refs), 2)}
        except IndexError:
            raise _not_a_request(2) from None
        labelled.append((labels, series.samples))
    return labelled


def _series_labels_v1(request: object) -> Iterator[tuple[dict[str, str], object]]:
    """Each series of a 1.0 request with its labels (the last of a repeated name wins)."""
    for series in request.timeseries:  # type: ignore[attr-defined]
        labels = {}
        for label in series.labels:
            labels[label.name] = label.value
        yield labels, series.samples


def decode_remote_write_python(
    data: bytes, host_label: str, max_series: int, version: int = 1
) -> Decoded:
    message = prompb.WriteRequest if version == 1 else prompb.WriteRequestV2
    try:
        request = message.FromString(data)
    except DecodeError:
        raise _not_a_request(version) from None
    out = Decoded(series=len(request.timeseries))
    each = _series_labels_v1(request) if version == 1 else _series_labels_v2(request, out)
    if len(request.timeseries) > max_series:
        raise _too_many_series(len(request.timeseries), max_series)
    samples = out.samples
    mapping = REMOTE_WRITE_SERIES.get
    hosts: dict[str, str] = {}
    # The hot loop of the receiver: each attribute read of a protobuf field costs, so labels
    # are read once into a dict and a host is validated once per request.
    for labels, series_samples in each:
        out.values += len(series_samples)  # type: ignore[arg-type]
        name = labels.get("__name__", "")
        mapped = mapping(name)
        if mapped is None:
            out.dropped += 1
            continue
        source, keep = mapped
        host = labels.get(host_label, "")
        if host not in hosts:
            hosts[host] = name
        values = tuple([labels.get(k, "") for k in keep])
        for sample in series_samples:  # type: ignore[attr-defined]
            samples[(host, sample.timestamp, source)][(name, values)] = sample.value
    _check_hosts(samples, list(hosts.items()))
    return out


def _otlp_request(data: bytes, content_type: str) -> object:
    from google.protobuf import json_format
    from google.protobuf.json_format import ParseError
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    request = ExportMetricsServiceRequest()
    try:
        if content_type == "application/json":
            json_format.Parse(data, request, ignore_unknown_fields=True)
        else:
            request.ParseFromString(data)
    except (DecodeError, ParseError, UnicodeDecodeError) as exc:
        json = content_type == "application/json"
        raise PayloadError(
            "bad_json" if json else "bad_protobuf",
            f"body is not an OTLP ExportMetricsServiceRequest{' in JSON' if json else ''}: {exc}",
        ) from None
    return request


def _attribute(value: object) -> str:
    kind = value.WhichOneof("value")  # type: ignore[attr-defined]
    return "" if kind is None else str(getattr(value, kind))


def decode_otlp(
    data: bytes,
    content_type: str,
    host_attributes: tuple[str, ...],
    host_label: str,
    max_series: int,
) -> Decoded:
    """An OTLP export's data points as facts: a protobuf body through the compiled decoder
    when it is installed and reads every field of the body (``native/src/otlp.rs``: the
    receiver's profile was ~60 % protobuf reads), else :func:`decode_otlp_python`; both give
    the same answer (tests/unit run both)."""
    answer = None
    if _NATIVE_OTLP is not None and content_type != "application/json":
        answer = _NATIVE_OTLP.decode(data, list(host_attributes), host_label)
    if answer is None:
        return decode_otlp_python(data, content_type, host_attributes, host_label, max_series)
    samples, series, dropped, resources, scraped_hosts = answer
    # The checks in the order the Python decoder makes them, so the same one refuses.
    for host, names, series_so_far, has_points in resources:
        if series_so_far > max_series:
            raise _too_many_points(max_series)
        if has_points:
            _host(host, f"resource with attributes {names}")
    _check_hosts(samples, scraped_hosts)
    return Decoded(samples, series, dropped)


def _too_many_points(max_series: int) -> PayloadError:
    return PayloadError("too_many_series", f"over {max_series} data points in one request", 413)


def decode_otlp_python(
    data: bytes,
    content_type: str,
    host_attributes: tuple[str, ...],
    host_label: str,
    max_series: int,
) -> Decoded:
    """An OTLP export's data points as facts. The points of one host within a second of each
    other are one sample (the hostmetrics scrapers of one collection differ by milliseconds);
    its time is the earliest of them. The start time of ``system.cpu.time``'s points is the
    fact :data:`~sysmetrics.ingest.mapping.OTEL_STARTED`. An exporter's series, which a
    Collector scraping node_exporter or windows_exporter (its ``prometheus`` receiver) sends
    under their Prometheus names, are read as if remote-written (:func:`_scraped_points`)."""
    from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_DELTA

    request = _otlp_request(data, content_type)
    out = Decoded()
    scraped_hosts: dict[str, str] = {}
    for resource_metrics in request.resource_metrics:  # type: ignore[attr-defined]
        resource = {a.key: _attribute(a.value) for a in resource_metrics.resource.attributes}
        host_value = next((resource[k] for k in host_attributes if resource.get(k)), None)
        points: list[tuple[int, FactKey, float]] = []
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                data_points = getattr(metric, kind).data_points if kind in ("sum", "gauge") else ()
                out.series += len(data_points) or 1
                if out.series > max_series:
                    raise _too_many_points(max_series)
                name = metric.name
                keep = OTEL_METRICS.get(name)
                scraped = None
                if keep is None:
                    name, scraped = _exporter_series(name, kind)
                if keep is None and scraped is None:
                    out.dropped += len(data_points) or 1
                    continue
                if (
                    kind == "sum"
                    and metric.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_DELTA
                ):
                    out.delta += len(data_points)
                    continue
                if keep is not None:
                    _otel_points(name, keep, data_points, points)
                elif scraped is not None:
                    _scraped_points(
                        name, scraped, data_points, resource, host_label, out, scraped_hosts
                    )
        if not points:
            continue
        host = _host(host_value, f"resource with attributes {sorted(resource)[:6]}")
        resource_key: FactKey = (
            OTEL_RESOURCE,
            tuple(resource.get(k, "") for k in OTEL_RESOURCE_ATTRIBUTES),
        )
        points.sort(key=lambda p: p[0])
        start = points[0][0]
        facts = out.samples[(host, start, "otel")]
        facts[resource_key] = 1.0
        for ts_ms, key, number in points:
            if ts_ms - start > 1000:
                start = ts_ms
                facts = out.samples[(host, start, "otel")]
                facts[resource_key] = 1.0
            facts[key] = number
    _check_hosts(out.samples, list(scraped_hosts.items()))
    return out


def _exporter_series(name: str, kind: str | None) -> tuple[str, tuple[str, tuple[str, ...]] | None]:
    """An exporter's series over OTLP (:data:`_SCRAPED`) as the mapping names it, and its
    mapping (None: not one)."""
    scraped = _SCRAPED.get(name)
    if scraped is None or (scraped[3] and kind != "sum"):
        return name, None
    return scraped[0], (scraped[1], scraped[2])


def _otel_points(
    name: str,
    keep: tuple[str, ...],
    data_points: object,
    points: list[tuple[int, FactKey, float]],
) -> None:
    """A metric's points as (time in Unix ms, fact, value) into ``points``."""
    # The hot loop: hostmetrics' attributes are strings, read without WhichOneof; a point's
    # value is as_double or as_int (an unset one reads 0).
    for point in data_points:  # type: ignore[attr-defined]
        if point.flags & 1:  # FLAG_NO_RECORDED_VALUE: OTLP's stale marker
            continue
        attributes = {}
        for attribute in point.attributes:
            value = attribute.value
            attributes[attribute.key] = value.string_value or _attribute(value)
        values = tuple([attributes.get(k, "") for k in keep])
        number = point.as_double or float(point.as_int)
        time_ms = point.time_unix_nano // 1_000_000
        points.append((time_ms, (name, values), number))
        if name == OTEL_STARTED_METRIC and point.start_time_unix_nano:
            points.append((time_ms, _STARTED, point.start_time_unix_nano / 1e9))


def _scraped_points(
    name: str,
    mapped: tuple[str, tuple[str, ...]],
    data_points: object,
    resource: dict[str, str],
    host_label: str,
    out: Decoded,
    hosts: dict[str, str],
) -> None:
    """An exporter's series as the Collector's ``prometheus`` receiver sends it, as facts
    keyed as remote-write's (the same source, host and labels): the receiver moves a scraped
    series' ``job`` and ``instance`` into resource attributes (:data:`PROMETHEUS_RESOURCE_LABELS`),
    the other labels stay on each point, and a stale marker becomes a point flagged
    ``NO_RECORDED_VALUE`` (turned back into the marker, so that ``up``'s retires a host).
    ``hosts`` collects each host with the first series it came with, to be checked as
    remote-write's are."""
    source, keep = mapped

    def label(attributes: dict[str, str], key: str) -> str:
        moved = PROMETHEUS_RESOURCE_LABELS.get(key)
        return resource.get(moved, "") if moved else attributes.get(key, "")

    for point in data_points:  # type: ignore[attr-defined]
        attributes = {a.key: _attribute(a.value) for a in point.attributes}
        host = label(attributes, host_label)
        hosts.setdefault(host, name)
        values = tuple([label(attributes, k) for k in keep])
        number = _STALE if point.flags & 1 else point.as_double or float(point.as_int)
        key = (host, point.time_unix_nano // 1_000_000, source)
        out.samples[key][(name, values)] = number
