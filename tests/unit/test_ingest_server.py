"""The receiver as a process would run it (``serve``), in this one: an error its emission
cannot retry stops it, loudly, instead of leaving it answering requests whose events would
never be sent (the set-aside fix's bug did that: the emitting task died, the server went on)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sysmetrics.config import Settings
from sysmetrics.ingest import server
from tests.support.ports import free_port


def test_an_emission_that_fails_stops_the_receiver_with_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, bootstrap_servers="127.0.0.1:1", ingest_port=free_port())
    ticks = 0

    def tick(self: server.IngestApp) -> None:  # an error of a kind no retry mends
        nonlocal ticks
        ticks += 1
        if ticks == 3:
            raise RuntimeError("an emission bug")

    monkeypatch.setattr(server.IngestApp, "tick", tick)
    outcome: list[BaseException | tuple[int, int, int]] = []

    def run() -> None:
        try:
            outcome.append(server.serve(settings))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the receiver went on serving"
    [error] = outcome
    assert isinstance(error, server.IngestRefused)
    assert "emitting events failed (RuntimeError('an emission bug'))" in str(error)
    assert ticks == 3, "no tick after the failure, not even the final one"


def test_a_sender_whose_requests_map_nothing_is_told_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sender of series none of which is mapped (here names no exporter has, with a
    target's `up`, which is no reading) is answered 200 and nothing of it is read: after three
    such requests in a row the log says so, once. A sender whose requests are read, with some
    of them carrying only other series (a Prometheus shard), is not told."""
    from sysmetrics.ingest.assembly import Assembler
    from sysmetrics.ingest.wire import decode_otlp
    from sysmetrics.stream.producer import SpooledProducer
    from tests.support.remote_write import scraped_export

    settings = Settings(data_dir=tmp_path, bootstrap_servers="127.0.0.1:1")
    producer = SpooledProducer(settings, tmp_path / "spool")
    app = server.IngestApp(settings, producer, Assembler(tmp_path / "journal", wait_s=15))

    def send(name: str, sender: str, at_s: int) -> None:
        series = [({"__name__": name, "cpu": "0", "mode": "idle"}, 12.5), ({"__name__": "up"}, 1)]
        data = scraped_export(series, at_s * 1000, "node", "web-1:9100")
        app._accept(
            decode_otlp(data, "application/x-protobuf", ("host.name",), "instance", 1000),
            sender,
            True,
        )

    with caplog.at_level("WARNING", logger="sysmetrics.ingest.server"):
        for at_s in range(1_800_000_000, 1_800_000_050, 10):
            send("node_cpu_busy_seconds", "other", at_s)
            send("node_cpu_seconds_total" if at_s % 20 else "go_goroutines", "prometheus", at_s)
    told = [r.getMessage() for r in caplog.records]
    assert len(told) == 1 and told[0].startswith("ingest: other sent 3 requests in a row")
    assert "hostmetrics" in told[0] and "send those" in told[0]
    producer.close()


def test_delta_points_are_counted_and_each_sender_told_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the decoders drop of delta sums (test_native_codec.py) is counted on /metrics, and
    the log says once per sender why and what to change."""
    from sysmetrics.ingest.assembly import Assembler
    from sysmetrics.ingest.wire import Decoded
    from sysmetrics.stream.producer import SpooledProducer

    settings = Settings(data_dir=tmp_path, bootstrap_servers="127.0.0.1:1")
    producer = SpooledProducer(settings, tmp_path / "spool")
    app = server.IngestApp(settings, producer, Assembler(tmp_path / "journal", wait_s=15))
    with caplog.at_level("WARNING", logger="sysmetrics.ingest.server"):
        for sender in ("collector-a", "collector-a", "collector-b"):
            app._accept(Decoded(delta=3), sender, named=True)
    told = [r.getMessage() for r in caplog.records]
    assert len(told) == 2 and "collector-a sends" in told[0] and "collector-b sends" in told[1]
    assert "Export cumulative" in told[0]
    reading = next(r for r in app.readings() if r.name.endswith("dropped_delta_points_total"))
    assert reading.value == 9
    producer.close()
