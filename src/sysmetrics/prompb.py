"""Prometheus' remote-write 1.0 and 2.0 and remote-read messages (``prompb/remote.proto``,
``types.proto``, ``io/prometheus/write/v2/types.proto``), built from descriptors at import:
only the fields float samples need (2.0's native histograms and exemplars as bytes, to be
counted). Fields not declared here (1.0's exemplars and histograms, metadata, chunks) are
skipped by the parser. Enums are declared as int32: the same varint on
the wire."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

MATCH_EQUAL, MATCH_NOT_EQUAL, MATCH_REGEX, MATCH_NOT_REGEX = 0, 1, 2, 3
"""``LabelMatcher.type``: =, !=, =~, !~."""
RESPONSE_SAMPLES, RESPONSE_STREAMED_XOR_CHUNKS = 0, 1
"""``ReadRequest.accepted_response_types``; none listed means samples."""


def _add(message: Any, name: str, number: int, kind: int, type_name: str, label: int) -> None:
    added = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        added.type_name = type_name


def _field(message: Any, name: str, number: int, kind: int, type_name: str = "") -> None:
    _add(message, name, number, kind, type_name, _F.LABEL_OPTIONAL)


def _repeated(message: Any, name: str, number: int, kind: int, type_name: str = "") -> None:
    _add(message, name, number, kind, type_name, _F.LABEL_REPEATED)


def _build() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="sysmetrics/prompb.proto", package="prometheus", syntax="proto3"
    )
    msg = proto.message_type.add
    label = msg(name="Label")
    _field(label, "name", 1, _F.TYPE_STRING)
    _field(label, "value", 2, _F.TYPE_STRING)
    sample = msg(name="Sample")
    _field(sample, "value", 1, _F.TYPE_DOUBLE)
    _field(sample, "timestamp", 2, _F.TYPE_INT64)
    series = msg(name="TimeSeries")
    _repeated(series, "labels", 1, _F.TYPE_MESSAGE, ".prometheus.Label")
    _repeated(series, "samples", 2, _F.TYPE_MESSAGE, ".prometheus.Sample")
    write = msg(name="WriteRequest")
    _repeated(write, "timeseries", 1, _F.TYPE_MESSAGE, ".prometheus.TimeSeries")

    matcher = msg(name="LabelMatcher")
    _field(matcher, "type", 1, _F.TYPE_INT32)
    _field(matcher, "name", 2, _F.TYPE_STRING)
    _field(matcher, "value", 3, _F.TYPE_STRING)
    hints = msg(name="ReadHints")
    _field(hints, "step_ms", 1, _F.TYPE_INT64)
    _field(hints, "func", 2, _F.TYPE_STRING)
    _field(hints, "start_ms", 3, _F.TYPE_INT64)
    _field(hints, "end_ms", 4, _F.TYPE_INT64)
    _field(hints, "range_ms", 7, _F.TYPE_INT64)
    query = msg(name="Query")
    _field(query, "start_timestamp_ms", 1, _F.TYPE_INT64)
    _field(query, "end_timestamp_ms", 2, _F.TYPE_INT64)
    _repeated(query, "matchers", 3, _F.TYPE_MESSAGE, ".prometheus.LabelMatcher")
    _field(query, "hints", 4, _F.TYPE_MESSAGE, ".prometheus.ReadHints")
    read = msg(name="ReadRequest")
    _repeated(read, "queries", 1, _F.TYPE_MESSAGE, ".prometheus.Query")
    _repeated(read, "accepted_response_types", 2, _F.TYPE_INT32)
    result = msg(name="QueryResult")
    _repeated(result, "timeseries", 1, _F.TYPE_MESSAGE, ".prometheus.TimeSeries")
    response = msg(name="ReadResponse")
    _repeated(response, "results", 1, _F.TYPE_MESSAGE, ".prometheus.QueryResult")

    return _classes(proto)


def _build_v2() -> dict[str, Any]:
    """Remote-write 2.0: label names and values are references into the request's symbols."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="sysmetrics/prompb_v2.proto", package="io.prometheus.write.v2", syntax="proto3"
    )
    msg = proto.message_type.add
    sample = msg(name="Sample")
    _field(sample, "value", 1, _F.TYPE_DOUBLE)
    _field(sample, "timestamp", 2, _F.TYPE_INT64)
    series = msg(name="TimeSeries")
    _repeated(series, "labels_refs", 1, _F.TYPE_UINT32)
    _repeated(series, "samples", 2, _F.TYPE_MESSAGE, ".io.prometheus.write.v2.Sample")
    # Native histograms and exemplars are only counted (the receiver's answer names them):
    # bytes, the same length-delimited field on the wire, are not parsed further.
    _repeated(series, "histograms", 3, _F.TYPE_BYTES)
    _repeated(series, "exemplars", 4, _F.TYPE_BYTES)
    request = msg(name="Request")
    _repeated(request, "symbols", 4, _F.TYPE_STRING)
    _repeated(request, "timeseries", 5, _F.TYPE_MESSAGE, ".io.prometheus.write.v2.TimeSeries")
    return _classes(proto)


def _classes(proto: Any) -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        m.name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{proto.package}.{m.name}")
        )
        for m in proto.message_type
    }


_MESSAGES = _build()
_MESSAGES_V2 = _build_v2()
WriteRequest = _MESSAGES["WriteRequest"]
TimeSeries = _MESSAGES["TimeSeries"]
Label = _MESSAGES["Label"]
Sample = _MESSAGES["Sample"]
LabelMatcher = _MESSAGES["LabelMatcher"]
Query = _MESSAGES["Query"]
ReadRequest = _MESSAGES["ReadRequest"]
ReadResponse = _MESSAGES["ReadResponse"]
WriteRequestV2 = _MESSAGES_V2["Request"]
"""``io.prometheus.write.v2.Request``."""
