"""The lake on object stores, through their real APIs: Google Cloud Storage (fake-gcs-server)
and S3 (moto's server): create-if-absent, the writer through an outage, compaction and
retention. The same tests on both."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import Settings
from sysmetrics.lake import layout
from sysmetrics.lake.store import LakeStore
from sysmetrics.lake.writer import LakeWriter
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.events import as_messages, simulated
from tests.support.gcs import FakeGcs
from tests.support.kafka_io import produce
from tests.support.s3 import FakeS3
from tests.support.waiting import wait_for

START = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@dataclass
class ObjectStore:
    settings: dict[str, str]
    """What points Settings at it (lake_url, endpoint…)."""
    stop: Callable[[], None]
    start: Callable[[], None]

    def store(self) -> LakeStore:
        return LakeStore(
            self.settings["lake_url"],
            gcs_endpoint=self.settings.get("gcs_endpoint"),
            project=self.settings.get("gcp_project"),
            s3_endpoint=self.settings.get("s3_endpoint"),
        )


@pytest.fixture(params=["gcs", "s3"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "gcs":
        gcs = FakeGcs(tmp_path / "gcs")
        gcs.start()
        gcs.create_bucket("lake")
        # Same port and filesystem root on restart: the objects are back.
        urls = {"lake_url": "gs://lake/prod", "gcs_endpoint": gcs.endpoint, "gcp_project": "test"}
        yield ObjectStore(urls, gcs.stop, gcs.start)
        gcs.stop()
        return
    s3 = FakeS3()
    s3.start_server()
    s3.create_bucket("lake")
    yield ObjectStore({"lake_url": "s3://lake/prod", "s3_endpoint": s3.endpoint}, s3.stop, s3.start)
    s3.close()


def test_create_if_absent_uses_preconditions(object_store: ObjectStore) -> None:
    store = object_store.store()
    assert store.create("raw/x/a.jsonl", b"first\n") is True
    assert store.create("raw/x/a.jsonl", b"second\n") is False
    assert store.get("raw/x/a.jsonl") == b"first\n"
    store.put("_watermarks/t/p0000.json", b"{}")
    store.put("_watermarks/t/p0000.json", b'{"v": 2}')
    assert store.get("_watermarks/t/p0000.json") == b'{"v": 2}'


@pytest.mark.broker
@pytest.mark.slow
def test_writer_survives_a_storage_outage_and_the_hour_loads_from_the_store(
    tansu_settings: Settings, object_store: ObjectStore
) -> None:
    """Broker-independent: runs once, on Tansu."""
    settings = tansu_settings.model_copy(
        update={**object_store.settings, "flush_seconds": 1.0, "lake_compression": "zstd"}
    )
    events = simulated(5, START, 1200)
    messages = as_messages(events)
    produce(settings, messages[:200])
    writer = LakeWriter(settings, store=object_store.store())
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: writer.stats.records == 200, 60, "the first 200 events in the store")
        object_store.stop()  # storage down
        produce(settings, messages[200:])
        # One failure is a whole retry cycle of the store's client (gcsfs: 6 tries over ~30 s),
        # so one is enough: the recovery below can only come from the writer trying again.
        wait_for(lambda: writer.stats.store_failures >= 1, 120, "a failed flush while it is down")
        time.sleep(5)
        assert writer.stats.records == 200, "nothing may be committed while storage is down"
        object_store.start()
        wait_for(lambda: writer.stats.records == len(events), 180, "recovery after the outage")
    finally:
        writer.stop.set()
        thread.join(60)

    store = object_store.store()
    files = store.glob(f"{layout.raw_root(settings.topic)}/*/*/*/*/*.jsonl.zst")
    assert files and all(f.endswith(".jsonl.zst") for f in files)
    wh = DuckDBWarehouse(settings.warehouse_url)
    try:
        loaded = sum(run_hour(settings, wh, store, START.replace(hour=h)).rows for h in (9, 10))
        ids = Counter(r["event_id"] for r in wh.native_query("SELECT event_id FROM raw_metrics"))
    finally:
        wh.close()
    assert loaded == len(events)
    assert ids == Counter({e.event_id: 1 for e in events})


def test_compaction_verify_and_prune(object_store: ObjectStore, tmp_path: Path) -> None:
    """The curated layer on the store's API: the hour compacted from it equals its raw events,
    verifies, and its raw objects are pruned only then."""
    from sysmetrics.lake.compaction import (
        compact_hour,
        current_manifest,
        prune_hour,
        raw_files,
        verify_hour,
    )
    from sysmetrics.schema import decode, encode

    store = object_store.store()
    events = simulated(6, START, 3600.0)
    for n in range(0, len(events), 500):
        chunk = events[n : n + 500]
        name = layout.batch_name("machine_metrics", 0, n, n + len(chunk) - 1)
        path = f"{layout.hour_dir('machine_metrics', START)}/{name}"
        assert store.create(path, b"\n".join(encode(e) for e in chunk) + b"\n")
    done = compact_hour(store, "machine_metrics", START)
    manifest = current_manifest(store, "machine_metrics", START)
    assert manifest is not None and done.rows == len(events) == manifest.rows
    local = tmp_path / "curated.parquet"
    local.write_bytes(
        store.get(f"{layout.curated_hour_dir('machine_metrics', START)}/{manifest.file}") or b""
    )
    import pyarrow.parquet as pq

    rows = pq.read_table(local).to_pylist()
    assert sorted(r["event_id"] for r in rows) == sorted(e.event_id for e in events)
    by_id = {e.event_id: e for e in events}
    sample = rows[123]
    assert (
        decode(encode(by_id[sample["event_id"]])).cpu.utilization_pct
        == sample["cpu"]["utilization_pct"]
    )
    assert verify_hour(store, "machine_metrics", START).ok
    pruned = prune_hour(
        store, "machine_metrics", START, START + timedelta(days=9), 7, lookback_hours=48
    )
    assert pruned is not None and pruned.ok and not raw_files(store, "machine_metrics", START)
