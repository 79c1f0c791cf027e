"""Prometheus' remote-write 1.0 messages (``prompb/remote.proto``, ``types.proto``), built from
descriptors at import: only the fields remote-write 1.0 carries for float samples. Fields not
declared here (exemplars, native histograms, metadata) are skipped by the parser."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _build() -> tuple[Any, Any, Any, Any]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="sysmetrics/prompb.proto", package="prometheus", syntax="proto3"
    )
    label = proto.message_type.add(name="Label")
    label.field.add(name="name", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    label.field.add(name="value", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    sample = proto.message_type.add(name="Sample")
    sample.field.add(name="value", number=1, type=_F.TYPE_DOUBLE, label=_F.LABEL_OPTIONAL)
    sample.field.add(name="timestamp", number=2, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
    series = proto.message_type.add(name="TimeSeries")
    series.field.add(
        name="labels",
        number=1,
        type=_F.TYPE_MESSAGE,
        type_name=".prometheus.Label",
        label=_F.LABEL_REPEATED,
    )
    series.field.add(
        name="samples",
        number=2,
        type=_F.TYPE_MESSAGE,
        type_name=".prometheus.Sample",
        label=_F.LABEL_REPEATED,
    )
    request = proto.message_type.add(name="WriteRequest")
    request.field.add(
        name="timeseries",
        number=1,
        type=_F.TYPE_MESSAGE,
        type_name=".prometheus.TimeSeries",
        label=_F.LABEL_REPEATED,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
        for name in ("WriteRequest", "TimeSeries", "Label", "Sample")
    )


WriteRequest, TimeSeries, Label, Sample = _build()
