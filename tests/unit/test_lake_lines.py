"""The lake line of one message: the compiled validator's fast path (native/, optional) and the
Python decoder write the same event, and the validator vouches only for what the Python decoder
accepts: valid events of every shape, a newer minor version, poison, and thousands of mutants."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sysmetrics.collect.sampler import Sampler
from sysmetrics.lake import layout, lines
from sysmetrics.schema import (
    Battery,
    Gpu,
    SchemaError,
    decode,
    decode_keeping_unknown,
    encode,
    encode_time,
)
from sysmetrics.stream.simulator import generate
from tests.unit.test_schema import make_event

RECEIVED = datetime(2026, 12, 1, 17, 0, 5, tzinfo=UTC)


@pytest.fixture(params=["native", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setattr(lines, "_VALIDATOR", None)
    elif not lines.fast_path_available():
        pytest.skip("the compiled codec is not built (make install-dev needs cargo)")
    return str(request.param)


def _valid_events() -> Iterator[bytes]:
    start = datetime(2026, 11, 27, 23, 59, 50, tzinfo=UTC)  # across an hour and a day
    for _, event in generate(6, start, 30, 10, seed=7):
        yield encode(event)
    yield encode(Sampler(interval_s=10.0).sample())  # this machine, as the collector sends it
    yield encode(
        make_event(
            gpus=[Gpu(index=0, name="H200", utilization_pct=99.5, power_watts=700.25)],
            battery=Battery(percent=81.0, plugged_in=True, health_pct=101.5, cycle_count=12),
            source="node_exporter",
            sender="prom-eu-1",
            ts=datetime(2026, 11, 27, 14, 5, 10, 123456, tzinfo=UTC),
        )
    )
    yield encode(make_event()).replace(b"host-1", b'r\\u00e4ck \\"4\\"/\\ud83d\\ude00')


def _python_time(data: bytes) -> int:
    return lines.micros(decode_keeping_unknown(data)[0].ts)


_VALID_EVENTS = list(_valid_events())


# Ids by position: one event is this machine's live sample, whose length changes between the
# collections of the two xdist workers, which must name the same tests.
@pytest.mark.parametrize(
    "data", _VALID_EVENTS, ids=[f"event{i}" for i in range(len(_VALID_EVENTS))]
)
def test_a_valid_event_becomes_the_same_stamped_event_on_both_paths(path: str, data: bytes) -> None:
    ts_us, line, newer = lines.lake_line(data, RECEIVED, encode_time(RECEIVED))
    expected = decode(data)
    expected.received_at = RECEIVED
    assert decode(line) == expected
    assert ts_us == lines.micros(expected.ts) and newer is None
    if path == "native":
        assert lines.vouched_time(data) == ts_us  # the fast path took it
        assert line.startswith(data[:-5])  # the message's own bytes, stamped


def test_the_validator_builds_from_this_versions_schema() -> None:
    """A keyword the compiled validator does not know would be a check it skips: it refuses
    to build instead, and this test says so when the schema grows one."""
    native = pytest.importorskip("sysmetrics_native", reason="the compiled codec is not built")
    from sysmetrics.schema import strict_json_schema

    native.EventValidator(json.dumps(strict_json_schema()), "ts")
    with pytest.raises(ValueError, match="not supported"):
        schema = strict_json_schema()
        schema["$defs"]["Host"]["properties"]["hostname"]["minLength"] = 1
        native.EventValidator(json.dumps(schema), "ts")


def _doc() -> dict[str, object]:
    return json.loads(encode(make_event()))


def _with(change: Callable[[dict], object]) -> bytes:  # type: ignore[type-arg]
    doc = _doc()
    change(doc)
    return json.dumps(doc, separators=(",", ":")).encode()


NOT_VOUCHED = {
    # accepted by the Python decoder, but not this version's plain form
    "newer minor": _with(lambda d: d["host"].update(rack="r4")),
    "offset time": _with(lambda d: d.update(ts="2026-11-27T16:05:10+02:00")),
    "seven fraction digits": _with(lambda d: d.update(ts="2026-11-27T14:05:10.1234567Z")),
    "duplicate key": encode(make_event()).replace(b'"cpu":null', b'"cpu":null,"cpu":null'),
    "whitespace tail": encode(make_event())[:-1] + b" }",
    # refused by the Python decoder
    "garbage": b"not json",
    "empty": b"",
    "truncated": encode(make_event())[:-30] + b',"received_at":null}',
    "wrong type": _with(lambda d: d.update(cpu={"utilization_pct": "high"})),
    "over the range": _with(lambda d: d.update(cpu={"utilization_pct": 100.0000001})),
    "an int as float": _with(lambda d: d.update(memory={"total_bytes": 1.0})),
    "negative counter": _with(lambda d: d.update(disk_io={"read_bytes": -1})),
    "huge int": _with(lambda d: d.update(disk_io={"read_bytes": 2**64})),
    "counter beyond int64": _with(lambda d: d.update(disk_io={"read_bytes": 2**63})),
    "bad event id": _with(lambda d: d.update(event_id="not-a-uuid")),
    "control char in host": _with(lambda d: d["host"].update(host_id="a\nb")),
    "empty host": _with(lambda d: d["host"].update(host_id="")),
    "long label": _with(lambda d: d["host"].update(hostname="ü" * 257)),
    "missing ts": _with(lambda d: d.pop("ts")),
    "before 2000": _with(lambda d: d.update(ts="1999-12-31T23:59:59Z")),
    "Feb 30": _with(lambda d: d.update(ts="2026-02-30T00:00:00Z")),
    "schema 2": _with(lambda d: d.update(schema_version=2)),
    "schema true": _with(lambda d: d.update(schema_version=True)),
    "lone surrogate": encode(make_event()).replace(b"host-1", b"\\ud800"),
    "trailing data": encode(make_event()) + b"{}",
    "invalid utf-8": encode(make_event()).replace(b"host-1", b"host-\xff"),
}


@pytest.mark.parametrize("name", list(NOT_VOUCHED))
def test_what_the_validator_does_not_vouch_for_goes_to_the_python_decoder(name: str) -> None:
    data = NOT_VOUCHED[name]
    if data.endswith(b'"received_at":null}') and lines.fast_path_available():
        assert lines.vouched_time(data) is None
    try:
        expected = _python_time(data)
    except SchemaError as exc:
        with pytest.raises(SchemaError, match=re.escape(str(exc))):
            lines.lake_line(data, RECEIVED, encode_time(RECEIVED))
    else:
        assert lines.lake_line(data, RECEIVED, encode_time(RECEIVED))[0] == expected


def test_a_newer_minor_version_keeps_its_fields_and_names_them(path: str) -> None:
    doc = _doc()
    doc["power"] = {"package_watts": 31.5}
    _, line, newer = lines.lake_line(json.dumps(doc).encode(), RECEIVED, encode_time(RECEIVED))
    assert json.loads(line)["power"] == {"package_watts": 31.5}
    assert newer == ["power"]


def _mutants(seeds: list[bytes], count: int) -> Iterator[bytes]:
    rng = random.Random(2026)
    alphabet = b'{}[]":,.-+eE0123456789tfnulZT\\ abx\x00\xc3'
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) - 20)  # keep the unstamped end
            kind = rng.randrange(3)
            if kind == 0:
                data[at] = rng.choice(alphabet)
            elif kind == 1:
                del data[at : at + rng.randint(1, 4)]
            else:
                data[at:at] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
        yield bytes(data)


def test_the_validator_vouches_only_for_what_the_python_decoder_accepts_as_the_same_event() -> None:
    """Soundness on 20,000 mutants of valid events (a flipped, dropped or added character):
    where the validator says yes, the Python decoder must accept the event with the same time;
    where it says no, nothing is lost (the Python decoder decides)."""
    pytest.importorskip("sysmetrics_native", reason="the compiled codec is not built")
    seeds = list(_valid_events())
    vouched = 0
    for data in _mutants(seeds, 20_000):
        ts_us = lines.vouched_time(data)
        if ts_us is None:
            continue
        vouched += 1
        event = decode(data)  # raises if the validator vouched for something invalid
        assert lines.micros(event.ts) == ts_us, data
    assert vouched > 1_000  # the mutants that stay valid (a digit for a digit) are vouched


def test_an_hour_number_is_the_event_hour() -> None:
    ts = datetime(2026, 11, 27, 23, 59, 59, 999999, tzinfo=UTC)
    hour = lines.micros(ts) // layout.MICROS_PER_HOUR
    assert layout.hour_start(hour) == layout.hour_of(ts) == datetime(2026, 11, 27, 23, tzinfo=UTC)
    assert layout.hour_start(hour + 1) == ts + timedelta(microseconds=1)
    assert lines.from_micros(lines.micros(ts)) == ts
