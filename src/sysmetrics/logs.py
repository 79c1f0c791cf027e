"""How every sysmetrics process logs: one format, on stderr (or a rotated file where no
supervisor keeps stderr: the Windows service)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Final

from sysmetrics.terminal import written_out

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_COPIES_KEPT: Final = 3
"""A rotated log keeps this many older copies (``.1`` the newest); the oldest is dropped."""
LOG_FILE_MAX_BYTES: Final = 10 * 1024 * 1024
"""A log file written by the process itself is rotated past this size."""


class WrittenOutFormatter(logging.Formatter):
    """Log lines with their control characters written out: a hostname or a label from any
    sender (``firing HighCpu on <hostname>``) carried escape sequences to the terminal or the
    `tail -f` of whoever read the log. Line breaks stay (tracebacks, messages of several
    lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return written_out(super().formatMessage(record), keep_lines=True)


def configure_logging(level: int, log_file: Path | None = None) -> None:
    """Log at ``level`` on stderr, or to ``log_file`` (its folder made; past
    :data:`LOG_FILE_MAX_BYTES` it moves to ``.1`` and older copies shift, as `up` rotates its
    components' logs); librdkafka's and gcsfs's own lines (gcsfs logs a traceback when its
    retries run out) only at debug: our code says what they mean."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        from logging.handlers import RotatingFileHandler  # not loaded where stderr is the log

        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            log_file, maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_COPIES_KEPT, encoding="utf-8"
        )
    handler.setFormatter(WrittenOutFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    if level > logging.DEBUG:
        for name in ("sysmetrics.kafka.client", "gcsfs"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


class RepeatedFailure:
    """A failure that recurs on every retry (a full disk under a file rewritten each second):
    logged once when it starts and once when an attempt succeeds again, not on every retry."""

    def __init__(self, logger: logging.Logger, level: int, what: str) -> None:
        self._log = logger
        self._level = level
        self._what = what
        self.failing = False

    def failed(self, exc: BaseException, consequence: str) -> None:
        if not self.failing:
            self._log.log(self._level, "cannot %s (%s): %s", self._what, exc, consequence)
        self.failing = True

    def succeeded(self) -> None:
        if self.failing:
            self._log.info("could %s again", self._what)
        self.failing = False
