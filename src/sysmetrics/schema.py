"""The machine-metrics event, schema v1, defined once.

One event is one sample of one host. Everything else (collector, simulator, lake writer,
warehouse load, the checked-in JSON Schema) derives from these types.

Conventions (close to OpenTelemetry's semantic conventions):
- sizes are bytes (``*_bytes``), percentages are 0-100 (``*_pct``), temperatures are degrees
  Celsius (``*_celsius``), power is watts (``*_watts``), durations are seconds (``*_s``);
- network and disk I/O values are cumulative counters as the OS reports them (since boot);
  rates are computed downstream from deltas;
- every sensor field is nullable: ``null`` means "not available on this machine".

Evolution (docs/schema-evolution.md): within a major version only optional fields are added.
A reader keeps an event with fields it does not know, validates the ones it knows and passes the
rest through to the raw lake untouched; an event of a newer *major* version is rejected with a
reason that says to upgrade the reader.
"""

from __future__ import annotations

import json
import os
import time
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import msgspec.inspect as mi

SCHEMA_VERSION: Final = 1
TOPIC_DEFAULT: Final = "machine_metrics"
RETIRED_HEADER: Final = "sysmetrics-retired"
"""A message of the topic with no value (a Kafka tombstone) under a host's key and with this
header says that the host was retired at the header's time (Unix ms, ASCII digits): Prometheus
stopped scraping it on purpose (``sysmetrics ingest``). It is no event: the lake writer skips
it, the alert evaluator that owns the host forgets it. A tombstone without it is no event
either, and is quarantined."""
MAX_EVENT_BYTES: Final = 256 * 1024
"""Events larger than this are rejected (a sample of a 128-core, 8-GPU host is ~20 kB)."""

EARLIEST_TS: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TS: Final = datetime(2100, 1, 1, tzinfo=UTC)
"""Events outside this range are rejected: no clock is that wrong, and the lake's
partitions should not be chosen by a hostile timestamp."""

SCHEMA_FILE: Final = Path(__file__).resolve().parents[2] / "schemas" / "machine_metrics.v1.json"

INT64_MAX: Final = 2**63 - 1
"""The largest count or size an event may carry: every store downstream holds them as signed
64-bit integers (DuckDB BIGINT, BigQuery INT64, Parquet INT64), and one larger value would stop
the load of its whole hour, for every host."""

_COUNT_END: Final = float(INT64_MAX + 1)


def count_or_none(value: float | None) -> int | None:
    """``value`` as a count or size an event can carry (a whole number from 0 to INT64_MAX),
    else None: one reading out of range (a driver's 2**64 - 1 for "unknown", an agent's NaN or
    a sum past 64 bits) loses that field, not the whole sample the lake writer would quarantine."""
    # One chained comparison also refuses NaN and infinities (it runs on every counter).
    if value is not None and 0 <= value < _COUNT_END:
        return round(value)
    return None


SENDER_PATTERN: Final = r"^[\x21-\x7e]{1,128}(?![\s\S])"
"""A sender's name: printable ASCII without spaces, as an HTTP header and an Alertmanager
label value carry it plainly."""

Pct = Annotated[float, msgspec.Meta(ge=0, le=100, description="percent, 0-100")]
Bytes = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX, description="bytes")]
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
Celsius = Annotated[float, msgspec.Meta(ge=-273.15, le=1000, description="degrees Celsius")]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 UTC timestamp")]
Label = Annotated[str, msgspec.Meta(max_length=256)]
HostId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[^\x00-\x1f\x7f]{1,256}(?![\s\S])",  # no trailing "\n" either
        description="stable machine id, 1-256 characters, no control characters; stored "
        "verbatim and never used to build a path or a SQL string",
    ),
]
EventId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="UUIDv7 (time-ordered), lowercase",
    ),
]


class _Group(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False, gc=False):
    """Base of every part of the event: unknown fields are an error, not silently kept."""


class Host(_Group):
    host_id: HostId
    hostname: Label
    os: Label = msgspec.field(default="unknown")
    arch: Label = msgspec.field(default="unknown")
    boot_time: UtcTime | None = None


class Cpu(_Group):
    utilization_pct: Pct | None = None
    per_core_pct: list[Pct] | None = None
    load_1m: Annotated[float, msgspec.Meta(ge=0)] | None = None
    load_5m: Annotated[float, msgspec.Meta(ge=0)] | None = None
    load_15m: Annotated[float, msgspec.Meta(ge=0)] | None = None
    freq_mhz: Annotated[float, msgspec.Meta(ge=0)] | None = None
    logical_cores: Count | None = None


