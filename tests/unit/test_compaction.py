"""Curated Parquet: compaction equals the raw hour, versions replace each other atomically,
retention deletes raw only after verification, and the warehouse is the same from either."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import duckdb
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sysmetrics.batch.hourly import curate, run_hour
from sysmetrics.config import Settings
from sysmetrics.lake import layout
from sysmetrics.lake.compaction import (
    SPLICED_CHUNK_BYTES,
    CuratedManifest,
    HourSource,
    LakeFileUnreadable,
    NotCompacted,
    compact_hour,
    current_manifest,
    hour_source,
    hour_sources,
    hours_between,
    lacking,
    last_prunable_hour,
    prune_hour,
    raw_files,
    raw_source,
    stage_raw_files,
    verify_hour,
)
from sysmetrics.lake.store import LakeStore
from sysmetrics.schema import MetricsEvent, decode, encode
from sysmetrics.warehouse import sql
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.kafka_io import SYSMETRICS
from tests.support.lake import data_files, read_lines
from tests.support.lakes import LakeBuilder, event, steady_host, write_simulated_fleet

TOPIC = "machine_metrics"
H = timedelta(hours=1)
OLD = datetime(2026, 11, 20, 9, tzinfo=UTC)  # days ago: past any retention used here


def raw_events(lake: Path, hour: datetime) -> dict[str, MetricsEvent]:
    """The hour's events as the raw files hold them, one per event_id (first file wins)."""
    out: dict[str, MetricsEvent] = {}
    for path in data_files(lake):
        if layout.hour_of_path(str(path.relative_to(lake))) == hour:
            for line in read_lines(path):
                event = decode(line)
                out.setdefault(event.event_id, event)
    return out


def curated_table(store: LakeStore, hour: datetime) -> pa.Table:
    manifest = current_manifest(store, TOPIC, hour)
    assert manifest is not None
    path = f"{layout.curated_hour_dir(TOPIC, hour)}/{manifest.file}"
    return pq.read_table(store.fs.open(store.full(path), "rb"))


def as_events(table: pa.Table) -> dict[str, MetricsEvent]:
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        row.pop("source_file")
    return {r["event_id"]: msgspec.convert(r, MetricsEvent) for r in rows}


def mark_complete(lake: Path) -> None:
    """The lake writer's watermark, past every hour these tests write."""
    marks = lake / layout.watermark_dir(TOPIC)
    marks.mkdir(parents=True)
    (marks / "p0000.json").write_text(
        json.dumps(
            {
                "partition": 0,
                "committed_offset": 10**10,
                "complete_before": "2026-11-28T00:00:00+00:00",
            }
        )
    )


def build_hour(lake: Path, hosts: int = 12) -> int:
    """A simulated hour (GPU servers, laptops, counter resets), plus a replayed batch: the
    same events again under another file name."""
    written = write_simulated_fleet(lake, hosts, OLD, 1, batch=400)
    builder = LakeBuilder(lake)
    builder.next_offset = 10**9
    first = sorted(p for p in data_files(lake))[0]
    replay = [decode(line) for line in read_lines(first)][:100]
    builder.add_batch(replay)
    return written


