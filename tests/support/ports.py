"""Ports for the servers the tests and benchmarks start (brokers, receivers, dashboards)."""

from __future__ import annotations

import contextlib
import random
import socket

FREE_PORTS = range(20_000, 32_768)
"""Where :func:`free_port` looks: below the ephemeral ranges (Linux 32768-60999, macOS and
Windows from 49152), from which the system takes the local port of every outgoing connection:
a broker restarted on its port after an outage (the fault tests) could find it taken by a
client's connection made meanwhile."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing holds now (a broker's, a server's in tests)."""
    for _ in range(100):
        port = random.choice(FREE_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # that range all taken: any
        return int(sock.getsockname()[1])


def distinct_free_ports(count: int) -> list[int]:
    """``count`` ports free now and different from each other: each socket stays bound until
    all are chosen (one ``free_port()`` after another may return a port twice)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
