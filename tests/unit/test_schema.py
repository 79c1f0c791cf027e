from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime

import pytest

from sysmetrics import schema
from sysmetrics.schema import (
    Host,
    MetricsEvent,
    SchemaError,
    decode,
    decode_keeping_unknown,
    encode,
    encode_keeping_unknown,
    new_event_id,
)


def make_event(**overrides: object) -> MetricsEvent:
    fields: dict[str, object] = {
        "schema_version": 1,
        "event_id": new_event_id(),
        "ts": datetime(2026, 11, 27, 14, 5, 10, 123000, tzinfo=UTC),
        "host": Host(host_id="host-1", hostname="web-1", os="linux", arch="x86_64"),
    }
    fields.update(overrides)
    return MetricsEvent(**fields)  # type: ignore[arg-type]


def test_event_round_trips_through_encode_decode() -> None:
    event = make_event(cpu=schema.Cpu(utilization_pct=12.5, load_1m=0.3))
    data = encode(event)
    assert decode(data) == event
    assert json.loads(data)["ts"] == "2026-11-27T14:05:10.123000Z"


def test_committed_json_schema_is_up_to_date() -> None:
    assert schema.SCHEMA_FILE.read_text() == schema.json_schema_text(), (
        "schemas/machine_metrics.v1.json is stale: run python -m sysmetrics.schema"
    )


def test_every_sensor_field_is_nullable_in_the_schema() -> None:
    defs = schema.json_schema()["$defs"]
    for group in ("Cpu", "Memory", "Swap", "DiskIo", "Gpu", "Battery", "Temperature"):
        for name, prop in defs[group]["properties"].items():
            if name in ("index", "sensor"):
                continue
            assert any(a.get("type") == "null" for a in prop.get("anyOf", [])), (group, name)


def test_event_ids_are_uuid7_and_time_ordered() -> None:
    first = new_event_id(datetime(2026, 1, 1, tzinfo=UTC))
    second = new_event_id(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC))
    assert first[14] == "7" and second[14] == "7"
    assert first < second
    assert new_event_id(datetime(2026, 1, 1, tzinfo=UTC), 5) == new_event_id(
        datetime(2026, 1, 1, tzinfo=UTC), 5
    )
    for n in range(2000):  # what Python's uuid module reads back: version 7, RFC variant
        at = datetime.fromtimestamp(1_700_000_000 + n * 9_999.123, UTC)
        text = new_event_id(at, random.getrandbits(74) if n else (1 << 74) - 1)
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 7, uuid.RFC_4122)
        assert parsed.int >> 80 == int(at.timestamp() * 1000)


