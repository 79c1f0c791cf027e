"""One Kafka message → the line the raw lake keeps for it, and the event's time.

The line is the event with ``received_at`` stamped by the writer. Two ways to the same line:

* **Fast path**: the compiled validator (``native/``, built from this version's schema)
  vouches that the message is a valid event of exactly this version (no unknown field, no
  duplicate key, ``ts`` in ``Z`` form), and the message ends as our encoder ends every event,
  ``,"received_at":null}``. The line is then the message's own bytes with the stamp in place
  of that ``null``: no Python object is built and nothing is re-encoded. It keeps the lake's
  contract (each line is a valid event of this version, in UTC, stamped once) because the
  validator admits only what the Python decoder accepts, and with no duplicate keys the
  stamp is the only ``received_at``; only the spelling may differ from a re-encode
  (whitespace, ``1.50`` for ``1.5``), which no JSON reader sees.
* **Otherwise** (no compiled validator, a newer minor version, anything it does not vouch
  for): the Python decoder decides, exactly as before: it accepts the event (keeping a newer
  version's fields) or raises :class:`SchemaError` with the reason.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Final

from sysmetrics.event_types import unknown_fields
from sysmetrics.schema import (
    EARLIEST_TS,
    LATEST_TS,
    MAX_EVENT_BYTES,
    decode_keeping_unknown,
    encode_keeping_unknown,
    strict_json_schema,
)
from sysmetrics.timeutil import EPOCH

_UNSTAMPED_END: Final = b',"received_at":null}'

try:
    from sysmetrics_native import EventValidator
except ImportError:  # the optional compiled codec is not installed: the Python decoder decides
    _VALIDATOR = None
else:
    _VALIDATOR = EventValidator(json.dumps(strict_json_schema()), "ts")


def micros(at: datetime) -> int:
    """``at`` (aware) as whole microseconds since the epoch."""
    return (at - EPOCH) // timedelta(microseconds=1)


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


_EARLIEST_US: Final = micros(EARLIEST_TS)
_LATEST_US: Final = micros(LATEST_TS)


def fast_path_available() -> bool:
    return _VALIDATOR is not None


def vouched_time(data: bytes) -> int | None:
    """The event's ``ts`` in microseconds when the compiled validator vouches for ``data``
    (see the module's comment), else None; None without the compiled validator."""
    if _VALIDATOR is None or len(data) > MAX_EVENT_BYTES:
        return None
    ts_us = _VALIDATOR.check(data)
    if ts_us is None or not _EARLIEST_US <= ts_us < _LATEST_US:
        return None
    return ts_us


def lake_line(
    data: bytes, received: datetime, received_json: bytes
) -> tuple[int, bytes, list[str] | None]:
    """(the event's ts in microseconds, the lake line, the fields newer than this version or
    None) for one message; raises SchemaError. ``received_json`` is ``received`` as the events
    spell a time (:func:`sysmetrics.schema.encode_time`)."""
    if data.endswith(_UNSTAMPED_END) and (ts_us := vouched_time(data)) is not None:
        return ts_us, b"".join((memoryview(data)[:-5], received_json, b"}")), None
    event, document = decode_keeping_unknown(data)
    event.received_at = received
    newer = unknown_fields(document) if document is not None else None
    return micros(event.ts), encode_keeping_unknown(event, document), newer
