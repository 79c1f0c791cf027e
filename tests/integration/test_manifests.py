"""The hourly job finds new lake files through the lake writer's round manifests: a refresh
costs a few list calls whatever the size of the lake, late files for old hours are found the
same way, and a run that crashed before recording what it read recomputes those hours. A host's
retirement on the topic reaches the silent-host rule the same way."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from sysmetrics.batch.hourly import load, new_files_from_manifests, run_hour
from sysmetrics.config import Settings
from sysmetrics.lake import layout
from sysmetrics.lake.store import LakeStore
from sysmetrics.lake.writer import LakeWriter
from sysmetrics.stream.kafka_config import producer_config
from sysmetrics.stream.producer import retirement_headers
from sysmetrics.timeutil import hour_floor
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.events import as_messages, simulated
from tests.support.kafka_io import produce
from tests.support.lake import data_files
from tests.support.lakes import steady_host
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker
NOW = hour_floor(datetime.now(UTC))
HOURS = 30


def write_through_the_writer(
    settings: Settings,
    events: list,  # type: ignore[type-arg]
    retirements: tuple[tuple[bytes, int], ...] = (),
) -> LakeWriter:
    """The lake writer fed ``events``, then ``retirements`` (host key, Unix ms) as the ingest
    receiver and ``alert --forget`` publish them; returns it once it flushed all."""
    writer = LakeWriter(settings)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        before = writer.stats.records
        produce(settings, as_messages(events))
        producer = Producer(producer_config(settings))
        for key, at_ms in retirements:
            producer.produce(settings.topic, None, key, headers=retirement_headers(at_ms))
        assert producer.flush(60) == 0
        expected = len(events) + len(retirements)
        wait_for(lambda: writer.stats.records - before >= expected, 120, "the writer")
    finally:
        writer.stop.set()
        thread.join(60)
    return writer


def test_refresh_reads_manifests_not_the_lake(tansu_settings: Settings) -> None:
    settings = tansu_settings.model_copy(update={"flush_records": 500, "flush_seconds": 1.0})
    # 30 hours of 3 hosts: 30 hour folders, far more than a refresh should list.
    past = simulated(3, NOW - HOURS * timedelta(hours=1), HOURS * 3600.0, interval_s=60.0)
    write_through_the_writer(settings, past)
    manifests = Path(settings.lake_url) / layout.manifest_dir(settings.topic)
    assert list(manifests.rglob("*.json")), "the writer wrote round manifests"

    wh = DuckDBWarehouse(settings.warehouse_url)
    try:
        store = LakeStore(settings.lake_url)
        run_hour(settings, wh, store, NOW)
        # Every hour the manifests name was loaded, though the run was for the current hour.
        assert wh.scalar("SELECT COUNT(*) FROM {raw}") == len(past)
        assert wh.scalar("SELECT COUNT(DISTINCT hour) FROM {hourly}") >= HOURS
        first_calls = dict(store.calls)

        # A laptop returns with samples for an hour 20 h old: the next refresh finds its file
        # through the manifest too, and lists no hour folder of the lake.
        old_hour = NOW - timedelta(hours=20)
        late = simulated(1, old_hour + timedelta(minutes=5), 600.0, seed=99)
        write_through_the_writer(settings, late)
        store = LakeStore(settings.lake_url)
        again = run_hour(settings, wh, store, NOW)
        assert old_hour in again.recomputed
        assert wh.scalar("SELECT COUNT(*) FROM {raw}") == len(past) + len(late)
        # Listed: the manifest root, the open manifest folders, the watermarks, the late
        # markers, and the run's own hour (empty so far: its raw and its curated folder, as a
        # first load reads the curated version if there is one); never the 30 hour folders
        # (the first run listed each new hour once to load it from scratch).
        assert store.calls["list"] <= 7, store.calls
        assert first_calls["list"] > HOURS

        # Nothing new: a refresh reads nothing and lists as little.
        store = LakeStore(settings.lake_url)
        quiet = run_hour(settings, wh, store, NOW)
        assert quiet.read == 0 and quiet.recomputed == [NOW]
        # Reads: each partition's watermark, twice (completeness, and the manifests' check).
        reads = 2 * settings.topic_partitions
        assert store.calls["list"] <= 7 and store.calls["read"] <= reads, store.calls
    finally:
        wh.close()
    assert len(data_files(Path(settings.lake_url))) > HOURS


def test_a_crash_after_loading_recomputes_the_hours_the_manifests_named(
    tansu_settings: Settings,
) -> None:
    """The load committed but the run died before computing and recording: the next run
    reads no file twice, yet recomputes the hour its unrecorded manifests named."""
    settings = tansu_settings.model_copy(update={"flush_records": 500, "flush_seconds": 1.0})
    old_hour = NOW - timedelta(hours=5)
    write_through_the_writer(settings, simulated(2, old_hour, 3600.0, interval_s=30.0))
    wh = DuckDBWarehouse(settings.warehouse_url)
    try:
        store = LakeStore(settings.lake_url)
        run_hour(settings, wh, store, NOW)
        more = simulated(2, old_hour + timedelta(minutes=1), 600.0, seed=5, interval_s=30.0)
        write_through_the_writer(settings, more)
        found = new_files_from_manifests(wh, store, settings.topic, datetime.now(UTC))
        assert found is not None and old_hour in found.by_hour
        load(wh, store, settings.topic, old_hour, candidates=found.by_hour[old_hour])
        # ...the process dies here: no aggregate, no manifest recorded.
        stale = wh.scalar("SELECT SUM(samples) FROM {hourly} WHERE hour = @h", h=old_hour)
        result = run_hour(settings, wh, LakeStore(settings.lake_url), NOW)
        assert result.read == 0 and old_hour in result.recomputed
        fresh = wh.scalar("SELECT SUM(samples) FROM {hourly} WHERE hour = @h", h=old_hour)
        assert fresh == wh.scalar("SELECT COUNT(*) FROM {raw} WHERE hour = @h", h=old_hour)
        assert fresh > stale
    finally:
        wh.close()


def test_a_retirement_on_the_topic_spares_its_host_the_silent_host_rule(
    tansu_settings: Settings,
) -> None:
    """Three hosts stop after the same hour: one retired after its last sample (a target
    Prometheus dropped: the ingest receiver's tombstone) is gone, not silent; one retired before
    its last sample, and one never retired, raise ``host_silent`` in the next hour. Tombstones
    whose key is no host id are quarantined, not taken for retirements."""
    settings = tansu_settings.model_copy(update={"flush_records": 500, "flush_seconds": 1.0})
    stopped = NOW - timedelta(hours=2)
    events = [
        *steady_host("retired", stopped, cpu=10.0, samples=60, interval_s=60),
        *steady_host("early", stopped, cpu=10.0, samples=60, interval_s=60),
        *steady_host("gone", stopped, cpu=10.0, samples=60, interval_s=60),
        *steady_host("busy", stopped, cpu=10.0, samples=120, interval_s=60),
    ]
    last_ms = int((stopped + timedelta(minutes=59)).timestamp() * 1000)
    retirements = (
        (b"retired", last_ms + 130_000),
        (b"early", last_ms - 1000),
        (b"", last_ms),
        (b"bad\nhost", last_ms),
    )
    writer = write_through_the_writer(settings, events, retirements)
    assert writer.stats.retirements == 2 and writer.stats.quarantined == 2
    wh = DuckDBWarehouse(settings.warehouse_url)
    try:
        store = LakeStore(settings.lake_url)
        run_hour(settings, wh, store, stopped)
        store = LakeStore(settings.lake_url)
        run_hour(settings, wh, store, stopped + timedelta(hours=1))
        # The retirements came with the manifests: no listing of the lake for them.
        assert store.calls["list"] <= 7, store.calls
        retired = wh.rows("SELECT host_id FROM {retired} ORDER BY host_id")
        silent = wh.rows(
            "SELECT host_id FROM {alerts} WHERE rule = 'host_silent' AND hour = @h",
            h=stopped + timedelta(hours=1),
        )
    finally:
        wh.close()
    assert [r["host_id"] for r in retired] == ["early", "retired"]
    assert sorted(r["host_id"] for r in silent) == ["early", "gone"]