def _bad(mutate: object) -> bytes:
    doc = json.loads(encode(make_event()))
    mutate(doc)  # type: ignore[operator]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (_bad(lambda d: d.pop("ts")), "missing required field `ts`"),
        (_bad(lambda d: d.update(ts=12)), "$.ts"),
        (_bad(lambda d: d.update(cpu={"utilization_pct": "high"})), "$.cpu.utilization_pct"),
        (_bad(lambda d: d.update(cpu={"utilization_pct": 250})), "<= 100"),
        (_bad(lambda d: d.update(junk=1, cpu={"utilization_pct": 250})), "<= 100"),
        (_bad(lambda d: d.update(junk=1, ts="1970-01-01T00:00:00Z")), "outside"),
        (_bad(lambda d: d.update(junk="x" * 300_000)), "bytes, more than"),
        (_bad(lambda d: d["host"].update(host_id="h" * 10_000)), "$.host.host_id"),
        (_bad(lambda d: d["host"].update(host_id="")), "$.host.host_id"),
        (_bad(lambda d: d["host"].update(host_id='a"b\n')), "$.host.host_id"),
        (_bad(lambda d: d.update(ts="1970-01-01T00:00:00Z")), "outside"),
        (_bad(lambda d: d.update(sender="prom eu")), "$.sender"),
        (_bad(lambda d: d.update(sender="")), "$.sender"),
        (_bad(lambda d: d.update(sender="p" * 129)), "$.sender"),
        (_bad(lambda d: d.update(schema_version=2)), "upgrade the lake writer"),
        (_bad(lambda d: d.update(schema_version=0)), "$.schema_version"),
        (b'{"schema_version": "1", "x": [1, 2', "not valid JSON"),
        (b'{"schema_version": 1, "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "recursion"),
        (b"[" * 50_000, "not a schema-v1 event"),
        (b"not json at all", "not valid JSON"),
        (encode(make_event()).replace(b"host-1", b"host-\xff"), "not UTF-8"),
        (b'{"schema_version":1,"junk":1,"x":"\xff"}', "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_invalid_events_raise_a_clear_schema_error(payload: bytes, fragment: str) -> None:
    with pytest.raises(SchemaError) as info:
        decode(payload)
    assert fragment in str(info.value)


def test_hostile_but_printable_host_ids_are_kept_verbatim() -> None:
    for host_id in ['a"b', "../../etc/passwd", "x'; DROP TABLE raw_metrics; --", "rack 4/ü"]:
        doc = json.loads(encode(make_event()))
        doc["host"]["host_id"] = host_id
        assert decode(json.dumps(doc).encode()).host.host_id == host_id


def test_non_utc_offsets_are_normalized_to_utc() -> None:
    doc = json.loads(encode(make_event()))
    doc["ts"] = "2026-11-27T16:05:10+02:00"
    assert decode(json.dumps(doc).encode()).ts == datetime(2026, 11, 27, 14, 5, 10, tzinfo=UTC)


def test_decode_is_fast_enough_for_the_lake_writer() -> None:
    """A sanity floor, not a benchmark (benchmarks/schema_codec.py measures it)."""
    data = encode(make_event(cpu=schema.Cpu(utilization_pct=1.0)))
    start = time.perf_counter()
    for _ in range(20_000):
        decode(data)
    assert time.perf_counter() - start < 5.0


def _newer_minor_version() -> dict[str, object]:
    """A v1 event as a future collector might send it: new optional fields at three depths."""
    doc = json.loads(encode(make_event(cpu=schema.Cpu(utilization_pct=12.5))))
    doc["power"] = {"package_watts": 31.5, "rails": [1, 2]}
    doc["cpu"]["steal_pct"] = 3.25
    doc["disks"] = [{"mountpoint": "/", "used_pct": 40.0, "smart_ok": True}]
    return doc


def test_a_newer_minor_version_keeps_every_known_field_and_passes_new_ones_through() -> None:
    doc = _newer_minor_version()
    event, original = decode_keeping_unknown(json.dumps(doc).encode())
    assert event.cpu is not None and event.cpu.utilization_pct == 12.5
    assert event.disks[0].used_pct == 40.0
    assert original is not None
    written = json.loads(encode_keeping_unknown(event, original))
    assert written["power"] == doc["power"]
    assert written["cpu"]["steal_pct"] == 3.25
    assert written["disks"][0]["smart_ok"] is True
    assert decode(json.dumps(written).encode()) == event  # and it reads back as the same event


def test_the_written_event_uses_the_validated_values_not_the_original_text() -> None:
    doc = _newer_minor_version()
    doc["ts"] = "2026-11-27T16:05:10+02:00"
    event, original = decode_keeping_unknown(json.dumps(doc).encode())
    written = json.loads(encode_keeping_unknown(event, original))
    assert written["ts"] == "2026-11-27T14:05:10Z"  # the UTC time the lake partition uses


def test_a_current_event_takes_the_fast_path_without_a_copy() -> None:
    assert decode_keeping_unknown(encode(make_event()))[1] is None


@pytest.mark.parametrize(
    ("reading", "carried"),
    [
        (0, 0),
        (schema.INT64_MAX, schema.INT64_MAX),
        (2**63, None),
        (2**64 - 1, None),  # a driver's "unknown"
        (-1, None),
        (1.6, 2),
        (float(2**63), None),
        (float(2**63 - 1024), 2**63 - 1024),  # the largest double below 2**63
        (float("nan"), None),
        (float("inf"), None),
        (None, None),
    ],
)
def test_a_count_is_carried_only_where_every_store_can_hold_it(
    reading: float | None, carried: int | None
) -> None:
    """The collector and ingest bound their counters here: what passes, the writer accepts."""
    count = schema.count_or_none(reading)
    assert count == carried
    if count is not None:
        assert type(count) is int
        event = make_event(disk_io=schema.DiskIo(read_bytes=count))
        assert decode(encode(event)) == event
    elif isinstance(reading, int):
        with pytest.raises(SchemaError):  # what it refuses, the lake writer would quarantine
            decode(encode(make_event(disk_io=schema.DiskIo(read_bytes=reading))))


def test_a_retirement_is_a_tombstone_with_a_time_in_the_events_range() -> None:
    """A hostile header must not stop the evaluator (a datetime of 10**20 ms raises)."""
    from sysmetrics.schema import RETIRED_HEADER, retired_at

    assert retired_at(None, [(RETIRED_HEADER, b"1796361059100")]) == 1796361059100
    assert retired_at(b"{}", [(RETIRED_HEADER, b"1796361059100")]) is None
    assert retired_at(None, [(RETIRED_HEADER, b"100000000000000000000")]) is None
    assert retired_at(None, [(RETIRED_HEADER, b"-5")]) is None
    assert retired_at(None, [("other", b"1796361059100")]) is None