class Memory(_Group):
    total_bytes: Bytes | None = None
    used_bytes: Bytes | None = None
    available_bytes: Bytes | None = None
    used_pct: Pct | None = None


class Swap(_Group):
    total_bytes: Bytes | None = None
    used_bytes: Bytes | None = None
    used_pct: Pct | None = None


class DiskUsage(_Group):
    mountpoint: Label
    device: Label | None = None
    fstype: Label | None = None
    total_bytes: Bytes | None = None
    used_bytes: Bytes | None = None
    free_bytes: Bytes | None = None
    used_pct: Pct | None = None


class DiskIo(_Group):
    """Cumulative counters since boot, all disks together."""

    read_bytes: Bytes | None = None
    write_bytes: Bytes | None = None
    read_count: Count | None = None
    write_count: Count | None = None


class NetCounters(_Group):
    """Cumulative counters since boot (or since the interface appeared)."""

    bytes_sent: Bytes | None = None
    bytes_recv: Bytes | None = None
    packets_sent: Count | None = None
    packets_recv: Count | None = None
    errin: Count | None = None
    errout: Count | None = None
    dropin: Count | None = None
    dropout: Count | None = None


class NetInterface(NetCounters):
    name: Label = ""


class Network(NetCounters):
    """Totals over the interfaces but loopback (:func:`is_loopback`), plus each interface."""

    interfaces: list[NetInterface] = msgspec.field(default_factory=list)


def is_loopback(interface: str) -> bool:
    """Linux's ``lo``, macOS's and the BSDs' ``lo0``: their traffic never leaves the machine,
    so it is not the machine's network I/O and :class:`Network`'s totals leave it out, whichever
    agent sampled the host."""
    return interface == "lo" or interface.startswith("lo0")


class Temperature(_Group):
    sensor: Label
    label: Label | None = None
    celsius: Celsius | None = None


class Gpu(_Group):
    index: Count
    name: Label | None = None
    uuid: Label | None = None
    utilization_pct: Pct | None = None
    memory_used_bytes: Bytes | None = None
    memory_total_bytes: Bytes | None = None
    temperature_celsius: Celsius | None = None
    power_watts: Annotated[float, msgspec.Meta(ge=0)] | None = None
    fan_pct: Pct | None = None


class Battery(_Group):
    percent: Pct | None = None
    plugged_in: bool | None = None
    secs_left: Count | None = None
    health_pct: (
        Annotated[
            float, msgspec.Meta(ge=0, le=150, description="full-charge / design capacity x 100")
        ]
        | None
    ) = None
    cycle_count: Count | None = None


class MetricsEvent(_Group):
    """One sample of one host (schema v1)."""

    schema_version: Literal[1]
    event_id: EventId
    ts: UtcTime
    host: Host
    cpu: Cpu | None = None
    memory: Memory | None = None
    swap: Swap | None = None
    disks: list[DiskUsage] = msgspec.field(default_factory=list)
    disk_io: DiskIo | None = None
    network: Network | None = None
    temperatures: list[Temperature] = msgspec.field(default_factory=list)
    gpus: list[Gpu] = msgspec.field(default_factory=list)
    battery: Battery | None = None
    interval_s: (
        Annotated[
            float,
            msgspec.Meta(
                gt=0,
                le=86400,
                description="the collector's configured seconds between samples (added in v1.1; "
                "absent from older collectors): completeness is measured against it",
            ),
        ]
        | None
    ) = None
    source: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=64,
                description="what produced the sample: absent or 'sysmetrics' for our collector, "
                "'node_exporter', 'windows_exporter' or 'otel' for events made by `sysmetrics "
                "ingest` from another agent's stream (added in v1.2)",
            ),
        ]
        | None
    ) = None
    sender: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=SENDER_PATTERN,
                description="who delivered the sample to `sysmetrics ingest` (a central "
                "Prometheus, an OTel Collector): the request's X-Sysmetrics-Sender header, else "
                "the address it came from; absent for our collector. A host-down alert carries "
                "it as a label, so one sender's outage can be routed as one (added in v1.3)",
            ),
        ]
        | None
    ) = None
    received_at: (
        Annotated[
            datetime,
            msgspec.Meta(
                tz=True,
                description="set by the lake writer, not the collector: when the event reached "
                "Kafka (broker log-append time) or the writer; ts minus this is the host's "
                "clock skew or delivery delay (added in v1.1)",
            ),
        ]
        | None
    ) = None