def test_compacted_hour_equals_its_raw_hour_field_for_field(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    build_hour(lake)
    store = LakeStore(str(lake))
    done = compact_hour(store, TOPIC, OLD)
    raw = raw_events(lake, OLD)
    assert done.version == 1 and done.rows == len(raw) > 4_000
    table = curated_table(store, OLD)
    assert as_events(table) == raw  # every field of every event, duplicates dropped
    # Sorted by host then time, zstd, and an hour smaller than a row group (122,880 rows by
    # default) is one row group.
    keys = [(r["host"]["host_id"], r["ts"]) for r in table.select(["host", "ts"]).to_pylist()]
    assert keys == sorted(keys)
    manifest = current_manifest(store, TOPIC, OLD)
    assert manifest is not None
    path = store.full(f"{layout.curated_hour_dir(TOPIC, OLD)}/{manifest.file}")
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 1 and meta.row_group(0).num_rows == len(raw)
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert manifest.sources == sorted(p.rsplit("/", 1)[-1] for p in raw_files(store, TOPIC, OLD))
    assert verify_hour(store, TOPIC, OLD).ok
    # Nothing new: no new version.
    assert compact_hour(store, TOPIC, OLD).skipped == "up to date"


def test_compaction_works_within_the_memory_limit_and_says_when_it_is_too_small(
    tmp_path: Path,
) -> None:
    """The hour is compacted within SYSMETRICS_DUCKDB_MEMORY_LIMIT (spilling past it: a
    10,000-host hour held 6.5 GiB unbounded, 1.2 GiB at 1GB); a limit too small even to spill is
    NotCompacted naming the setting, raised at once (no file-by-file reread: no file is at
    fault), and the hour keeps its version."""
    lake = tmp_path / "lake"
    build_hour(lake)
    store = LakeStore(str(lake))
    first = compact_hour(store, TOPIC, OLD, memory_limit="256MB")
    assert first.version == 1 and first.rows > 4_000
    with (
        mock.patch("sysmetrics.lake.compaction.raw_source", side_effect=AssertionError("reread")),
        pytest.raises(NotCompacted, match="raise SYSMETRICS_DUCKDB_MEMORY_LIMIT") as refused,
    ):
        compact_hour(store, TOPIC, OLD, rebuild=True, memory_limit="4MB")
    assert "memory limit (4MB)" in str(refused.value)
    manifest = current_manifest(store, TOPIC, OLD)
    assert manifest is not None and manifest.version == 1
    assert verify_hour(store, TOPIC, OLD).ok


def test_an_outside_reader_sees_the_documented_schema(tmp_path: Path) -> None:
    """pyarrow, knowing nothing of sysmetrics, reads typed columns (README: Curated layer)."""
    lake = tmp_path / "lake"
    LakeBuilder(lake).add_batch(steady_host("web-1", OLD, 40.0, samples=30))
    store = LakeStore(str(lake))
    compact_hour(store, TOPIC, OLD)
    schema = curated_table(store, OLD).schema
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert schema.field("event_id").type == pa.string()
    assert schema.field("host").type.field("host_id").type == pa.string()
    assert schema.field("cpu").type.field("utilization_pct").type == pa.float64()
    disks = schema.field("disks").type
    assert pa.types.is_list(disks) and disks.value_type.field("used_pct").type == pa.float64()
    assert schema.field("network").type.field("bytes_sent").type == pa.int64()
    assert schema.names[-1] == "source_file"


def test_a_late_raw_file_makes_a_new_version_and_the_old_one_goes(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    builder = LakeBuilder(lake)
    builder.add_batch(steady_host("web-1", OLD, 40.0, samples=60))
    store = LakeStore(str(lake))
    first = compact_hour(store, TOPIC, OLD)
    late = steady_host("laptop-3", OLD + timedelta(minutes=30), 10.0, samples=20)
    builder.add_batch(late)
    assert not verify_hour(store, TOPIC, OLD).ok  # stale until compacted again
    second = compact_hour(store, TOPIC, OLD)
    assert (first.version, first.rows, second.version, second.rows) == (1, 60, 2, 80)
    folder = lake / layout.curated_hour_dir(TOPIC, OLD)
    assert sorted(p.name for p in folder.iterdir()) == [
        "_manifest-v000002.json",
        "part-v000002.parquet",
    ]
    assert as_events(curated_table(store, OLD)) == raw_events(lake, OLD)


def test_reading_an_hour_from_the_lake_gives_each_event_once(tmp_path: Path) -> None:
    """What remote read runs on an hour the warehouse no longer holds: the curated file alone
    is read without the deduplication (it holds each event once), and a raw file newer than it
    that repeats some of its events (a re-flush) is read with it, each event once."""
    lake = tmp_path / "lake"
    builder = LakeBuilder(lake)
    events = steady_host("web-1", OLD, 40.0, samples=60)
    builder.add_batch(events)
    store = LakeStore(str(lake))
    assert hour_source(store, TOPIC, OLD + H) is None
    raw_only = hour_source(store, TOPIC, OLD)
    assert raw_only is not None and not raw_only.each_event_once
    compact_hour(store, TOPIC, OLD)
    statement = sql.read_raw(["cpu_pct"], "host_id = @host")
    wh = DuckDBWarehouse(":memory:")
    try:

        def read(source: HourSource) -> list[tuple[int, float]]:
            rows = wh.lake_rows(statement, [(OLD, source)], start=OLD, end=OLD + H, host="web-1")
            return [(r["t"], r["cpu_pct"]) for r in rows]

        alone = hour_source(store, TOPIC, OLD)
        assert alone is not None and alone.each_event_once
        expected = [(int(e.ts.timestamp() * 1000), 40.0) for e in events]
        assert read(alone) == expected
        last = steady_host("web-1", OLD + timedelta(minutes=59), 40.0, samples=1)
        builder.add_batch([*events[50:], *last])  # ten events again, and one new
        newer = hour_source(store, TOPIC, OLD)
        assert newer is not None and not newer.each_event_once
        assert read(newer) == [*expected, (int(last[0].ts.timestamp() * 1000), 40.0)]
    finally:
        wh.close()


def test_lake_hours_of_every_kind_are_read_in_one_statement_as_a_load_would(
    tmp_path: Path,
) -> None:
    """Remote read over hours the warehouse no longer holds, in one statement: a curated file
    alone (holding a line filed under the wrong hour), a curated file with a newer raw file
    that repeats some of its events, and raw files only (a batch flushed twice). Each event of
    the range comes once, only those in [start, end], the misfiled line in no hour's window."""
    lake = tmp_path / "lake"
    builder = LakeBuilder(lake)
    store = LakeStore(str(lake))
    hours = [OLD, OLD + H, OLD + 2 * H]
    web1 = {hour: steady_host("web-1", hour, 10.0 + n, samples=60) for n, hour in enumerate(hours)}
    (first,) = builder.add_batch([*web1[OLD], *steady_host("web-2", OLD, 90.0, samples=60)])
    misfiled = event("web-1", OLD + 2 * H + timedelta(minutes=3), 77.0, seq=999)
    first.write_bytes(first.read_bytes() + encode(misfiled) + b"\n")
    compact_hour(store, TOPIC, OLD)
    builder.add_batch(web1[OLD + H])
    compact_hour(store, TOPIC, OLD + H)
    late = event("web-1", OLD + H + timedelta(minutes=30), 11.0, seq=1000)
    builder.add_batch([*web1[OLD + H][50:], late])
    builder.add_batch(web1[OLD + 2 * H])
    builder.add_batch(web1[OLD + 2 * H])
    sources = hour_sources(store, TOPIC, [*hours, OLD + 3 * H])
    assert [(hour, s.each_event_once) for hour, s in sources] == [
        (OLD, True),
        (OLD + H, False),
        (OLD + 2 * H, False),
    ]
    start, end = OLD + timedelta(minutes=5), OLD + 2 * H + timedelta(minutes=5)
    statement = sql.read_raw(["cpu_pct"], "host_id = @host")
    wh = DuckDBWarehouse(":memory:")
    try:
        rows = wh.lake_rows(statement, sources, start=start, end=end, host="web-1")
    finally:
        wh.close()
    wanted = [*web1[OLD], *web1[OLD + H], late, *web1[OLD + 2 * H]]
    expected = sorted(
        (int(e.ts.timestamp() * 1000), e.cpu.utilization_pct)
        for e in wanted
        if start <= e.ts <= end
    )
    assert len(expected) == 30 + 61 + 31
    assert [(r["t"], r["cpu_pct"]) for r in rows] == expected


def test_retention_prunes_only_verified_hours_and_the_warehouse_is_the_same(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    build_hour(lake, hosts=8)
    for n in (1, 2):  # two more hours: trends and counter deltas read across hours
        write_simulated_fleet(lake, 8, OLD + n * H, 1, batch=400)
    store = LakeStore(str(lake))
    settings = Settings(
        data_dir=tmp_path / "data", lake_url=str(lake), warehouse_url=str(tmp_path / "a.duckdb")
    )
    wh = DuckDBWarehouse(settings.warehouse_url)
    try:
        for n in range(3):
            run_hour(settings, wh, store, OLD + n * H, rebuild=True)
        from_raw = dump(wh)
    finally:
        wh.close()
    now = OLD + timedelta(days=3)
    # Not compacted: nothing deleted, and it says why.
    refused = prune_hour(store, TOPIC, OLD, now, retention_days=1, lookback_hours=0)
    assert refused is not None and not refused.ok and refused.detail == "not compacted"
    assert raw_files(store, TOPIC, OLD)
    # Within retention: not even looked at.
    assert (
        prune_hour(store, TOPIC, OLD, OLD + timedelta(hours=5), retention_days=1, lookback_hours=0)
        is None
    )
    for n in range(3):
        compact_hour(store, TOPIC, OLD + n * H)
    pruned = prune_hour(store, TOPIC, OLD, now, retention_days=1, lookback_hours=0)
    assert pruned is not None and pruned.ok and not raw_files(store, TOPIC, OLD)
    assert verify_hour(store, TOPIC, OLD).detail.endswith("raw pruned")

    # A rebuild of the pruned hour (and of one still raw) reads curated Parquet: same tables.
    rebuilt = settings.model_copy(update={"warehouse_url": str(tmp_path / "b.duckdb")})
    wh = DuckDBWarehouse(rebuilt.warehouse_url)
    try:
        for n in range(3):
            result = run_hour(rebuilt, wh, store, OLD + n * H, rebuild=True)
        assert result.read == 1  # the curated file, no raw file
        assert dump(wh) == from_raw
    finally:
        wh.close()


def test_the_hourly_retention_step_reports_an_hour_only_when_it_had_raw_files(
    tmp_path: Path,
) -> None:
    """Every `batch run` of a lake younger than the retention printed "retention: <hour>
    not compacted" of an hour the lake never held. Now an hour without raw files is no news;
    one with raw files says what was deleted, or why they were kept."""
    from click.testing import CliRunner

    from sysmetrics.cli import cli

    lake = tmp_path / "lake"
    env = {
        "SYSMETRICS_LAKE_URL": str(lake),
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_WAREHOUSE_URL": str(tmp_path / "w.duckdb"),
    }
    LakeBuilder(lake).add_batch(steady_host("web-1", OLD, 40.0, samples=10))
    ran = CliRunner().invoke(cli, ["batch", "run", "--hour", f"{OLD + 2 * H:%Y-%m-%dT%H}"], env=env)
    assert ran.exit_code == 0, ran.output
    assert "retention" not in ran.output, ran.output

    store = LakeStore(str(lake))
    settings = Settings(data_dir=tmp_path / "data", lake_url=str(lake), raw_retention_days=1)
    now = OLD + timedelta(days=1, hours=1, minutes=30)  # OLD is the hour just past retention
    assert last_prunable_hour(now, 1, settings.lookback_hours) == OLD
    assert curate(settings, store, [], now + timedelta(hours=1)).pruned is None  # OLD + 1h: empty
    kept = curate(settings, store, [], now).pruned
    assert kept is not None and not kept.ok and kept.detail == "not compacted"
    assert raw_files(store, TOPIC, OLD)
    compact_hour(store, TOPIC, OLD)
    deleted = curate(settings, store, [], now).pruned
    assert deleted is not None and deleted.ok and len(deleted.raw_files) == 1
    assert not raw_files(store, TOPIC, OLD)
    assert curate(settings, store, [], now).pruned is None  # pruned already: no news either


def test_a_damaged_curated_file_fails_verify_keeps_its_raw_files_and_is_rebuilt(
    tmp_path: Path,
) -> None:
    """A damaged ZSTD page of a column other than the event ids (its frame's magic zeroed):
    verify said "ok" (it read only the event ids), so a prune deleted the raw files and the
    hour was lost, and the hourly job stopped on DuckDB's bare error. Now verify decodes every
    value and fails, the prune keeps the raw files, the hourly job names the file and what to
    do, and `compact --rebuild` writes the hour again from its raw files (refused once they
    are pruned: their events would be only in the damaged file)."""
    lake = tmp_path / "lake"
    build_hour(lake, hosts=4)
    store = LakeStore(str(lake))
    compact_hour(store, TOPIC, OLD)
    manifest = without_sha256(lake, OLD)  # compacted before 2026-12-05: no SHA-256 to compare
    data = lake / layout.curated_hour_dir(TOPIC, OLD) / manifest.file
    chunk = column_chunk(data, "memory.used_bytes")
    damaged = bytearray(data.read_bytes())
    frame = damaged.index(b"\x28\xb5\x2f\xfd", chunk.data_page_offset)  # ZSTD's magic
    assert frame < chunk.data_page_offset + chunk.total_compressed_size
    damaged[frame : frame + 4] = bytes(4)
    data.write_bytes(damaged)
    check = verify_hour(store, TOPIC, OLD)
    assert not check.ok and f"curated file {manifest.file} unreadable" in check.detail
    assert "lake compact --rebuild" in check.detail
    now = OLD + timedelta(days=3)
    kept = prune_hour(store, TOPIC, OLD, now, retention_days=1, lookback_hours=0)
    assert kept is not None and not kept.ok and raw_files(store, TOPIC, OLD)
    settings = Settings(lake_url=str(lake), warehouse_url=str(tmp_path / "wh.duckdb"))
    wh = DuckDBWarehouse(settings.warehouse_url)
    try:
        with pytest.raises(LakeFileUnreadable, match=rf"curated file .*{manifest.file} cannot"):
            run_hour(settings, wh, store, OLD, rebuild=True)
        assert compact_hour(store, TOPIC, OLD).skipped == "up to date", "nothing new arrived"
        rebuilt = compact_hour(store, TOPIC, OLD, rebuild=True)
        assert rebuilt.version == 2 and rebuilt.rows == manifest.rows
        assert verify_hour(store, TOPIC, OLD).ok
        assert run_hour(settings, wh, store, OLD, rebuild=True).read == 1
    finally:
        wh.close()
    store.delete(raw_files(store, TOPIC, OLD)[:1])
    with pytest.raises(NotCompacted, match="1 of the raw files version 2 was made from"):
        compact_hour(store, TOPIC, OLD, rebuild=True)


def without_sha256(lake: Path, hour: datetime) -> CuratedManifest:
    """The hour's manifest rewritten as compaction wrote it before 2026-12-05."""
    store = LakeStore(str(lake))
    manifest = current_manifest(store, TOPIC, hour)
    assert manifest is not None and len(manifest.sha256) == 64
    manifest = dataclasses.replace(manifest, sha256="")
    written = (
        lake / layout.curated_hour_dir(TOPIC, hour) / layout.curated_manifest_name(manifest.version)
    )
    written.write_text(json.dumps({k: v for k, v in asdict(manifest).items() if k != "sha256"}))
    return manifest


def column_chunk(data: Path, column: str) -> Any:
    """The metadata of ``column``'s chunk in the first row group of the Parquet file."""
    group = pq.ParquetFile(data).metadata.row_group(0)
    return next(
        chunk
        for chunk in map(group.column, range(group.num_columns))
        if chunk.path_in_schema == column
    )


def test_a_changed_byte_that_still_decodes_fails_verify_and_no_load_or_compaction_reads_it(
    tmp_path: Path,
) -> None:
    """16 bytes zeroed inside a page of random-walk counters, which ZSTD stores as they are:
    DuckDB reads the file without an error, to other numbers, so verify (which decodes every
    value) said "ok" and a prune deleted the hour's raw files, the damaged file then its only
    copy. Now the manifest holds the file's SHA-256: verify fails and says what to do, the
    prune keeps the raw files, the hourly job and a compaction of late files refuse the file,
    and `compact --rebuild` writes it again. A manifest with a key a later version adds is
    read, and one from before the SHA-256 verifies as before."""
    lake = tmp_path / "lake"
    build_hour(lake, hosts=4)
    store = LakeStore(str(lake))
    compact_hour(store, TOPIC, OLD)
    manifest = current_manifest(store, TOPIC, OLD)
    assert manifest is not None
    data = lake / layout.curated_hour_dir(TOPIC, OLD) / manifest.file
    every_row = f"SELECT COUNT(*), SUM(hash(c)) FROM read_parquet('{data}') AS c"
    before = duckdb.execute(every_row).fetchone()
    chunk = column_chunk(data, "network.bytes_sent")
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    damaged = bytearray(data.read_bytes())
    assert damaged[middle : middle + 16] != bytes(16)
    damaged[middle : middle + 16] = bytes(16)
    data.write_bytes(damaged)
    after = duckdb.execute(every_row).fetchone()  # no error: the damage is silent to a reader
    assert after is not None and before is not None
    assert after[0] == before[0] == manifest.rows and after[1] != before[1]

    check = verify_hour(store, TOPIC, OLD)
    assert not check.ok
    assert check.detail.startswith(f"curated file {manifest.file} has changed since it was")
    assert "its raw files are kept" in check.detail and "lake compact --rebuild" in check.detail
    now = OLD + timedelta(days=3)
    kept = prune_hour(store, TOPIC, OLD, now, retention_days=1, lookback_hours=0)
    assert (
        kept is not None
        and not kept.ok
        and len(raw_files(store, TOPIC, OLD)) == len(manifest.sources)
    )
    settings = Settings(lake_url=str(lake), warehouse_url=str(tmp_path / "wh.duckdb"))
    wh = DuckDBWarehouse(settings.warehouse_url)
    try:
        with pytest.raises(LakeFileUnreadable, match=rf"{manifest.file} has changed since"):
            run_hour(settings, wh, store, OLD, rebuild=True)
        late = LakeBuilder(lake)
        late.next_offset = 2 * 10**9
        late.add_batch(steady_host("late-1", OLD, cpu=20.0, samples=5))
        with pytest.raises(LakeFileUnreadable, match="lake compact --rebuild"):
            compact_hour(store, TOPIC, OLD)  # it would bake the other numbers into version 2
        rebuilt = compact_hour(store, TOPIC, OLD, rebuild=True)
        assert rebuilt.version == 2 and rebuilt.rows == manifest.rows + 5
        assert verify_hour(store, TOPIC, OLD).ok
        assert run_hour(settings, wh, store, OLD, rebuild=True).read == 1
        assert wh.scalar("SELECT COUNT(*) FROM {raw}") == manifest.rows + 5
    finally:
        wh.close()

    # A key a later version adds to the manifest is ignored; a manifest from before the
    # SHA-256 existed has none to compare, and verifies as before.
    folder = lake / layout.curated_hour_dir(TOPIC, OLD)
    written = folder / layout.curated_manifest_name(2)
    written.write_text(json.dumps({**json.loads(written.read_text()), "added_later": [1, 2]}))
    assert verify_hour(store, TOPIC, OLD).ok
    assert without_sha256(lake, OLD).sha256 == ""
    check = verify_hour(store, TOPIC, OLD)
    assert check.ok and check.detail.endswith("compacted before 2026-12-05: no SHA-256 to check)")


def dump(wh: DuckDBWarehouse) -> dict[str, list[tuple[Any, ...]]]:
    order = {
        "raw": "event_id",
        "hourly": "host_id, hour",
        "trends": "host_id, hour",
        "quality": "hour, host_id, anomaly",
    }
    return {
        kind: [tuple(r.values()) for r in wh.rows(f"SELECT * FROM {{{kind}}} ORDER BY {by}")]
        for kind, by in order.items()
    }


def run_killed(command: list[str], env: dict[str, str], after_s: float) -> bool:
    """Start ``command``, SIGKILL it after ``after_s``; False if it had finished already."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    time.sleep(after_s)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    return True


@pytest.mark.parametrize("step", ["compact", "prune"])
def test_kill_9_during_compaction_or_prune_then_a_rerun(tmp_path: Path, step: str) -> None:
    """`sysmetrics lake compact|prune` killed at several moments, then run to the end: every
    event once in the curated file, no partial file named by a manifest, nothing lost."""
    lake = tmp_path / "lake"
    build_hour(lake, hosts=300)
    store = LakeStore(str(lake))
    expected = set(raw_events(lake, OLD))
    mark_complete(lake)
    env = {
        **os.environ,
        "SYSMETRICS_LAKE_URL": str(lake),
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_RAW_RETENTION_DAYS": "1",
    }
    if step == "prune":
        assert compact_hour(store, TOPIC, OLD).version == 1
    command = [SYSMETRICS, "lake", step, "--from", "2026-11-20T00", "--to", "2026-11-21T00"]
    # The kills land at fractions of what a whole run takes on this machine, timed on a copy:
    # fixed moments all came after the end on a quiet machine (prune ran in 0.75 s).
    probe = tmp_path / "probe"
    shutil.copytree(lake, probe / "lake")
    started = time.monotonic()
    subprocess.run(
        command,
        env={**env, "SYSMETRICS_LAKE_URL": str(probe / "lake"), "SYSMETRICS_DATA_DIR": str(probe)},
        check=True,
        capture_output=True,
        timeout=300,
    )
    whole_s = time.monotonic() - started
    killed = 0
    for fraction in (0.5, 0.6, 0.7, 0.8, 0.9):
        killed += run_killed(command, env, fraction * whole_s)
        manifest = current_manifest(store, TOPIC, OLD)
        if manifest is not None:  # whatever a reader finds in force is whole and verifies
            assert set(as_events(curated_table(store, OLD))) == expected
            assert verify_hour(store, TOPIC, OLD).ok
    assert killed >= 1, "the command finished before it could be killed"
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert set(as_events(curated_table(store, OLD))) == expected
    assert curated_table(store, OLD).num_rows == len(expected)
    check = verify_hour(store, TOPIC, OLD)
    assert check.ok, check.detail
    if step == "prune":
        assert not raw_files(store, TOPIC, OLD)


def test_lake_stats_and_verify_commands(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sysmetrics.cli import cli

    lake = tmp_path / "lake"
    LakeBuilder(lake).add_batch(steady_host("web-1", OLD, 40.0, samples=360))
    LakeBuilder(lake).add_batch(steady_host("web-2", OLD, 40.0, samples=360), partition=1)
    env = {"SYSMETRICS_LAKE_URL": str(lake), "SYSMETRICS_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    mistyped = {**env, "SYSMETRICS_LAKE_URL": str(tmp_path / "lak")}
    for command in ("stats", "verify", "compact", "prune"):  # said "0 of 0 hours", exit 0
        missing = runner.invoke(cli, ["lake", command], env=mistyped)
        assert missing.exit_code == 1 and f"no lake at {tmp_path / 'lak'}:" in missing.output
    # Not compacted is no failure: the hour in progress never is, and `lake verify` exited 1
    # on every run beside a working pipeline.
    unverified = runner.invoke(cli, ["lake", "verify"], env=env)
    assert unverified.exit_code == 0, unverified.output
    assert "  2026-11-20T09Z -    not compacted\n" in unverified.output
    assert "0 of 0 compacted hours verified; 1 hour not compacted" in unverified.output
    compact_hour(LakeStore(str(lake)), TOPIC, OLD)
    verified = runner.invoke(cli, ["lake", "verify"], env=env)
    assert verified.exit_code == 0 and "1 of 1 compacted hours verified\n" in verified.output
    stats = runner.invoke(cli, ["lake", "stats"], env=env)
    assert stats.exit_code == 0, stats.output
    lines = {line.split()[0]: line.split() for line in stats.output.splitlines() if line}
    assert "0.1 host-days" in stats.output  # 2 hosts x 1 hour
    raw_bytes = sum(p.stat().st_size for p in data_files(lake))
    assert lines["raw"][1:4] == ["2", f"{raw_bytes:,}", "720"]
    assert lines["curated"][1] == "1" and lines["curated"][3] == "720"


def test_lake_verify_prints_what_it_read_as_it_is(tmp_path: Path) -> None:
    """What verify reports can come from the events (the names of fields a newer version
    sent): brackets in it are text, not markup (``[/x]`` was a traceback) and its control
    characters are written out, not sent to the terminal."""
    from click.testing import CliRunner

    from sysmetrics.cli import cli

    lake = tmp_path / "lake"
    (newer_file,) = LakeBuilder(lake).add_batch(steady_host("web-1", OLD, 40.0, samples=10))
    compact_hour(LakeStore(str(lake)), TOPIC, OLD)
    markers = lake / layout.newer_fields_dir(TOPIC)
    markers.mkdir(parents=True)
    marker = markers / layout.newer_fields_marker_path(TOPIC, OLD, newer_file.name).split("/")[-1]
    marker.write_text(json.dumps(["[/x]\u001b]0;owned\u0007"]))
    env = {"SYSMETRICS_LAKE_URL": str(lake), "SYSMETRICS_DATA_DIR": str(tmp_path / "data")}
    verified = CliRunner().invoke(cli, ["lake", "verify"], env=env)
    assert verified.exit_code == 0, verified.output
    assert "fields this version does not know ([/x]\\x1b]0;owned\\x07)" in verified.output
    assert "\x1b" not in verified.output


def test_many_raw_files_are_read_in_a_few_spliced_ones_with_the_same_rows(tmp_path: Path) -> None:
    """An hour's raw files are read by DuckDB as a few files with each line's file name
    spliced in (``stage_raw_files``; ~1.7 ms a file less): the rows equal DuckDB's typed
    read of each file, whatever the files' spelling: gzip, zstd, no final newline, CRLF line
    ends, a line that begins with a space (its file read as before), an empty object (the
    chunk read as before), chunks of any size."""
    import gzip

    import zstandard

    lake = tmp_path / "lake"
    builder = LakeBuilder(lake)
    for n in range(8):
        builder.add_batch(steady_host(f"web-{n}", OLD, 10.0 * n, samples=12))
    files = sorted(data_files(lake))
    files[0].write_bytes(files[0].read_bytes().rstrip(b"\n"))
    files[1].write_bytes(files[1].read_bytes().replace(b"\n", b"\r\n"))
    files[2].write_bytes(b" " + files[2].read_bytes())
    files[3].write_bytes(files[3].read_bytes() + b"{}\n")
    files[4].with_name(files[4].name + ".gz").write_bytes(gzip.compress(files[4].read_bytes()))
    zstd = zstandard.ZstdCompressor()
    halves = files[5].read_bytes().split(b"\n", 6)
    frames = zstd.compress(b"\n".join(halves[:6]) + b"\n") + zstd.compress(halves[6])
    files[5].with_name(files[5].name + ".zst").write_bytes(frames)
    files[4].unlink()
    files[5].unlink()
    store = LakeStore(str(lake))
    rels = raw_files(store, TOPIC, OLD)
    assert len(rels) == 8 and sum(r.endswith((".gz", ".zst")) for r in rels) == 2
    con = duckdb.connect()
    con.execute(
        f"CREATE TABLE expected AS SELECT * FROM {raw_source([store.uri(r) for r in rels])}"
    )
    assert con.execute("SELECT COUNT(*) FROM expected").fetchone() == (8 * 12 + 1,)
    for chunk_bytes in (1, 10_000, SPLICED_CHUNK_BYTES):
        with mock.patch("sysmetrics.lake.compaction.SPLICED_CHUNK_BYTES", chunk_bytes):
            staged = stage_raw_files(con, store.fs, [store.uri(r) for r in rels], "staged")
        for a, b in (("expected", staged), (staged, "expected")):
            assert con.execute(
                f"SELECT COUNT(*) FROM (FROM {a} EXCEPT ALL FROM {b})"
            ).fetchone() == (0,)
    assert con.execute("SELECT COUNT(DISTINCT source_file) FROM staged").fetchone() == (8,)
    # A file deleted between the listing and the read (a prune beside it) stops the read
    # with its name: nothing of the hour is read without it.
    gone = store.uri(rels[0])
    (lake / rels[0]).unlink()
    with pytest.raises(LakeFileUnreadable, match=f"lake file {re.escape(gone)} is gone"):
        stage_raw_files(con, store.fs, [store.uri(r) for r in rels], "staged")
    con.close()


def test_lake_compact_names_a_line_an_old_writer_let_in_and_compacts_the_other_hours(
    tmp_path: Path,
) -> None:
    """A counter of 2**63 (lake writers before the schema's INT64 bound took it) cannot be
    read typed: that hour is reported with its file and line, the next hour is compacted,
    and the command exits 1."""
    from click.testing import CliRunner

    from sysmetrics.cli import cli

    lake = tmp_path / "lake"
    builder = LakeBuilder(lake)
    (bad,) = builder.add_batch(steady_host("old-1", OLD, 40.0, samples=5))
    builder.add_batch(steady_host("web-1", OLD + H, 40.0, samples=5))
    lines = [json.loads(line) for line in read_lines(bad)]
    lines[3]["network"]["bytes_sent"] = 2**63
    bad.write_text("".join(json.dumps(line) + "\n" for line in lines))
    mark_complete(lake)
    env = {"SYSMETRICS_LAKE_URL": str(lake), "SYSMETRICS_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(
        cli, ["lake", "compact", "--from", "2026-11-20T00", "--to", "2026-11-21T00"], env=env
    )
    assert result.exit_code == 1, result.output
    assert f"lake file {bad}, line 4:" in result.output
    assert "1 hours could not be compacted" in result.output
    store = LakeStore(str(lake))
    assert current_manifest(store, TOPIC, OLD) is None
    assert current_manifest(store, TOPIC, OLD + H) is not None
    with pytest.raises(LakeFileUnreadable):
        compact_hour(store, TOPIC, OLD)


def test_raw_files_with_fields_this_version_lacks_outlive_retention(tmp_path: Path) -> None:
    """A collector of a newer minor version sent fields the curated Parquet cannot hold: the
    writer marked its file (tests/integration/test_lake_writer.py); prune keeps that file and
    says why, and deletes the rest. A version that knows the fields compacts the hour again,
    reading that file anew, and then prune deletes it too."""
    lake = tmp_path / "lake"
    builder = LakeBuilder(lake)
    builder.add_batch(steady_host("web-1", OLD, 40.0, samples=60))
    (newer_file,) = builder.add_batch(steady_host("new-1", OLD, 20.0, samples=10))
    lines = [json.loads(line) for line in read_lines(newer_file)]
    for line in lines:
        line["power"] = {"package_watts": 31.5}
    newer_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    markers = lake / layout.newer_fields_dir(TOPIC)
    markers.mkdir(parents=True)
    marker = markers / layout.newer_fields_marker_path(TOPIC, OLD, newer_file.name).split("/")[-1]
    marker.write_text(json.dumps(["power"]))
    store = LakeStore(str(lake))
    assert compact_hour(store, TOPIC, OLD).rows == 70
    manifest = current_manifest(store, TOPIC, OLD)
    assert manifest is not None and "cpu.utilization_pct" in manifest.fields
    assert "power" not in manifest.fields

    now = OLD + timedelta(days=3)
    check = prune_hour(store, TOPIC, OLD, now, retention_days=1, lookback_hours=0)
    assert check is not None and check.ok and check.kept == [str(newer_file.relative_to(lake))]
    assert "fields this version does not know (power)" in check.detail
    assert [p.name for p in data_files(lake)] == [newer_file.name]  # the other one pruned
    assert "package_watts" in newer_file.read_text()
    assert compact_hour(store, TOPIC, OLD).skipped == "up to date"  # nothing it can add

    # After an upgrade that knows the marked field: here, a field this version knows whose
    # column an older curated version lacked.
    marker.write_text(json.dumps(["cpu.freq_mhz"]))
    manifest_path = lake / layout.curated_hour_dir(TOPIC, OLD) / "_manifest-v000001.json"
    older = json.loads(manifest_path.read_text())
    older["fields"].remove("cpu.freq_mhz")
    manifest_path.write_text(json.dumps(older))
    check = verify_hour(store, TOPIC, OLD)
    assert check.ok and check.kept == [str(newer_file.relative_to(lake))]
    again = compact_hour(store, TOPIC, OLD)
    assert (again.version, again.rows) == (2, 70)  # the file read anew, not doubled
    assert set(as_events(curated_table(store, OLD))) >= {line["event_id"] for line in lines}
    check = prune_hour(store, TOPIC, OLD, now, retention_days=1, lookback_hours=0)
    assert check is not None and check.ok and not check.kept
    assert data_files(lake) == [] and not marker.exists()  # the marker went with its file


def test_prune_and_the_hourly_job_keep_out_of_the_look_back_window() -> None:
    """With 1 day of retention and a 48 h look-back, an hour 30 h old is past retention but the
    loader still compares it with the lake: neither `lake prune` nor the hourly job may take
    its raw files. Both ask last_prunable_hour."""
    now = datetime(2026, 12, 1, 10, 20, tzinfo=UTC)
    assert last_prunable_hour(now, 1, 48) == datetime(2026, 11, 29, 9, tzinfo=UTC)
    assert last_prunable_hour(now, 7, 48) == datetime(2026, 11, 24, 9, tzinfo=UTC)
    assert last_prunable_hour(now, 1, 0) == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert last_prunable_hour(now, 0, 48) is None


class ListingStore(LakeStore):
    """The real local store, keeping each pattern it was asked to list."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.listed: list[str] = []

    def glob(self, pattern: str) -> list[str]:
        self.listed.append(pattern)
        return super().glob(pattern)


def test_a_range_lists_its_days_or_months_not_the_whole_lake(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    first = datetime(2026, 9, 1, tzinfo=UTC)
    every = [first + n * H for n in range(24 * 60)]  # 60 days, raw hours and curated hours
    for hour in every:
        layer_dir = layout.hour_dir(TOPIC, hour) if hour.hour % 2 else None
        layer_dir = layer_dir or layout.curated_hour_dir(TOPIC, hour)
        (lake / layer_dir).mkdir(parents=True)
    store = ListingStore(str(lake))
    layers = ("curated", "raw")

    def expect(lo: datetime | None, hi: datetime | None, skip: set[datetime]) -> list[datetime]:
        return [
            h
            for h in every
            if (lo is None or h >= lo) and (hi is None or h <= hi) and h not in skip
        ]

    # Grafana's last hours, across midnight, with the warehouse holding the first of them.
    lo, hi = datetime(2026, 10, 3, 22, tzinfo=UTC), datetime(2026, 10, 4, 5, 30, tzinfo=UTC)
    held = {lo}
    assert hours_between(store, TOPIC, layers, lo, hi, skip=held) == expect(lo, hi, held)
    assert sorted(store.listed) == sorted(
        f"{layout.day_dir(layer, TOPIC, day)}/hour=*"
        for layer in layers
        for day in (lo.date(), hi.date())
    )
    # A day whose hours the warehouse all holds is not listed; all held: nothing is.
    store.listed.clear()
    whole_day = {datetime(2026, 10, 3, tzinfo=UTC) + n * H for n in range(24)}
    day_start = lo - 22 * H
    assert hours_between(store, TOPIC, layers, day_start, hi, skip=whole_day) == expect(
        day_start, hi, whole_day
    )
    assert not any("day=03" in pattern for pattern in store.listed)
    store.listed.clear()
    assert hours_between(store, TOPIC, layers, lo, lo, skip=held) == []
    assert store.listed == []
    # Over a week: the months' folders (September and October); open: the whole layer.
    lo = first + 5 * H + 30 * timedelta(minutes=1)
    hi = first + 40 * 24 * H
    store.listed.clear()
    assert hours_between(store, TOPIC, layers, lo, hi) == expect(lo, hi, set())
    assert sorted(store.listed) == sorted(
        f"{layout.month_dir(layer, TOPIC, day)}/day=*/hour=*"
        for layer in layers
        for day in (lo.date(), hi.date())
    )
    store.listed.clear()
    assert hours_between(store, TOPIC, layers, lo, None) == expect(lo, None, set())
    assert store.listed == [f"{layer}/{TOPIC}/year=*/month=*/day=*/hour=*" for layer in layers]


def test_source_and_sender_reach_the_tables_and_a_curated_file_from_before_them_still_loads(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    write_simulated_fleet(lake, 3, OLD, 1, batch=400)
    ingested = [
        msgspec.structs.replace(e, source="node_exporter", sender="prom-a")
        for e in steady_host("node-1", OLD + H, cpu=30.0, samples=30)
    ]
    LakeBuilder(lake).add_batch(ingested)
    store = LakeStore(str(lake))
    for hour in (OLD, OLD + H):
        compact_hour(store, TOPIC, hour)
    # OLD's file and manifest as compaction wrote them before schema v1.2: no source or sender.
    manifest = current_manifest(store, TOPIC, OLD)
    assert manifest is not None
    folder = lake / layout.curated_hour_dir(TOPIC, OLD)
    table = pq.read_table(folder / manifest.file)
    pq.write_table(table.drop_columns(["source", "sender"]), folder / manifest.file)
    written = folder / layout.curated_manifest_name(manifest.version)
    fields = [f for f in manifest.fields if f not in ("source", "sender")]
    before_v1_2 = {k: v for k, v in json.loads(written.read_text()).items() if k != "sha256"}
    written.write_text(json.dumps({**before_v1_2, "fields": fields}))
    newer = current_manifest(store, TOPIC, OLD + H)
    assert newer is not None and lacking(newer) == frozenset()  # read as it is, no union
    old_manifest = current_manifest(store, TOPIC, OLD)
    assert old_manifest is not None and lacking(old_manifest) == {"source", "sender"}

    settings = Settings(
        data_dir=tmp_path / "data", lake_url=str(lake), warehouse_url=str(tmp_path / "w.duckdb")
    )
    wh = DuckDBWarehouse(settings.warehouse_url)
    try:
        for hour in (OLD, OLD + H):
            assert run_hour(settings, wh, store, hour, rebuild=True).read == 1  # curated only
        by_source = "SELECT hour, source, sender, COUNT(*) AS n FROM {%s} GROUP BY ALL ORDER BY 1"
        raw = wh.rows(by_source % "raw")
        assert [(r["hour"], r["source"], r["sender"]) for r in raw] == [
            (OLD, "sysmetrics", None),  # our collector's events carry no source
            (OLD + H, "node_exporter", "prom-a"),
        ]
        assert raw[0]["n"] == table.num_rows and raw[1]["n"] == 30
        hourly = wh.rows(by_source.replace("COUNT(*)", "SUM(samples)") % "hourly")
        assert [(r["source"], r["sender"], r["n"]) for r in hourly] == [
            ("sysmetrics", None, table.num_rows),
            ("node_exporter", "prom-a", 30),
        ]
    finally:
        wh.close()
    # Both hours' files in one read (remote read over the lake): the old one's rows get nulls.
    rows = DuckDBWarehouse(":memory:").lake_rows(
        "SELECT source, COUNT(*) AS n FROM {raw} GROUP BY ALL ORDER BY 1",
        hour_sources(store, TOPIC, [OLD, OLD + H]),
    )
    assert rows == [
        {"source": "node_exporter", "n": 30},
        {"source": "sysmetrics", "n": table.num_rows},
    ]


def _with_file_size_limit(limit: int) -> Callable[[], None]:
    """A child's files may not grow past ``limit`` bytes (a real RLIMIT_FSIZE: its writes get
    EFBIG, as a full disk's get ENOSPC)."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return limit_files


def test_no_room_to_write_is_one_line_naming_where_and_a_rerun_loses_nothing(
    tmp_path: Path,
) -> None:
    """Out of room while staging an hour (the temporary folder), then while writing the
    warehouse: `lake compact` and `batch run` say what was full and exit 1 (both were
    tracebacks, the warehouse's three chained ones); run again with room, each event is in the
    curated file and the warehouse once."""
    lake = tmp_path / "lake"
    build_hour(lake, hosts=20)
    mark_complete(lake)
    expected = set(raw_events(lake, OLD))
    warehouse = tmp_path / "warehouse.duckdb"
    env = {
        **os.environ,
        "SYSMETRICS_LAKE_URL": str(lake),
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_WAREHOUSE_URL": str(warehouse),
        "TMPDIR": str(tmp_path),
    }
    compact = [SYSMETRICS, "lake", "compact", "--from", "2026-11-20T00", "--to", "2026-11-21T00"]
    batch = [SYSMETRICS, "batch", "run", "--hour", "2026-11-20T09"]

    def run(command: list[str], limit: int | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=None if limit is None else _with_file_size_limit(limit),
        )

    staged = run(compact, 1 << 20)  # the hour is ~10 MB of JSON
    assert staged.returncode == 1, staged.stdout + staged.stderr
    assert "Traceback" not in staged.stderr
    assert f"Error: File too large in the temporary folder {tmp_path}, staging" in staged.stderr
    assert current_manifest(LakeStore(str(lake)), TOPIC, OLD) is None
    assert run(compact, None).returncode == 0
    loaded = run(batch, 1 << 20)  # the curated hour loads, the warehouse outgrows the limit
    assert loaded.returncode == 1, loaded.stdout + loaded.stderr
    assert "Traceback" not in loaded.stderr
    assert f"Error: File too large ({warehouse}" in loaded.stderr  # the file or its .wal
    again = run(batch, None)
    assert again.returncode == 0, again.stderr
    with duckdb.connect(str(warehouse), read_only=True) as con:
        ids = [row[0] for row in con.execute("SELECT event_id FROM raw_metrics").fetchall()]
    assert len(ids) == len(expected) and set(ids) == expected
    assert set(as_events(curated_table(LakeStore(str(lake)), OLD))) == expected


def test_verify_and_stats_run_within_the_duckdb_memory_limit(tmp_path: Path) -> None:
    """`lake verify` (and `prune`, which verifies) and `lake stats` ran DuckDB unbounded (80 %
    of RAM, no spilling: 393 MiB for a 2,000-host hour); they now take
    SYSMETRICS_DUCKDB_MEMORY_LIMIT, as compaction does: a limit too small for the hour is
    DuckDB's out-of-memory error, said in one line, and nothing spills into the working
    directory (DuckDB's default for an in-memory database is ./.tmp)."""
    lake = tmp_path / "lake"
    build_hour(lake, hosts=20)
    mark_complete(lake)
    store = LakeStore(str(lake))
    assert compact_hour(store, TOPIC, OLD).version == 1
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "SYSMETRICS_LAKE_URL": str(lake),
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
    }

    def lake_command(command: str, limit: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SYSMETRICS, "lake", command, "--from", "2026-11-20T00", "--to", "2026-11-21T00"],
            env={**env, "SYSMETRICS_DUCKDB_MEMORY_LIMIT": limit},
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
        )

    verified = lake_command("verify", "256MB")
    assert verified.returncode == 0, verified.stderr
    assert "1 of 1 compacted hours verified" in verified.stdout
    stats = lake_command("stats", "256MB")
    assert stats.returncode == 0 and "0.8 host-days" in stats.stdout, stats.stdout
    starved = lake_command("verify", "1MB")
    assert starved.returncode == 1
    assert "SYSMETRICS_DUCKDB_MEMORY_LIMIT allows" in starved.stderr, starved.stderr
    assert "Traceback" not in starved.stderr
    assert list(work.iterdir()) == []
