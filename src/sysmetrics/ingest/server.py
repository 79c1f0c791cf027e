"""The HTTP receiver: ``POST /api/v1/write`` (Prometheus remote-write 1.0 and 2.0),
``POST /v1/metrics`` (OTLP/HTTP, protobuf or JSON), ``GET /metrics`` (its own counters),
``GET /-/healthy``; OTLP over gRPC beside it when configured (:mod:`.otlp_grpc`).

One event loop owns the assembler and the producer, so nothing is shared between threads (the
journal's fsync runs in a worker thread on a descriptor of its own). A request is answered 2xx
only after its facts are fsynced in the journal; a failure to write it is a 503 (the sender
retries from its WAL or queue); a payload that can never succeed is a 4xx with a one-line
reason, counted, and nothing of it is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmetrics.config import Settings
from sysmetrics.http_auth import basic_user, carries_token, is_loopback
from sysmetrics.ingest.assembly import Assembler
from sysmetrics.ingest.mapping import TARGET
from sysmetrics.ingest.status import (
    STATUS_EVERY_S,
    IngestStatus,
    grpc_address,
    receiver_url,
    remove_dead_receivers,
    status_path,
)
from sysmetrics.ingest.wire import (
    Decoded,
    PayloadError,
    decode_otlp,
    decode_remote_write,
    decompress,
    media_type,
    remote_write_version,
)
from sysmetrics.logs import RepeatedFailure
from sysmetrics.observability import CONTENT_TYPE, MetricsEndpoint, Reading
from sysmetrics.schema import SENDER_PATTERN, encode
from sysmetrics.status_files import this_process_start, write_status
from sysmetrics.stream.producer import SpooledProducer, retirement

if TYPE_CHECKING:
    import grpc
    import uvicorn

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]

_SENDER = re.compile(SENDER_PATTERN)
_WRITE_PATHS = ("/api/v1/write", "/v1/metrics")
OTLP_GRPC_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
"""The gRPC method of OTLP metrics, served on ``ingest_grpc_port``; its requests are counted
under this endpoint with the HTTP status its answer stands for."""

MAX_SENDERS_SHOWN = 1000
"""Named senders on /metrics at most (the longest silent leave first): a name is whatever an
authenticated sender puts in a header."""

UNMAPPED_TOLD_AFTER = 3
"""Requests in a row of one sender that carried series and none the mapping reads, before the
log says so: one is no sign (Prometheus spreads a scrape over shards, and one request may
carry only the series of other exporters)."""

TICK_S = 0.25
"""How often due samples are emitted and the Kafka client is served."""


class IngestRefused(RuntimeError):
    """The receiver cannot start as configured, or had to stop; the message says why."""


def check_exposure(settings: Settings) -> None:
    if not is_loopback(settings.ingest_host) and settings.ingest_token is None:
        raise IngestRefused(
            f"refusing to listen on {settings.ingest_host} without authentication: set "
            "SYSMETRICS_INGEST_TOKEN (or SYSMETRICS_INGEST_TOKEN_FILE), or bind to 127.0.0.1"
        )
    if (settings.ingest_tls_cert is None) != (settings.ingest_tls_key is None):
        raise IngestRefused("set both SYSMETRICS_INGEST_TLS_CERT and SYSMETRICS_INGEST_TLS_KEY")


class IngestApp:
    """The ASGI application; :meth:`tick` runs beside it in the same loop."""

    def __init__(
        self,
        settings: Settings,
        producer: SpooledProducer,
        assembler: Assembler,
        status_file: Path | None = None,
    ):
        self.settings = settings
        self.producer = producer
        self.assembler = assembler
        self.status_file = status_file
        """Where `sysmetrics status` reads this receiver (None: nowhere)."""
        self.started_at = time.time()
        self.last_request_at: float | None = None
        """When a write request was last answered (Unix time)."""
        self._status_failure = RepeatedFailure(log, logging.WARNING, "write the status file")
        self.requests: Counter[tuple[str, int]] = Counter()
        self.rejected: Counter[str] = Counter()
        self.remote_write_versions: Counter[int] = Counter()
        self.samples = 0
        self.dropped_series = 0
        self.dropped_histograms = 0
        self.dropped_exemplars = 0
        self.dropped_delta = 0
        self._told_delta: set[str | None] = set()
        """Senders told (in the log) that their delta sums are dropped."""
        self._unmapped_in_a_row: dict[str | None, int] = {}
        """Senders whose latest requests carried nothing mapped -> how many in a row."""
        self._told_unmapped: set[str | None] = set()
        """Senders told (in the log) that nothing they send is read."""
        self.senders: dict[str, float] = {}
        """Named senders -> when each last delivered a request (Unix time)."""
        self.host_attributes = tuple(
            a.strip() for a in settings.ingest_otel_host_attributes.split(",") if a.strip()
        )
        self._token = (
            settings.ingest_token.get_secret_value().encode()
            if settings.ingest_token is not None
            else None
        )
        self._grpc: grpc.aio.Server | None = None
        self.failure: str | None = None
        """Why the receiver could not start serving, or stopped (set by the ASGI lifespan)."""
        self.server: uvicorn.Server | None = None
        """The server this app runs in, stopped when emitting fails."""
        self.metrics = MetricsEndpoint()
        self.metrics.add(self.readings)
        self.metrics.add(producer.readings)

    # ------------------------------------------------------------------ numbers
    def readings(self) -> list[Reading]:
        stats = self.assembler.stats
        out = [
            Reading("sysmetrics_ingest_samples_total", "counter", "samples received", self.samples),
            Reading(
                "sysmetrics_ingest_dropped_series_total",
                "counter",
                "series (OTLP: data points) not mapped to a field, dropped on arrival",
                self.dropped_series,
            ),
            Reading(
                "sysmetrics_ingest_dropped_histograms_total",
                "counter",
                "native histograms (remote-write 2.0) dropped on arrival: no field holds them",
                self.dropped_histograms,
            ),
            Reading(
                "sysmetrics_ingest_dropped_exemplars_total",
                "counter",
                "exemplars (remote-write 2.0) dropped on arrival: no field holds them",
                self.dropped_exemplars,
            ),
            Reading(
                "sysmetrics_ingest_dropped_delta_points_total",
                "counter",
                "OTLP points of mapped sums in delta temporality, dropped on arrival: the "
                "fields are cumulative counters (export cumulative)",
                self.dropped_delta,
            ),
            Reading(
                "sysmetrics_ingest_replica_series_total",
                "counter",
                "series of a host that another named sender delivers (an HA pair's other "
                "replica), dropped on arrival",
                stats.replica_facts,
            ),
            Reading(
                "sysmetrics_ingest_late_series_total",
                "counter",
                "series of a sample whose event was already emitted (late shard or resend)",
                stats.late_facts,
            ),
            Reading("sysmetrics_ingest_events_total", "counter", "events emitted", stats.emitted),
            Reading(
                "sysmetrics_ingest_hosts_retired_total",
                "counter",
                "hosts retired: Prometheus dropped their last target (up's stale marker)",
                stats.retired,
            ),
            Reading(
                "sysmetrics_ingest_retirements_withdrawn_total",
                "counter",
                "retirements not emitted: a new target or a later sample of the host came "
                "after its last target's stale marker (an address change)",
                stats.retirements_withdrawn,
            ),
            Reading(
                "sysmetrics_ingest_incomplete_events_total",
                "counter",
                "events emitted after the assembly wait with fewer series than the host's last",
                stats.emitted_incomplete,
            ),
            Reading(
                "sysmetrics_ingest_journal_syncs_total",
                "counter",
                "fsyncs of the journal (requests that arrive together share one)",
                stats.journal_syncs,
            ),
            Reading(
                "sysmetrics_ingest_pending_samples",
                "gauge",
                "samples being assembled (in the journal, not yet emitted)",
                len(self.assembler.pending),
            ),
        ]
        for (endpoint, status), count in sorted(self.requests.items()):
            out.append(
                Reading(
                    "sysmetrics_ingest_requests_total",
                    "counter",
                    "requests by endpoint and HTTP status (gRPC: the status its code stands for)",
                    count,
                    {"endpoint": endpoint, "code": str(status)},
                )
            )
        for version, count in sorted(self.remote_write_versions.items()):
            out.append(
                Reading(
                    "sysmetrics_ingest_remote_write_requests_total",
                    "counter",
                    "remote-write requests taken, by protocol version (1.0, 2.0)",
                    count,
                    {"version": str(version)},
                )
            )
        leading = Counter(sender for sender, _ in self.assembler.leaders.values())
        for sender, at in sorted(self.senders.items()):
            out.append(
                Reading(
                    "sysmetrics_ingest_sender_last_request_timestamp_seconds",
                    "gauge",
                    "when each named sender last delivered a request (Unix time): page on "
                    "time() minus it, once per sender, and inhibit its hosts' HostDown",
                    at,
                    {"sender": sender},
                )
            )
            out.append(
                Reading(
                    "sysmetrics_ingest_sender_hosts",
                    "gauge",
                    "hosts each named sender delivers (of a replica pair, the one taken)",
                    leading[sender],
                    {"sender": sender},
                )
            )
        for reason, count in sorted(self.rejected.items()):
            out.append(
                Reading(
                    "sysmetrics_ingest_rejected_total",
                    "counter",
                    "payloads refused with a 4xx, by reason",
                    count,
                    {"reason": reason},
                )
            )
        return out

    # ------------------------------------------------------------------ emit
    def tick(self) -> None:
        keys = self.assembler.due()
        if keys:
            messages = []
            for key in keys:
                if key[2] == TARGET:
                    messages.append((key[0].encode(), retirement(key[1])))
                    continue
                event = self.assembler.build(key)
                messages.append((event.host.host_id.encode(), encode(event)))
            self.producer.publish_many(messages)
        self.assembler.emitted(keys)  # with none, it still writes what a full disk refused
        self.producer.poll(0)

    async def run_ticks(self, stop: asyncio.Event) -> None:
        status_due = 0.0
        while not stop.is_set():
            try:
                self.tick()
            except OSError as exc:
                log.error("ingest: cannot write the spool or journal (%s); retrying", exc)
            if time.monotonic() >= status_due:
                self.publish_status()
                status_due = time.monotonic() + STATUS_EVERY_S
            await asyncio.sleep(TICK_S)

    def publish_status(self) -> None:
        """Rewrite the status file (a full disk is logged once: the receiver goes on)."""
        if self.status_file is None:
            return
        answers: Counter[int] = Counter()
        for (path, code), count in self.requests.items():
            if path in _WRITE_PATHS or path == OTLP_GRPC_METHOD:
                answers[code // 100] += count
        status = IngestStatus(
            pid=os.getpid(),
            process_start=this_process_start(),
            url=receiver_url(self.settings),
            grpc=grpc_address(self.settings),
            topic=self.producer.topic,
            started_at=self.started_at,
            updated_at=time.time(),
            accepted=answers[2],
            refused=answers[4],
            failed=answers[5],
            events=self.assembler.stats.emitted,
            hosts_retired=self.assembler.stats.retired,
            pending_samples=len(self.assembler.pending),
            spool_depth=self.producer.spool.pending,
            last_request_at=self.last_request_at,
        )
        try:
            write_status(self.status_file, status)
        except OSError as exc:
            self._status_failure.failed(exc, "`sysmetrics status` shows its age meanwhile")
        else:
            self._status_failure.succeeded()

    # ------------------------------------------------------------------ HTTP
    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        if self._token is None:
            return True
        return carries_token(headers.get(b"authorization", b""), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        headers = dict(scope["headers"])
        if path == "/-/healthy":
            await _respond(send, 200, b"ok\n")
            return
        if not self.authorized(headers):
            self.requests[(path, 401)] += 1
            await _respond(
                send, 401, b"authentication required\n", [(b"www-authenticate", b"Bearer")]
            )
            return
        if path == "/metrics" and method == "GET":
            await _respond(
                send, 200, self.metrics.render(), [(b"content-type", CONTENT_TYPE.encode())]
            )
            return
        if path not in _WRITE_PATHS:
            await _respond(send, 404, b"not found: POST /api/v1/write or /v1/metrics\n")
            return
        if method != "POST":
            await _respond(send, 405, b"use POST\n")
            return
        client = scope.get("client")
        status, body, answer_headers = await self._ingest(
            path, headers, receive, client[0] if client else None
        )
        self.requests[(path, status)] += 1
        self.last_request_at = time.time()
        await _respond(send, status, body, answer_headers)

    async def _ingest(
        self, path: str, headers: dict[bytes, bytes], receive: Receive, address: str | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        limit = self.settings.ingest_max_request_bytes
        content_type, params = media_type(headers.get(b"content-type", b""))
        version = 1
        try:
            raw = await _read_body(receive, limit)
            sender, named = sender_of(headers, address)
            if path == "/api/v1/write":
                if content_type != "application/x-protobuf":
                    raise PayloadError(
                        "bad_content_type",
                        f"Content-Type {content_type!r}: remote-write sends application/x-protobuf",
                        415,
                    )
                version = remote_write_version(params)
                encoding = headers.get(b"content-encoding", b"snappy").decode("latin-1")
                data = decompress(raw, encoding.lower(), limit)
                decoded = decode_remote_write(
                    data,
                    self.settings.ingest_host_label,
                    self.settings.ingest_max_series,
                    version,
                )
            else:
                if content_type not in ("application/x-protobuf", "application/json"):
                    raise PayloadError(
                        "bad_content_type",
                        f"Content-Type {content_type!r}: OTLP/HTTP sends application/x-protobuf "
                        "or application/json",
                        415,
                    )
                encoding = headers.get(b"content-encoding", b"identity").decode("latin-1")
                data = decompress(raw, encoding.lower(), limit)
                decoded = decode_otlp(
                    data,
                    content_type,
                    self.host_attributes,
                    self.settings.ingest_host_label,
                    self.settings.ingest_max_series,
                )
        except PayloadError as exc:
            self.rejected[exc.kind] += 1
            log.info("ingest %s: refused (%s)", path, exc)
            return exc.status, f"{exc}\n".encode(), _TEXT
        if not await self.keep(decoded, sender, named):
            return 503, b"journal not writable; retry\n", _TEXT
        if path == "/v1/metrics":
            # An empty ExportMetricsServiceResponse, in the request's encoding.
            body = b"{}" if content_type == "application/json" else b""
            return 200, body, [(b"content-type", content_type.encode())]
        self.remote_write_versions[version] += 1
        if version == 1:
            return 204, b"", _TEXT
        # 2.0 senders read these; Prometheus takes a 2xx with none of them (or all zero) for a
        # 1.0 receiver that misread the request, and fewer than it sent for a partial failure
        # it logs as an error. Everything is written in its sense: the mapped float samples
        # are in the journal, the rest (other series, native histograms, exemplars) dropped by
        # design, as under 1.0.
        return (
            204,
            b"",
            [
                *_TEXT,
                (b"x-prometheus-remote-write-samples-written", str(decoded.values).encode()),
                (b"x-prometheus-remote-write-histograms-written", str(decoded.histograms).encode()),
                (b"x-prometheus-remote-write-exemplars-written", str(decoded.exemplars).encode()),
            ],
        )

    async def keep(self, decoded: Decoded, sender: str | None, named: bool) -> bool:
        """Journal a request's facts and wait until they are durable: True once they are,
        False (logged) when the journal cannot be written: the sender is to retry."""
        if named and sender is not None:
            self.senders.pop(sender, None)  # re-inserted last: the dict is oldest first
            self.senders[sender] = time.time()
            if len(self.senders) > MAX_SENDERS_SHOWN:
                del self.senders[next(iter(self.senders))]
        try:
            await self.assembler.durable(self._accept(decoded, sender, named))
        except OSError as exc:
            log.error("ingest: journal not writable (%s): answering so that senders retry", exc)
            return False
        return True

    def _accept(self, decoded: Decoded, sender: str | None, named: bool) -> int:
        """Journal a request's facts; the number to wait on until they are durable."""
        append = self.assembler.receive(decoded.samples, sender, named)
        self.samples += sum(len(f) for f in decoded.samples.values())
        self.dropped_series += decoded.dropped
        self.dropped_histograms += decoded.histograms
        self.dropped_exemplars += decoded.exemplars
        if decoded.delta:
            self.dropped_delta += decoded.delta
            if sender not in self._told_delta and len(self._told_delta) < MAX_SENDERS_SHOWN:
                self._told_delta.add(sender)
                log.warning(
                    "ingest: %s sends CPU, memory, disk or network sums in delta temporality: "
                    "their points are dropped (the events' fields are cumulative counters). "
                    "Export cumulative: drop the cumulativetodelta processor, or set "
                    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative in an SDK",
                    sender or "a sender",
                )
        self._note_unmapped(decoded, sender)
        return append

    def _note_unmapped(self, decoded: Decoded, sender: str | None) -> None:
        """Say once in the log when a sender's requests carry series and none the mapping reads
        (:data:`UNMAPPED_TOLD_AFTER` in a row; a target's ``up`` is no reading): 2xx and dropped
        by design, it would otherwise look delivered while no event is made of it."""
        if sender in self._told_unmapped:
            return
        read = any(source != TARGET for _, _, source in decoded.samples)
        in_a_row = self._unmapped_in_a_row
        if read or decoded.delta or not decoded.dropped:
            in_a_row.pop(sender, None)
            return
        if sender not in in_a_row and len(in_a_row) >= MAX_SENDERS_SHOWN:
            return
        in_a_row[sender] = in_a_row.get(sender, 0) + 1
        if in_a_row[sender] < UNMAPPED_TOLD_AFTER or len(self._told_unmapped) >= MAX_SENDERS_SHOWN:
            return
        del in_a_row[sender]
        self._told_unmapped.add(sender)
        log.warning(
            "ingest: %s sent %d requests in a row with series and none that sysmetrics reads "
            "(all dropped, counted in sysmetrics_ingest_dropped_series_total). It reads "
            "node_exporter's and windows_exporter's series (remote-written, or scraped by a "
            "Collector's prometheus receiver) and the Collector hostmetrics' (README: what each "
            "agent fills); send those. An application's metrics, Telegraf's own inputs or an "
            "exporter of something else are no host metrics it maps",
            sender or "a sender",
            UNMAPPED_TOLD_AFTER,
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.settings.ingest_grpc_port is not None:
                    from sysmetrics.ingest import otlp_grpc

                    try:
                        self._grpc = await otlp_grpc.start(self)
                    except (RuntimeError, OSError) as exc:  # a port taken, a key unreadable
                        self.failure = str(exc)
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                self._stop = asyncio.Event()
                self._ticker = asyncio.create_task(self.run_ticks(self._stop))
                self._ticker.add_done_callback(self._emission_ended)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._grpc is not None:
                    await self._grpc.stop(grace=5)
                self._stop.set()
                await asyncio.wait([self._ticker])  # a failure was said when it ended
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _emission_ended(self, ticker: asyncio.Task[None]) -> None:
        """Emitting stopped by an error no retry mends: stop serving too, rather than go on
        answering requests whose events would never be sent (the journal keeps them for the
        next start; a supervisor restarts the receiver, and the error is in its log)."""
        error = None if ticker.cancelled() else ticker.exception()
        if error is None:
            return
        self.failure = f"emitting events failed ({error!r}); see the log above"
        log.critical("ingest: emitting events failed: stopping the receiver", exc_info=error)
        if self.server is not None:
            self.server.should_exit = True


def sender_of(headers: dict[bytes, bytes], address: str | None) -> tuple[str | None, bool]:
    """Who delivers a request: its ``X-Sysmetrics-Sender`` header (an exporter's ``headers``;
    Debian's Prometheus 2.42 does not send remote_write ``headers``, its issue #13030), else the
    user name it authenticates with (remote_write's ``basic_auth``), else the address it comes
    from; and whether it named itself (the first two: two of them sending one host are an HA
    pair's replicas; addresses are not, a proxy's several instances deliver one sender). Raises
    PayloadError for a header that names no sender (spaces, control bytes)."""
    named = headers.get(b"x-sysmetrics-sender")
    if named is not None:
        if _SENDER.match(name := named.decode("latin-1")) is None:
            raise PayloadError(
                "bad_sender",
                "X-Sysmetrics-Sender: 1-128 printable ASCII characters without spaces",
                400,
            )
        return name, True
    # A user name chosen before it named senders is not refused: it does not name one then.
    user = basic_user(headers.get(b"authorization", b""))
    if user is not None and _SENDER.match(name := user.decode("latin-1")) is not None:
        return name, True
    return address, False


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body"):
            break
        if size > 4 * limit:
            break  # not worth reading on: the connection closes after the answer
    if size > limit:
        # Read (and dropped) to its end first: a sender writes its whole body before it
        # reads an answer, and would stall on a full socket otherwise.
        raise PayloadError("too_large", f"request body over the {limit} bytes allowed", 413)
    return b"".join(chunks)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    all_headers = [(b"content-length", str(len(body)).encode()), *(headers or [])]
    if not any(name == b"content-type" for name, _ in all_headers):
        all_headers.append((b"content-type", b"text/plain; charset=utf-8"))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


def _collect_garbage_less_often() -> None:
    """Each request makes a small tuple per fact, thousands, and samples wait in memory while
    their series gather: with Python's default thresholds the cyclic collector ran every 700
    allocations and, as the heap grew, walked all of it again, the startup heap too, although
    none of it forms cycles. With the startup heap frozen, larger thresholds and no proxy
    headers: +12 % OTLP points per CPU-second (median of 8 rounds each, whole process; the
    lake writer, whose heap does not grow, gained nothing from the same settings)."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def serve(settings: Settings) -> tuple[int, int, int]:
    """Run the receiver until SIGINT/SIGTERM; (events emitted, left in the spool, pending)."""
    import uvicorn

    check_exposure(settings)
    ingest_dir = settings.data_dir / "ingest"
    assembler = Assembler(ingest_dir, settings.ingest_assembly_wait_s)
    producer = SpooledProducer(
        settings, ingest_dir / "spool", metrics_prefix="sysmetrics_ingest_producer"
    )
    remove_dead_receivers(settings.data_dir)
    app = IngestApp(settings, producer, assembler, status_path(settings.data_dir, os.getpid()))
    _collect_garbage_less_often()
    config = uvicorn.Config(
        app,
        proxy_headers=False,  # no client address is used: nothing to parse per request
        host=settings.ingest_host,
        port=settings.ingest_port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ssl_certfile=str(settings.ingest_tls_cert) if settings.ingest_tls_cert else None,
        ssl_keyfile=str(settings.ingest_tls_key) if settings.ingest_tls_key else None,
        timeout_graceful_shutdown=10,
    )
    log.info(
        "ingest on %s (remote-write /api/v1/write, OTLP /v1/metrics) to topic %s",
        receiver_url(settings),
        producer.topic,
    )  # and OTLP/gRPC, logged once it listens
    app.server = uvicorn.Server(config)
    try:
        app.server.run()
    finally:
        try:
            if app.failure is None:
                app.tick()
        finally:
            left = producer.close(timeout_s=10.0)
            assembler.close()
            if app.status_file is not None:
                with contextlib.suppress(OSError):
                    app.status_file.unlink(missing_ok=True)
    if app.failure is not None:
        raise IngestRefused(app.failure)
    return assembler.stats.emitted, left, len(assembler.pending)
