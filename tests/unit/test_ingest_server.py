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
