"""Prometheus ``/metrics`` for the long-running parts: the collector, the lake writer, the alert
evaluator and the scheduler of ``sysmetrics up``.

Each part hands the endpoint a function that reads its own counters at scrape time (the same
numbers its status file and final summary print: one source), so nothing is counted twice.
The endpoint binds to 127.0.0.1 unless SYSMETRICS_METRICS_ADDR says otherwise; a port already
in use is a warning, never a reason for the pipeline to stop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import socketserver
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"up": 9850, "collect": 9851, "consume": 9852, "alert": 9853}
"""Each command's port when SYSMETRICS_METRICS_PORT / --metrics-port is not given: one per
role, so a collector and a lake writer on one machine do not collide."""


@dataclass(frozen=True)
class Reading:
    """One sample of one metric: ``kind`` counter (monotonic, named ``…_total``) or gauge."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


Reader = Callable[[], list[Reading]]


def counters(
    prefix: str, rows: Sequence[tuple[str, float, str]], labels: dict[str, str] | None = None
) -> list[Reading]:
    """``prefix_NAME_total`` counters from (name, value, help) rows."""
    return [
        Reading(f"{prefix}_{name}_total", "counter", text, value, labels or {})
        for name, value, text in rows
    ]


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(text: str, quote: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def exposition(readings: Sequence[Reading]) -> bytes:
    """Prometheus' text exposition format 0.0.4: a family's HELP and TYPE once, then its
    samples with their labels sorted by name.

    Written here rather than by prometheus-client: that library's import (its HTTP server,
    urllib, email parsing) was 5 of the collector's 39 MB, on every machine of the fleet, to
    print a dozen lines. The tests read this output with prometheus-client's parser and with
    ``promtool check metrics``."""
    families: dict[str, list[Reading]] = {}
    for reading in readings:
        families.setdefault(reading.name, []).append(reading)
    lines = []
    for name, samples in families.items():
        lines.append(f"# HELP {name} {_escape(samples[0].help, quote=False)}")
        lines.append(f"# TYPE {name} {samples[0].kind}")
        for sample in samples:
            labels = ",".join(
                f'{key}="{_escape(sample.labels[key], quote=True)}"'
                for key in sorted(sample.labels)
            )
            series = f"{name}{{{labels}}}" if labels else name
            lines.append(f"{series} {_number(sample.value)}")
    return ("\n".join(lines) + "\n").encode() if lines else b""


IDLE_SELECT_S = 3600.0
"""How long the server thread sleeps between requests: the standard library's serve_forever
wakes every 0.5 s by default, which was a fifth of an idle collector's CPU. Closing wakes it
with a connection instead."""

REQUEST_TIMEOUT_S = 10.0
"""A client that sends its request slower than this is dropped, so no scrape can hold a
thread forever."""

MAX_REQUEST_LINES = 100
MAX_LINE_BYTES = 8192


class _ScrapeHandler(socketserver.StreamRequestHandler):
    """HTTP/1.0 ``GET /metrics``: one response, then the connection closes."""

    timeout = REQUEST_TIMEOUT_S
    server: _Server

    def handle(self) -> None:
        with contextlib.suppress(OSError):
            request = self.rfile.readline(MAX_LINE_BYTES + 1)
            for _ in range(MAX_REQUEST_LINES):
                line = self.rfile.readline(MAX_LINE_BYTES + 1)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request.split()
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
                self._respond(400, b"bad request\n")
            elif parts[0] not in (b"GET", b"HEAD"):
                self._respond(405, b"use GET\n")
            elif parts[1].split(b"?")[0] not in (b"/metrics", b"/"):
                self._respond(404, b"not found: GET /metrics\n")
            else:
                self._respond(200, self.server.render(), head=parts[0] == b"HEAD")

    def _respond(self, status: int, body: bytes, head: bool = False) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
        content_type = CONTENT_TYPE if status == 200 else "text/plain; charset=utf-8"
        header = (
            f"HTTP/1.0 {status} {reason[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.wfile.write(header.encode() + (b"" if head else body))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], render: Callable[[], bytes]) -> None:
        self.render = render
        super().__init__(address, _ScrapeHandler)


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsEndpoint:
    """One process's ``/metrics``: every part running in it adds its reader."""

    def __init__(self) -> None:
        self._readers: list[Reader] = []
        self._server: _Server | None = None
        self._addr = ""

    def add(self, read: Reader) -> None:
        self._readers.append(read)

    def render(self) -> bytes:
        """Every reader's readings now, in the text exposition format."""
        return exposition([reading for read in self._readers for reading in read()])

    def serve(self, addr: str, port: int) -> int | None:
        """Start serving on ``addr:port`` (0: not at all); the port, or None when not serving."""
        if port == 0:
            return None
        try:
            family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]
            server_class = _Server6 if family == socket.AF_INET6 else _Server
            server = server_class((addr, port), self.render)
        except OSError as exc:
            log.warning(
                "metrics not served on %s:%d (%s): set --metrics-port or "
                "SYSMETRICS_METRICS_PORT to a free port (0 turns it off)",
                addr,
                port,
                exc,
            )
            return None
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": IDLE_SELECT_S},
            name="metrics",
            daemon=True,
        ).start()
        self._server, self._addr = server, addr
        log.info("Prometheus metrics on http://%s:%d/metrics", addr, port)
        return port

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        stopping = threading.Thread(target=server.shutdown, daemon=True)
        stopping.start()
        # shutdown() waits for the serving loop to look at its flag: wake it with a connection
        # (a wildcard address is reached on loopback). Should that fail, the daemon thread is
        # left asleep rather than the caller kept waiting.
        wake = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self._addr, self._addr)
        for _ in range(25):
            with contextlib.suppress(OSError):
                socket.create_connection((wake, server.server_address[1]), timeout=1).close()
            stopping.join(0.2)
            if not stopping.is_alive():
                break
        server.server_close()


def serve_metrics(role: str, readers: list[Reader], addr: str, port: int | None) -> MetricsEndpoint:
    """The endpoint of a ``role`` (``collect``, ``consume``…) on ``port``, or its default."""
    endpoint = MetricsEndpoint()
    for read in readers:
        endpoint.add(read)
    endpoint.serve(addr, DEFAULT_PORTS[role] if port is None else port)
    return endpoint
