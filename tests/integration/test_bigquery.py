"""The BigQuery warehouse through the real BigQuery REST API of bqemulator, with the lake on
fake-gcs-server: load jobs from gs://, the same SQL as DuckDB, idempotent re-runs.

Left out because the emulator cannot do them (platform notes): gzipped NDJSON loads,
``table$YYYYMMDDHH`` decorators, partition metadata from DDL, APPROX_QUANTILES.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest

from sysmetrics import prompb
from sysmetrics.batch.hourly import record_retirements, run_hour
from sysmetrics.config import Settings
from sysmetrics.lake import layout
from sysmetrics.lake.compaction import compact_hour, current_manifest
from sysmetrics.lake.store import LakeStore
from sysmetrics.remote_read.query import Limits, read
from sysmetrics.schema import DiskUsage
from sysmetrics.warehouse import sql
from sysmetrics.warehouse.bigquery import BigQueryWarehouse
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.bigquery import BINARY, BigQueryEmulator
from tests.support.gcs import FakeGcs
from tests.support.lakes import HOUR14, LakeBuilder, steady_host

pytestmark = pytest.mark.skipif(
    not BINARY.exists(), reason="bqemulator missing: run 'make install-dev' (creates .bqemu/)"
)
HOSTILE = "x'; DROP TABLE raw_metrics; --"


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[tuple[FakeGcs, BigQueryEmulator]]:
    gcs = FakeGcs(tmp_path / "gcs")
    gcs.start()
    gcs.create_bucket("lake")
    bq = BigQueryEmulator(tmp_path / "gcs", tmp_path / "bqemulator.log")
    bq.start()
    yield gcs, bq
    bq.stop()
    gcs.stop()


def fill_lake(local: Path, store: LakeStore) -> None:
    lake = LakeBuilder(local)
    lake.add_batch(steady_host("web-1", HOUR14, cpu=25.0, samples=240))
    # gpu-9's root filesystem is mounted twice (a bind mount): its disk totals count it once
    root = DiskUsage(
        mountpoint="/", device="/dev/sda2", total_bytes=1000, used_bytes=400, used_pct=40.0
    )
    apfs = DiskUsage(
        mountpoint="/Volumes/A", device="/dev/disk3s1", fstype="apfs", total_bytes=50, used_bytes=5
    )
    mounts = [
        root,
        msgspec.structs.replace(root, mountpoint="/srv"),
        DiskUsage(mountpoint="/b"),
        apfs,  # and another volume of its container: its size once, each one's used bytes
        msgspec.structs.replace(apfs, mountpoint="/Volumes/B", device="/dev/disk3s2"),
    ]
    lake.add_batch(
        [
            msgspec.structs.replace(e, disks=mounts)
            for e in steady_host("gpu-9", HOUR14, cpu=97.0, temp=91.0, samples=300)
        ]
    )
    lake.add_batch(steady_host(HOSTILE, HOUR14, cpu=50.0, samples=100))
    lake.add_batch(steady_host("web-1", HOUR14, cpu=25.0, samples=240)[:50])  # a duplicate file
    for path in local.rglob("*.jsonl"):
        assert store.create(str(path.relative_to(local)), path.read_bytes())


def tables(wh: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "hourly": [
            tuple(r.values())
            for r in wh.rows(
                "SELECT * FROM {hourly} ORDER BY host_id"  # every column: averages too
            )
        ],
        "alerts": [
            tuple(r.values())
            for r in wh.rows(
                "SELECT host_id, rule, severity, value FROM {alerts} ORDER BY host_id, rule"
            )
        ],
        "raw": [
            tuple(r.values())
            for r in wh.rows("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM {raw}")
        ],
        "disk totals": [
            tuple(r.values())
            for r in wh.rows(
                "SELECT DISTINCT host_id, disk_total_bytes, disk_used_bytes FROM {raw} "
                "ORDER BY host_id"
            )
        ],
        # Each mount and GPU as JSON (the host page's per-device charts): same in both engines.
        "devices": sorted(
            {
                (r["host_id"], json.dumps(json.loads(r["disks_json"])), r["gpus_json"] != "[]")
                for r in wh.rows("SELECT host_id, disks_json, gpus_json FROM {raw}")
            }
        ),
    }


def strip_later_fields(store: LakeStore, topic: str, hour: datetime) -> None:
    """The hour's curated file and manifest as compaction wrote them before schema v1.2 (no
    SHA-256 of the file: manifests hold it since 2026-12-05)."""
    manifest = current_manifest(store, topic, hour)
    assert manifest is not None
    folder = layout.curated_hour_dir(topic, hour)
    data = store.get(f"{folder}/{manifest.file}")
    assert data is not None
    stripped = io.BytesIO()
    table = pq.read_table(io.BytesIO(data)).drop_columns(["source", "sender"])
    pq.write_table(table, stripped)
    store.put(f"{folder}/{manifest.file}", stripped.getvalue())
    fields = [f for f in manifest.fields if f not in ("source", "sender")]
    store.put(
        f"{folder}/{layout.curated_manifest_name(manifest.version)}",
        json.dumps({**asdict(manifest), "fields": fields, "sha256": ""}).encode(),
    )


def remote_read(wh: Any, store: LakeStore, func: str = "") -> list[tuple[Any, ...]]:
    """Prometheus' remote read of raw and hourly CPU for every host but one; with the hint
    ``func: series`` (its series API), each mount's series too, and no sample."""
    request = prompb.ReadRequest()
    start = int(HOUR14.timestamp() * 1000)
    query = request.queries.add(start_timestamp_ms=start, end_timestamp_ms=start + 3_600_000)
    names = "sysmetrics_cpu_utilization_percent.*" + (
        "|sysmetrics_filesystem_used_percent" * bool(func)
    )
    query.matchers.add(type=prompb.MATCH_REGEX, name="__name__", value=names)
    query.matchers.add(type=prompb.MATCH_NOT_EQUAL, name="host_id", value="web-1")
    query.hints.func = func
    body = read(wh, store, "machine_metrics", request.SerializeToString(), Limits())
    return [
        (
            tuple((label.name, label.value) for label in ts.labels),
            len(ts.samples),
            ts.samples[-1] if ts.samples else None,
        )
        for ts in prompb.ReadResponse.FromString(body).results[0].timeseries
    ]


