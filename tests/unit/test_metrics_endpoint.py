"""The /metrics endpoint every long-running command serves: what it serves (read back by
prometheus-client's parser and checked by promtool), how it answers other requests, and that
closing it stops the server thread at once although that thread sleeps up to an hour between
scrapes."""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sysmetrics.observability import CONTENT_TYPE, MetricsEndpoint, Reading, counters, exposition
from tests.support.ports import free_port


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


HOSTILE = [
    *counters("sysmetrics_test", [("samples", 7, "Samples \\ taken.\nA second line.")]),
    Reading(
        "sysmetrics_test_depth",
        "gauge",
        'Depth "quoted".',
        math.inf,
        {"queue": 'sp"o\\ol\nx', "mount": "/mnt/ü"},
    ),
    Reading("sysmetrics_test_depth", "gauge", "Depth.", -math.inf, {"queue": "", "mount": "/"}),
    Reading("sysmetrics_test_ratio", "gauge", "NaN is a value too.", math.nan),
    Reading("sysmetrics_test_big", "gauge", "Past 2**53.", 12345678901234567),
    Reading("sysmetrics_test_small", "gauge", "Tiny and negative.", -1.5e-300),
]


def _samples(readings: list[Reading]) -> list[tuple[str, dict[str, str], str]]:
    return [(r.name, r.labels, repr(float(r.value))) for r in readings]


def test_hostile_help_and_label_values_read_back_exactly() -> None:
    text = exposition(HOSTILE).decode()
    parsed = [
        (sample.name, sample.labels, repr(float(sample.value)))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]
    assert parsed == _samples(HOSTILE)
    helps = {f.name: f.documentation for f in text_string_to_metric_families(text)}
    assert helps["sysmetrics_test_samples"] == "Samples \\ taken.\nA second line."
    assert helps["sysmetrics_test_depth"] == 'Depth "quoted".'
    assert text.count("# TYPE sysmetrics_test_depth gauge") == 1  # a family once, its series after


def test_promtool_accepts_the_exposition() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing: run scripts/install-system-deps.sh (apt install prometheus)")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=exposition(HOSTILE), capture_output=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    unnamed_counter = [Reading("sysmetrics_samples", "counter", "Samples.", 1)]
    refused = subprocess.run(
        [promtool, "check", "metrics"], input=exposition(unnamed_counter), capture_output=True
    )
    assert refused.returncode != 0  # the check can fail: a counter without _total is linted


@pytest.fixture
def serving() -> Iterator[str]:
    endpoint = MetricsEndpoint()
    endpoint.add(lambda: HOSTILE[:2])
    port = endpoint.serve("127.0.0.1", free_port())
    assert port is not None
    yield f"http://127.0.0.1:{port}"
    endpoint.close()


def test_answers_a_scrape_and_refuses_everything_else(serving: str) -> None:
    with urllib.request.urlopen(f"{serving}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"] == CONTENT_TYPE
        assert response.read() == exposition(HOSTILE[:2])
    head = urllib.request.Request(f"{serving}/metrics", method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as response:
        assert int(response.headers["Content-Length"]) == len(exposition(HOSTILE[:2]))
        assert response.read() == b""
    for request, status in (
        (urllib.request.Request(f"{serving}/other"), 404),
        (urllib.request.Request(f"{serving}/metrics", data=b"x", method="POST"), 405),
    ):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == status
    with socket.create_connection(("127.0.0.1", int(serving.rsplit(":", 1)[1])), 10) as raw:
        raw.sendall(b"\x16\x03\x01 binary noise\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.0 400 ")


def test_a_client_that_sends_nothing_does_not_hold_up_a_scrape(serving: str) -> None:
    port = int(serving.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), 10),  # connected, silent
        urllib.request.urlopen(f"{serving}/metrics", timeout=5) as response,
    ):
        assert response.status == 200
