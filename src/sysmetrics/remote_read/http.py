"""``POST /api/v1/read`` as Prometheus speaks it: a snappy-compressed (block format) protobuf
``ReadRequest`` in, a snappy-compressed ``ReadResponse`` out. A request that can never succeed
gets a 4xx with a one-line reason; the server keeps serving."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import cramjam
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from sysmetrics.config import Settings
from sysmetrics.lake.store import LakeStore
from sysmetrics.remote_read.query import Limits, RemoteReadError, read
from sysmetrics.warehouse import NoWarehouseYet
from sysmetrics.warehouse.base import Warehouse

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 1024 * 1024
"""A ReadRequest is matchers and a range: a few hundred bytes; more is not Prometheus."""


def limits_of(settings: Settings) -> Limits:
    return Limits(
        max_samples=settings.remote_read_max_samples,
        max_series=settings.remote_read_max_series,
        timeout_s=settings.remote_read_timeout_s,
        sample_interval_s=settings.sample_interval_s,
    )


def decode(body: bytes) -> bytes:
    if len(body) > MAX_REQUEST_BYTES:
        raise RemoteReadError(f"request body over {MAX_REQUEST_BYTES} bytes", 413)
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:
        raise RemoteReadError(f"body is not snappy-compressed (block format): {exc}") from exc


async def respond(
    request: Request,
    settings: Settings,
    query_warehouse: Callable[[Callable[[Warehouse], Any]], Awaitable[Any]],
) -> Response:
    try:
        body = decode(await request.body())
        store = LakeStore.from_settings(settings)
        limits = limits_of(settings)
        answer = await query_warehouse(lambda wh: read(wh, store, settings.topic, body, limits))
    except RemoteReadError as exc:
        log.info("remote read refused (%d): %s", exc.status, exc)
        return PlainTextResponse(f"remote read: {exc}\n", status_code=exc.status)
    except NoWarehouseYet as exc:
        return PlainTextResponse(f"remote read: {exc}\n", status_code=503)
    return Response(
        bytes(cramjam.snappy.compress_raw(answer)),
        headers={"Content-Encoding": "snappy"},
        media_type="application/x-protobuf",
    )
