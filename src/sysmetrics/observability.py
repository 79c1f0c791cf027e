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
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


class _ReadingsCollector(Collector):
    def __init__(self, read: Reader) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for reading in self.read():
            names = sorted(reading.labels)
            family = families.get(reading.name)
            if family is None:
                kind = CounterMetricFamily if reading.kind == "counter" else GaugeMetricFamily
                family = families[reading.name] = kind(reading.name, reading.help, labels=names)
            family.add_metric([reading.labels[n] for n in names], reading.value)
        yield from families.values()


IDLE_SELECT_S = 3600.0
"""How long the server thread sleeps between requests: the standard library's serve_forever
wakes every 0.5 s by default, which was a fifth of an idle collector's CPU. Closing wakes it
with a connection instead."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsEndpoint:
    """One process's ``/metrics``: every part running in it adds its reader."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._server: WSGIServer | None = None
        self._addr = ""

    def add(self, read: Reader) -> None:
        self.registry.register(_ReadingsCollector(read))

    def serve(self, addr: str, port: int) -> int | None:
        """Start serving on ``addr:port`` (0: not at all); the port, or None when not serving."""
        if port == 0:
            return None
        try:
            family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]
            server_class = _Server6 if family == socket.AF_INET6 else _Server
            server = make_server(
                addr, port, make_wsgi_app(self.registry), server_class, _QuietHandler
            )
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
                socket.create_connection((wake, server.server_port), timeout=1).close()
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
