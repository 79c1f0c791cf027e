"""How every sysmetrics process logs: one format, on stderr."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int) -> None:
    """Log at ``level``; librdkafka's own lines only at debug (our code says what they mean)."""
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    if level > logging.DEBUG:
        logging.getLogger("sysmetrics.kafka.client").setLevel(logging.CRITICAL)
