"""Ingest: other agents' streams in (Prometheus remote-write, OTLP over HTTP or gRPC), schema-v1
events out.

``wire`` decodes payloads into series, ``mapping`` says once which series fill which field,
``assembly`` gathers a host's series of one sample time durably into one event, ``server`` is
the HTTP receiver that answers a sender only once what it sent is durable, ``otlp_grpc`` the
same for OTLP over gRPC, beside it.
"""