class SchemaError(ValueError):
    """A message is not a valid schema-v1 event; the text says which field and why."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(MetricsEvent)


def new_event_id(at: datetime | None = None, random_bits: int | None = None) -> str:
    """A UUIDv7 (RFC 9562) string: 48-bit Unix ms, version, 74 random bits.

    ``at`` pins the time part and ``random_bits`` the rest, so the simulator can make
    deterministic, event-time-ordered ids from its seed.
    """
    ms = time.time_ns() // 1_000_000 if at is None else int(at.timestamp() * 1000)
    # os.urandom is what secrets.randbits reads; the secrets module would also load hashlib
    # and random (~1 MB of every collector) for this one call.
    rand = (
        int.from_bytes(os.urandom(10)) >> 6
        if random_bits is None
        else random_bits & ((1 << 74) - 1)
    )
    value = (
        (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    )
    digits = f"{value:032x}"  # the text of uuid.UUID(int=value), without building the object
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


_EARLIEST_MS: Final = int(EARLIEST_TS.timestamp() * 1000)
_LATEST_MS: Final = int(LATEST_TS.timestamp() * 1000)
Headers = list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None]
"""A Kafka message's headers, as confluent-kafka takes and gives them."""


def retired_at(value: bytes | None, headers: Headers | None) -> int | None:
    """The time (Unix ms) a message retires its host (``RETIRED_HEADER``), or None when it is
    no retirement."""
    if value is not None or not headers:
        return None
    for name, text in headers.items() if isinstance(headers, dict) else headers:
        if name == RETIRED_HEADER and isinstance(text, bytes) and text.isdigit():
            at_ms = int(text)  # outside the events' time range: no retirement (a datetime of
            return at_ms if _EARLIEST_MS <= at_ms < _LATEST_MS else None  # it would raise)
    return None


def retired_host(key: bytes | None) -> str | None:
    """The host a retirement's key names, or None when the key is no valid host id."""
    try:
        return msgspec.convert(key.decode(), HostId) if key else None
    except (UnicodeDecodeError, msgspec.ValidationError):
        return None


