"""The consumer runtime's standstill watch: the stage's own work, asleep (waiting on storage)
or busy in Python, is no standstill; only a stop of the whole process is (SIGSTOP'd for real in
tests/integration/test_consumer_runtime.py, which a unit test cannot do to its own process)."""

from __future__ import annotations

import time

from sysmetrics.stream.runtime import TICK_S, StandstillWatch


def test_a_main_thread_asleep_or_busy_is_no_standstill() -> None:
    watch = StandstillWatch()
    watch.start()
    try:
        watch.longest_since_read()
        time.sleep(2.0)  # a flush waiting on slow storage
        busy_until = time.monotonic() + 2.0
        while time.monotonic() < busy_until:  # pure Python: the GIL changes hands meanwhile
            pass
        longest = watch.longest_since_read()
    finally:
        began = time.monotonic()
        watch.stop()
        stopped_in = time.monotonic() - began
    assert TICK_S / 2 < longest < 1.5, "4 s of the main thread's work, noted every 0.25 s"
    assert stopped_in < 1.0
