"""Ctrl-C during a DuckDB statement. DuckDB's Python client (2.0.1) does not reliably notice a
SIGINT sent to the process while a statement runs: Python's handler runs only once the
statement returns, so `sysmetrics query` over a large range ran on after Ctrl-C, and when DuckDB
did notice, its error ("Query interrupted") ended `batch backfill` in a traceback.

Every DuckDB connection sysmetrics opens is tracked here. While :func:`interruptible` is in
force a thread of its own hears the signal (through Python's wakeup fd, written by the C-level
handler whichever thread the kernel chose) and interrupts those connections; the statement
fails at once, its transaction rolled back, and the command stops as on any Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import weakref
from collections.abc import Iterator
from typing import Any, TypeVar

Connection = TypeVar("Connection")

_connections: weakref.WeakSet[Any] = weakref.WeakSet()


def track(con: Connection) -> Connection:
    """Register a DuckDB connection to be interrupted by Ctrl-C; returns it."""
    _connections.add(con)
    return con


@contextlib.contextmanager
def interruptible() -> Iterator[threading.Event]:
    """Within it, SIGINT interrupts every tracked DuckDB connection; the event it yields says
    whether SIGINT came (an interrupted statement's error is then the interruption's). Python's
    own handling of the signal (KeyboardInterrupt) is unchanged. Main thread only (elsewhere it
    changes nothing)."""
    heard = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield heard
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def interrupt_on_sigint() -> None:
        while signals := os.read(read_end, 64):  # empty once the write end is closed
            if signal.SIGINT in signals:
                heard.set()
                for con in list(_connections):
                    with contextlib.suppress(Exception):  # closed meanwhile
                        con.interrupt()

    watcher = threading.Thread(target=interrupt_on_sigint, name="ctrl-c", daemon=True)
    watcher.start()
    try:
        yield heard
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write_end)
        watcher.join(timeout=5)
        os.close(read_end)
