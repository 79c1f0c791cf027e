"""Where the tests keep what they fetch or build once per machine (the Kafka jars, the test
Collector): ``SYSMETRICS_KAFKA_CACHE``, default ``~/.cache/sysmetrics``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("SYSMETRICS_KAFKA_CACHE", Path.home() / ".cache" / "sysmetrics"))


@contextmanager
def exclusive(name: str) -> Iterator[Path]:
    """The cache folder, held by this process alone for ``name``: the suite runs on two xdist
    workers, which on a fresh machine may want the same jars or binary at the same moment; the
    second waits and then finds it made."""
    import fcntl  # POSIX only: the tests that fetch or build run on Linux

    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield root
