"""The two broker kinds every broker-facing test runs against, behind one small interface."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from sysmetrics.stream.broker import EmbeddedBroker, free_port


class TestBroker(Protocol):
    @property
    def bootstrap(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


class TansuBroker:
    """Tansu through the project's own EmbeddedBroker, on a free port."""

    def __init__(self, work_dir: Path) -> None:
        self._broker = EmbeddedBroker(work_dir, free_port())

    @property
    def bootstrap(self) -> str:
        return self._broker.bootstrap

    def start(self) -> None:
        self._broker.start()

    def stop(self) -> None:
        self._broker.stop()

    def kill(self) -> None:
        self._broker.kill()
