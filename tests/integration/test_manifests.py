"""The hourly job finds new lake files through the lake writer's round manifests: a refresh
costs a few list calls whatever the size of the lake, late files for old hours are found the
same way, and a run that crashed before recording what it read recomputes those hours."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sysmetrics.batch.hourly import load, new_files_from_manifests, run_hour
from sysmetrics.config import Settings
from sysmetrics.lake import layout
from sysmetrics.lake.store import LakeStore
from sysmetrics.lake.writer import LakeWriter
from sysmetrics.timeutil import hour_floor
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.events import as_messages, simulated
from tests.support.kafka_io import produce
from tests.support.lake import data_files
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker
NOW = hour_floor(datetime.now(UTC))
HOURS = 30


def write_through_the_writer(settings: Settings, events: list) -> None:  # type: ignore[type-arg]
    writer = LakeWriter(settings)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        before = writer.stats.records
        produce(settings, as_messages(events))
        wait_for(lambda: writer.stats.records - before >= len(events), 120, "the writer")
    finally:
        writer.stop.set()
        thread.join(60)


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
