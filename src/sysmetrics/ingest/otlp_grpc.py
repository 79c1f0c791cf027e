"""OTLP over gRPC: ``MetricsService/Export``, what the OTel Collector's ``otlp`` exporter (its
usual one) and the SDKs' gRPC exporters send, on a port of its own (``ingest_grpc_port``, 4317
by convention) in the HTTP receiver's event loop. A request is kept as ``POST /v1/metrics``
keeps one: answered OK only once its facts are durable; UNAVAILABLE, which senders retry, when
the journal cannot be written; INVALID_ARGUMENT, which they drop, for a payload that can never
succeed; UNAUTHENTICATED without the token.

grpcio inflates gzip and deflate bodies itself (the Collector's ``otlp`` exporter sends gzip by
default) and refuses others (zstd, snappy) with INTERNAL ("Error parsing 'grpc-encoding'
metadata", measured with the real Collector, which drops that data); it also refuses, with
RESOURCE_EXHAUSTED, a message over ``ingest_max_request_bytes`` once inflated. Neither reaches
this code, so neither is in the receiver's counters.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from functools import partial
from typing import TYPE_CHECKING

import grpc

from sysmetrics.ingest.server import OTLP_GRPC_METHOD, sender_of
from sysmetrics.ingest.status import grpc_address
from sysmetrics.ingest.wire import PayloadError, decode_otlp

if TYPE_CHECKING:
    from sysmetrics.ingest.server import IngestApp

log = logging.getLogger(__name__)

_SERVICE, _, _METHOD = OTLP_GRPC_METHOD.strip("/").rpartition("/")
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    503: grpc.StatusCode.UNAVAILABLE,
}
"""The gRPC code for each HTTP status the receiver answers, as the OTLP specification maps
them: a sender retries UNAVAILABLE and drops the others."""


async def start(app: IngestApp) -> grpc.aio.Server:
    """Listen for OTLP/gRPC beside ``app``; RuntimeError when the address cannot be bound."""
    settings = app.settings
    address = grpc_address(settings)
    assert address is not None
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", settings.ingest_max_request_bytes)]
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                _SERVICE, {_METHOD: grpc.unary_unary_rpc_method_handler(partial(_export, app))}
            ),
        )
    )
    try:
        if settings.ingest_tls_cert is not None and settings.ingest_tls_key is not None:
            credentials = grpc.ssl_server_credentials(
                [(settings.ingest_tls_key.read_bytes(), settings.ingest_tls_cert.read_bytes())]
            )
            server.add_secure_port(address, credentials)
        else:
            server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(
            f"cannot listen for OTLP/gRPC on {address} ({exc}): is the port taken? "
            "Set SYSMETRICS_INGEST_GRPC_PORT to a free one, or unset it"
        ) from exc
    await server.start()
    log.info("ingest: OTLP over gRPC on %s", address)
    return server


async def _export(app: IngestApp, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    headers = {
        key.encode(): value.encode("latin-1")
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)  # a binary (-bin) entry names no sender and no token
    }
    status, reason = await _take(app, request, headers, peer_address(context.peer()))
    app.requests[(OTLP_GRPC_METHOD, status)] += 1
    app.last_request_at = time.time()
    if status != 200:
        await context.abort(_CODES[status], reason)
    return b""  # an empty ExportMetricsServiceResponse


async def _take(
    app: IngestApp, request: bytes, headers: dict[bytes, bytes], address: str | None
) -> tuple[int, str]:
    if not app.authorized(headers):
        return 401, "authentication required"
    try:
        sender, named = sender_of(headers, address)
        decoded = decode_otlp(
            request,
            "application/x-protobuf",
            app.host_attributes,
            app.settings.ingest_host_label,
            app.settings.ingest_max_series,
        )
    except PayloadError as exc:
        app.rejected[exc.kind] += 1
        log.info("ingest %s: refused (%s)", OTLP_GRPC_METHOD, exc)
        return 400, str(exc)
    if not await app.keep(decoded, sender, named):
        return 503, "journal not writable; retry"
    return 200, ""


def peer_address(peer: str) -> str | None:
    """The address in a gRPC peer (``ipv4:10.0.0.5:41234``, ``ipv6:%5B::1%5D:41234``); None
    for another transport (a Unix socket)."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    return rest.rpartition(":")[0].strip("[]")
