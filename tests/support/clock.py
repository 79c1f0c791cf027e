"""A process's wall clock stepped the way NTP or a resumed VM steps it: Debian's libfaketime
preloaded into the process, reading its offset from a file at every call. The monotonic clock
stays the kernel's, as in a real step (CLOCK_MONOTONIC never jumps)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
"""None where the `libfaketime` package is missing (scripts/install-system-deps.sh installs it)."""


class SteppedClock:
    def __init__(self, directory: Path) -> None:
        self.offset_file = directory / "clock-offset"
        self.offset_s = 0
        self._write()

    def env(self) -> dict[str, str]:
        """What the process's environment needs for its wall clock to follow :meth:`step`."""
        assert LIBFAKETIME is not None
        return {
            "LD_PRELOAD": LIBFAKETIME,
            "FAKETIME_TIMESTAMP_FILE": str(self.offset_file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def step(self, seconds: int) -> None:
        """Move the process's wall clock by ``seconds`` (back when negative), at once."""
        self.offset_s += seconds
        self._write()

    def _write(self) -> None:
        # Replaced whole: the process reads the file at every clock call.
        tmp = self.offset_file.with_suffix(".tmp")
        tmp.write_text(f"{self.offset_s:+d}\n")
        os.replace(tmp, self.offset_file)