def utc_now_ms() -> datetime:
    """The current UTC time truncated to milliseconds (the event's resolution)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def encode(event: MetricsEvent) -> bytes:
    return _encoder.encode(event)


def encode_time(value: datetime) -> bytes:
    """A time as the events spell it (a JSON string)."""
    return _encoder.encode(value)


def decode(data: bytes) -> MetricsEvent:
    """Decode and validate one JSON event; raise :class:`SchemaError` with a clear reason.
    Fields this version does not know are ignored (see :func:`decode_keeping_unknown`)."""
    return decode_keeping_unknown(data)[0]


def decode_keeping_unknown(data: bytes) -> tuple[MetricsEvent, dict[str, Any] | None]:
    """Decode and validate one JSON event. The second item is the whole JSON document when it
    carries fields this version does not know (a newer minor version), else None: a writer
    passes it to :func:`encode_keeping_unknown` so that nothing a newer collector sent is lost."""
    if len(data) > MAX_EVENT_BYTES:
        raise SchemaError(f"event is {len(data)} bytes, more than the {MAX_EVENT_BYTES} allowed")
    document = None
    try:
        event = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        # The strict decoder is the fast path; only a failure pays for the generic parse.
        event, document = _decode_generic(data, exc)
    except msgspec.DecodeError as exc:
        raise SchemaError(f"not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec's own error for a string that is not UTF-8
        raise SchemaError(f"not valid JSON: a string is not UTF-8 ({exc.reason})") from None
    if not EARLIEST_TS <= event.ts < LATEST_TS:
        raise SchemaError(
            f"ts {event.ts.isoformat()} is outside {EARLIEST_TS.year}-{LATEST_TS.year}"
        )
    if event.ts.utcoffset():
        event.ts = event.ts.astimezone(UTC)
    return event, document


def _decode_generic(
    data: bytes, strict_error: msgspec.ValidationError
) -> tuple[MetricsEvent, dict[str, Any]]:
    reason = str(strict_error)
    # Only what a newer version can cause is worth a second parse.
    if not any(s in reason for s in ("unknown field", "required field", "$.schema_version")):
        raise SchemaError(f"not a schema-v1 event: {reason}")
    try:
        document = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        # Strict decoding stopped at an error before it reached this one.
        raise SchemaError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SchemaError(f"not a schema-v1 event: {reason}")
    version = document.get("schema_version")
    if type(version) is int and version > SCHEMA_VERSION:
        raise SchemaError(
            f"schema_version {version} is newer than this sysmetrics understands "
            f"({SCHEMA_VERSION}): upgrade the lake writer and warehouse before collectors send it"
        )
    if "unknown field" not in reason:
        raise SchemaError(f"not a schema-v1 event: {reason}")
    try:
        # Same parser, same bytes: where a key repeats, both keep the last value, so the
        # validated event and the document written through agree on every known field.
        event = _lenient_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"not a schema-v1 event: {exc}") from None
    return event, document


def _lenient_types(
    cls: type[msgspec.Struct], made: dict[type, type[msgspec.Struct]]
) -> type[msgspec.Struct]:
    """A subclass of ``cls`` that ignores fields it does not know, at every depth: the same
    validation of every known field, for events of a newer minor version."""
    if cls not in made:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields: list[tuple[str, Any, Any]] = []
        for f in msgspec.structs.fields(cls):
            swapped = _swap_struct_types(hints[f.name], made)
            if swapped is not hints[f.name]:
                default = (
                    msgspec.field(default_factory=f.default_factory)
                    if f.default_factory is not msgspec.NODEFAULT
                    else f.default
                )
                fields.append((f.name, swapped, default))
        made[cls] = msgspec.defstruct(
            f"Lenient{cls.__name__}",
            fields,
            bases=(cls,),
            forbid_unknown_fields=False,
            gc=False,
            module=__name__,
        )
    return made[cls]


def _swap_struct_types(t: Any, made: dict[type, type[msgspec.Struct]]) -> Any:
    """``t`` with every Struct type in it replaced by its lenient subclass (``t`` itself if
    it holds none)."""
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return _lenient_types(t, made)
    origin, args = typing.get_origin(t), typing.get_args(t)
    if not args:
        return t
    if origin is typing.Annotated:
        inner = _swap_struct_types(args[0], made)
        return t if inner is args[0] else typing.Annotated[inner, *t.__metadata__]
    swapped = tuple(_swap_struct_types(a, made) for a in args)
    if all(a is b for a, b in zip(swapped, args, strict=True)):
        return t
    if origin is list:
        return list[swapped[0]]  # type: ignore[valid-type]
    return typing.Union[swapped]  # noqa: UP007  (a runtime-built union)


_lenient_decoder = msgspec.json.Decoder(
    typing.cast(type[MetricsEvent], _lenient_types(MetricsEvent, {}))
)


def bare_type(t: mi.Type) -> mi.Type:
    """``T | None`` and ``Annotated[T, ...]`` as ``T``."""
    if isinstance(t, mi.Metadata):
        return bare_type(t.type)
    if isinstance(t, mi.UnionType):
        rest = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if len(rest) == 1:
            return bare_type(rest[0])
    return t


def encode_keeping_unknown(event: MetricsEvent, document: dict[str, Any] | None) -> bytes:
    """``event`` as JSON; when ``document`` (its original, from a newer minor version) is
    given, that document with the fields the writer sets or normalizes (``ts`` in UTC,
    ``received_at``) taken from ``event``: fields this version does not know pass through."""
    if document is None:
        return encode(event)
    document["ts"] = event.ts
    document["received_at"] = event.received_at
    return _encoder.encode(document)


def strict_json_schema() -> dict[str, Any]:
    """This version's schema as msgspec derives it from the types: unknown fields refused,
    i.e. what this version accepts without having to keep anything it does not know."""
    return msgspec.json.schema(MetricsEvent)


def json_schema() -> dict[str, Any]:
    schema = strict_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://sysmetrics.dev/schemas/machine_metrics.v1.json"
    schema["title"] = "sysmetrics machine_metrics event, schema v1"
    # Fields added by a later minor version are valid v1 (see the module docstring).
    for definition in schema["$defs"].values():
        definition.pop("additionalProperties", None)
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_FILE.write_text(json_schema_text())
    print(f"wrote {SCHEMA_FILE}")