def test_bigquery_load_aggregate_and_rerun_match_duckdb(
    cloud: tuple[FakeGcs, BigQueryEmulator], settings: Settings, tmp_path: Path
) -> None:
    gcs, bq = cloud
    store = LakeStore("gs://lake/prod", gcs_endpoint=gcs.endpoint, project=bq.project)
    fill_lake(tmp_path / "local", store)
    cloud_settings = settings.model_copy(
        update={
            "lake_url": "gs://lake/prod",
            "gcs_endpoint": gcs.endpoint,
            "gcp_project": bq.project,
            "warehouse_url": f"bigquery://{bq.project}/sysmetrics",
            "bigquery_endpoint": bq.endpoint,
        }
    )
    wh = BigQueryWarehouse(bq.project, "sysmetrics", bq.endpoint)
    try:
        result = run_hour(cloud_settings, wh, store, HOUR14)
        assert (result.files, result.rows) == (4, 640)
        first = tables(wh)
        for _ in range(2):
            run_hour(cloud_settings, wh, store, HOUR14)
        assert tables(wh) == first  # re-runs replace the hour: same rows
        # A late file (new samples plus copies of loaded ones): the incremental path reads
        # only it, adds only the new events.
        late_dir = tmp_path / "late"
        late = steady_host("late-3", HOUR14, cpu=40.0, samples=30)
        LakeBuilder(late_dir).add_batch(late + steady_host("web-1", HOUR14, 25.0, samples=10))
        for path in late_dir.rglob("*.jsonl"):
            assert store.create(str(path.relative_to(late_dir)), path.read_bytes())
        result = run_hour(cloud_settings, wh, store, HOUR14)
        assert (result.read, result.added) == (1, 30)
        second = tables(wh)
        read_from_bigquery = remote_read(wh, store)
        series_from_bigquery = remote_read(wh, store, "series")
        # `sysmetrics query`'s reader: the first rows only, in the engine's own dialect.
        statement = "SELECT host_id FROM sysmetrics.raw_metrics ORDER BY event_id"
        with contextlib.closing(wh.native_rows(statement)) as rows:
            assert list(itertools.islice(rows, 2)) == wh.native_query(statement)[:2]
        assert len(wh.native_query(statement)) == 670
    finally:
        wh.close()
    assert first["raw"] == [(640, 640)] and second["raw"] == [(670, 670)]
    hosts = {dict(labels)["host_id"] for labels, _, _ in read_from_bigquery}
    assert hosts == {"gpu-9", HOSTILE, "late-3"}
    names = {dict(labels)["__name__"] for labels, _, _ in read_from_bigquery}
    assert len(read_from_bigquery) == 3 * len(names) and len(names) == 5  # raw + 4 hourly
    mounts = [
        labels for labels, samples, _ in series_from_bigquery if ("mountpoint", "/") in labels
    ]
    assert len(mounts) == 3 and {n for _, n, _ in series_from_bigquery} == {0}
    assert {labels for labels, _, _ in read_from_bigquery} < {s[0] for s in series_from_bigquery}
    assert [row[0] for row in first["hourly"]] == ["gpu-9", "web-1", HOSTILE]
    assert ("gpu-9", 1050, 410) in first["disk totals"]
    assert ("gpu-9", "cpu_p95_high", "warning", 97.0) in first["alerts"]
    # Held for longer than HighTemperature's `for` (the run-length query on BigQuery too).
    assert ("gpu-9", "temperature_high", "critical", 91.0) in first["alerts"]

    # The same lake through DuckDB (gcsfs) gives the same tables: one SQL, two engines.
    duck = DuckDBWarehouse(settings.warehouse_url)
    try:
        run_hour(
            cloud_settings.model_copy(update={"warehouse_url": settings.warehouse_url}),
            duck,
            store,
            HOUR14,
        )
        assert tables(duck) == second  # from scratch in DuckDB = incremental in BigQuery
        # Remote read: the same series and samples from both engines.
        assert remote_read(duck, store) == read_from_bigquery
        assert remote_read(duck, store, "series") == series_from_bigquery
    finally:
        duck.close()

    # Compacted to curated Parquet: a BigQuery rebuild loads the Parquet file alone, then with
    # a raw file that came after (a PARQUET load job, then NDJSON), and its tables equal
    # DuckDB's from the raw files alone.
    assert compact_hour(store, cloud_settings.topic, HOUR14).rows == 670
    wh = BigQueryWarehouse(bq.project, "sysmetrics", bq.endpoint)
    try:
        alone = run_hour(cloud_settings, wh, store, HOUR14, rebuild=True)
        assert (alone.read, alone.rows) == (1, 670)  # the Parquet file alone, read without dedup
        assert tables(wh) == second
        # The same file as compacted before schema v1.2 (no source or sender column): the
        # same tables, its events our collector's.
        strip_later_fields(store, cloud_settings.topic, HOUR14)
        assert run_hour(cloud_settings, wh, store, HOUR14, rebuild=True).rows == 670
        assert tables(wh) == second
        assert wh.rows("SELECT DISTINCT source, sender FROM {raw}") == [
            {"source": "sysmetrics", "sender": None}
        ]
    finally:
        wh.close()
    later_dir = tmp_path / "later"
    LakeBuilder(later_dir).add_batch(steady_host("late-4", HOUR14, cpu=60.0, samples=20))
    for path in later_dir.rglob("*.jsonl"):
        assert store.create(str(path.relative_to(later_dir)), path.read_bytes())
    wh = BigQueryWarehouse(bq.project, "sysmetrics", bq.endpoint)
    try:
        rebuilt = run_hour(cloud_settings, wh, store, HOUR14, rebuild=True)
        assert (rebuilt.read, rebuilt.rows) == (2, 690)  # the Parquet file + the later file
        from_curated = tables(wh)
    finally:
        wh.close()
    raw_only = tmp_path / "raw-only"
    for source in ("local", "late", "later"):
        shutil.copytree(tmp_path / source, raw_only, dirs_exist_ok=True)
    duck = DuckDBWarehouse(str(tmp_path / "from-raw.duckdb"))
    try:
        run_hour(settings, duck, LakeStore(str(raw_only)), HOUR14)
        assert tables(duck) == from_curated
    finally:
        duck.close()

    # A host retired after its last sample (a target Prometheus dropped, `alert --forget`):
    # the next hour's silent hosts leave web-1 out, on BigQuery too; a retirement read twice
    # (a run that crashed before recording its manifests) is kept once.
    retired_ms = int((HOUR14 + timedelta(hours=1)).timestamp() * 1000) - 1
    wh = BigQueryWarehouse(bq.project, "sysmetrics", bq.endpoint)
    try:
        for _ in range(2):
            record_retirements(wh, [("web-1", retired_ms)])
        assert wh.scalar("SELECT COUNT(*) FROM {retired}") == 1
        run_hour(cloud_settings, wh, store, HOUR14 + timedelta(hours=1))
        silent = wh.rows(
            "SELECT host_id FROM {alerts} WHERE rule = 'host_silent' AND hour = @start",
            start=HOUR14 + timedelta(hours=1),
        )
    finally:
        wh.close()
    assert {r["host_id"] for r in silent} == {"gpu-9", HOSTILE, "late-3", "late-4"}

    # A dashboard upgraded before the hourly job reads a dataset an older hourly job made, with
    # no `retired_hosts`: the fleet page's retired hosts are none, then web-1 once the table is.
    # (The emulator cannot run the fleet page itself: it has no ARRAY_AGG(... IGNORE NULLS).)
    def retired_on_the_fleet_page() -> list[dict[str, Any]]:
        reader = BigQueryWarehouse(bq.project, "sysmetrics", bq.endpoint, read_only=True)
        try:
            gone = f"WITH {sql._GONE} SELECT host_id FROM gone"
            return reader.rows(gone, since=HOUR14 - timedelta(hours=22))
        finally:
            reader.close()

    wh = BigQueryWarehouse(bq.project, "sysmetrics", bq.endpoint)
    wh.client.delete_table(f"{bq.project}.sysmetrics.retired_hosts")
    try:
        assert retired_on_the_fleet_page() == []
        wh.ensure_tables()
        record_retirements(wh, [("web-1", retired_ms)])
        assert retired_on_the_fleet_page() == [{"host_id": "web-1"}]
    finally:
        wh.close()
