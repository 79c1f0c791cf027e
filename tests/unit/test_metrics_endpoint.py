"""The /metrics endpoint every long-running command serves: what it serves, and that closing
it stops the server thread at once although that thread sleeps up to an hour between scrapes."""

from __future__ import annotations

import socket
import threading
import urllib.request

import pytest

from sysmetrics.observability import MetricsEndpoint, Reading, counters
from sysmetrics.stream.broker import free_port


def _readings() -> list[Reading]:
    return [
        *counters("sysmetrics_test", [("samples", 7, "Samples taken.")]),
        Reading("sysmetrics_test_depth", "gauge", "Depth.", 3, {"queue": "spool"}),
    ]


def _serving_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "metrics")


@pytest.mark.parametrize("addr", ["127.0.0.1", "::1", "0.0.0.0"])
def test_serves_the_readings_and_closes_without_waiting_for_its_poll(addr: str) -> None:
    if addr == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    endpoint = MetricsEndpoint()
    endpoint.add(_readings)
    port = free_port()
    before = _serving_threads()
    try:
        assert endpoint.serve(addr, port) == port
    except OSError:
        pytest.skip(f"cannot bind {addr}")
    host = f"[{addr}]" if ":" in addr else addr
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "sysmetrics_test_samples_total 7.0" in text
    assert 'sysmetrics_test_depth{queue="spool"} 3.0' in text

    closing = threading.Thread(target=endpoint.close)
    closing.start()
    closing.join(60)  # the serving thread sleeps an hour between requests unless woken
    assert not closing.is_alive(), "close() waited for the server's poll interval"
    assert _serving_threads() == before
    with pytest.raises(OSError):
        socket.create_connection((addr, port), timeout=2).close()


def test_a_port_in_use_is_a_warning_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        endpoint = MetricsEndpoint()
        assert endpoint.serve("127.0.0.1", taken.getsockname()[1]) is None
        assert "SYSMETRICS_METRICS_PORT" in caplog.text
        endpoint.close()
    finally:
        taken.close()
