"""The receiver as a process would run it (``serve``), in this one: an error its emission
cannot retry stops it, loudly, instead of leaving it answering requests whose events would
never be sent (the set-aside fix's bug did that: the emitting task died, the server went on)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sysmetrics.config import Settings
from sysmetrics.ingest import server
from sysmetrics.stream.broker import free_port


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
