"""Whatever values an agent sends, the mapping makes an event the lake writer accepts: a reading
it cannot carry becomes null, never an event the writer would quarantine (and with it the whole
sample). Hypothesis draws facts of every mapped series with extreme values."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from sysmetrics.ingest.mapping import (
    OTEL_METRICS,
    OTEL_RESOURCE,
    REMOTE_WRITE_SERIES,
    HostState,
    Source,
    build_event,
)
from sysmetrics.schema import INT64_MAX, decode, encode

T0 = 1_764_547_200_000
Fact = tuple[str, tuple[str, ...], float]
"""A drawn row: (name, label values, value); a sample's rows become its facts, the last of a
repeated (name, labels) winning, as in the decoders' dicts."""

EXTREMES = st.sampled_from(
    [0.0, -0.0, 1.0, -1.0, 0.5, 100.0, 100.5, 1000.5, -300.0, 65535.0, 5e-324, 1e308, -1e308,
     1.7e9, 3e10, 2.0**64, float(INT64_MAX), 9.2e18, 6e18, 5e18]  # the last: two pass 64 bits
) | st.floats(allow_nan=False, allow_infinity=False)  # fmt: skip
"""Finite only: the assembler keeps only finite values (a NaN is a stale marker) before the
mapping sees them (tests/unit/test_ingest_assembly.py)."""
LABELS = st.sampled_from(
    ["0", "1", "idle", "user", "privileged", "read", "write", "used", "free", "/", "C:",
     "_Total", "eth0", "lo", "", "receive", "transmit", "x" * 300]
)  # fmt: skip


def facts_of(names: list[tuple[str, tuple[str, ...]]]) -> st.SearchStrategy[list[Fact]]:
    """A sample: each mapped series with 0-3 rows (label values from a small set, so rows of one
    series meet on the same device, core or mount)."""
    per_series = [
        st.lists(st.tuples(st.just(name), st.tuples(*(LABELS for _ in keep)), EXTREMES), max_size=3)
        for name, keep in names
    ]
    return st.tuples(*per_series).map(lambda rows: [fact for series in rows for fact in series])


def _valid_events(source: Source, samples: list[list[Fact]]) -> None:
    state = HostState()
    for i, facts in enumerate(samples):
        readings = {(name, labels): value for name, labels, value in facts}
        event = build_event(source, "host-1", T0 + 10_000 * i, readings, state)
        assert decode(encode(event)) == event  # the lake writer's decoder accepts it as is


def _series(source: Source) -> list[tuple[str, tuple[str, ...]]]:
    return [(name, keep) for name, (src, keep) in REMOTE_WRITE_SERIES.items() if src == source]


CHECKS = hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@CHECKS
@given(st.lists(facts_of(_series("node_exporter")), min_size=1, max_size=3))
@example(  # found by hand first, then by the draw: two interfaces' total passed 64 bits
    [[("node_network_receive_bytes_total", (nic,), 6e18) for nic in ("eth0", "eth1")]]
)
def test_any_node_exporter_values_make_a_valid_event(samples: list[list[Fact]]) -> None:
    _valid_events("node_exporter", samples)


@CHECKS
@given(st.lists(facts_of(_series("windows_exporter")), min_size=1, max_size=3))
@example(  # found by the draw: the mean of the cores' frequencies overflowed to inf
    [[("windows_cpu_core_frequency_mhz", (core,), 1e308) for core in ("0", "1")]]
)
def test_any_windows_exporter_values_make_a_valid_event(samples: list[list[Fact]]) -> None:
    _valid_events("windows_exporter", samples)


OTEL = [*OTEL_METRICS.items(), (OTEL_RESOURCE, ("host.name", "os.type", "host.arch"))]


@CHECKS
@given(st.lists(facts_of(OTEL), min_size=1, max_size=3))
def test_any_otel_collector_values_make_a_valid_event(samples: list[list[Fact]]) -> None:
    _valid_events("otel", samples)
