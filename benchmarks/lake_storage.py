"""The lake for years: storage per host-day and the cost of reading an old hour back.

    .venv/bin/python benchmarks/lake_storage.py [hosts] [hours] [rebuild hosts]
        (defaults: 1,000 hosts x 2 hours for storage, 10,000 hosts for the rebuild)

(a) Storage, in the lake writer's real layout at default settings (3 partitions, files of 50
    records, a flush round per minute): bytes per host-day as plain JSON, as .jsonl.zst (the
    writer's SYSMETRICS_LAKE_COMPRESSION=zstd, level 3, per file), and as curated Parquet
    (`lake compact`); files per hour. Per host-day figures are scaled from the hours built
    (the simulator's fleet is the same every hour).
    The content floor: every leaf column of the curated hour on its own, integers and
    timestamps as differences to the previous row (the rows are sorted by host and time), then
    xz at its highest preset: what a columnar file could reach on this data without knowing how
    it was made. The curated file's ratio is bounded by it.
(b) Reading an old hour back at fleet scale: the from-scratch rebuild of one hour
    (`run_hour(rebuild=True)`: load + checks + aggregate + quality + trends + alerts) from the
    raw JSON files, then from its curated Parquet, in the same run; and `lake compact` itself.
    Also the load step alone (lake files -> the warehouse's raw table), which is all the
    curated layer changes: the checks and aggregates after it are the same work either way.
"""

from __future__ import annotations

import argparse
import lzma
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard
from incremental_refresh import TOPIC, LakeBuilder, build_hour

from sysmetrics.batch.hourly import load, run_hour
from sysmetrics.config import load_settings
from sysmetrics.lake import layout
from sysmetrics.lake.compaction import compact_hour, current_manifest, raw_files
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse.duckdb import DuckDBWarehouse

START = datetime(2026, 11, 20, tzinfo=UTC)
MEMORY_LIMIT = load_settings().duckdb_memory_limit
"""As the pipeline compacts (SYSMETRICS_DUCKDB_MEMORY_LIMIT)."""


def storage(root: Path, hosts: int, hours: int) -> None:
    builder = LakeBuilder(root / "lake")
    for n in range(hours):
        build_hour(builder, hosts, START + timedelta(hours=n), seed=n)
    store = LakeStore(str(root / "lake"))
    compressor = zstandard.ZstdCompressor(level=3)
    plain = zst = curated = raw_count = 0
    curated_files: list[Path] = []
    began = time.perf_counter()
    for n in range(hours):
        hour = START + timedelta(hours=n)
        for rel in raw_files(store, TOPIC, hour):
            data = (root / "lake" / rel).read_bytes()
            plain += len(data)
            zst += len(compressor.compress(data))
            raw_count += 1
        compact_hour(store, TOPIC, hour, memory_limit=MEMORY_LIMIT)
        manifest = current_manifest(store, TOPIC, hour)
        assert manifest is not None
        curated_files.append(root / "lake" / layout.curated_hour_dir(TOPIC, hour) / manifest.file)
        curated += curated_files[-1].stat().st_size
    compact_s = (time.perf_counter() - began) / hours
    floor = sum(content_floor(pq.read_table(f)) for f in curated_files)
    host_days = hosts * hours / 24
    print(f"(a) storage: {hosts:,} hosts x {hours} h, writer's layout, default flush")
    print(f"    {'layer':28} {'bytes/host-day':>15} {'vs JSON':>8} {'files/hour':>11}")
    for name, size, files in (
        ("raw JSON (default)", plain, raw_count / hours),
        ("raw .jsonl.zst (level 3)", zst, raw_count / hours),
        ("curated Parquet (zstd)", curated, 1),
    ):
        print(f"    {name:28} {size / host_days:>15,.0f} {plain / size:>7.1f}x {files:>11,.0f}")
    print(
        f"    {'content floor (delta + xz)':28} {floor / host_days:>15,.0f} {plain / floor:>7.1f}x"
        f"   the curated file is {curated / floor:.2f}x the floor"
    )
    print(f"    compaction: {compact_s:.1f} s per hour of {hosts:,} hosts")
    per_month_1k = {
        k: v / host_days * 1000 * 30
        for k, v in (("json", plain), ("zst", zst), ("parquet", curated))
    }
    print(
        "    per 1,000 hosts per month: "
        + ", ".join(f"{k} {v / 2**30:,.1f} GiB" for k, v in per_month_1k.items())
        + f"; raw object writes {raw_count / hours * 24 * 30 * 1000 / hosts:,.0f}"
    )


def leaf_columns(array: pa.Array) -> Iterator[pa.Array]:
    """The primitive columns inside ``array``: struct fields and list elements, recursively."""
    if pa.types.is_struct(array.type):
        for child in array.type:
            yield from leaf_columns(pc.struct_field(array, child.name))
    elif pa.types.is_list(array.type):
        yield from leaf_columns(pc.list_flatten(array))
    else:
        yield array


def content_floor(table: pa.Table) -> int:
    """Bytes of the table's leaf columns, each delta-coded where numeric-ordered and xz -9."""
    total = 0
    for name in table.column_names:
        for column in leaf_columns(table[name].combine_chunks()):
            if pa.types.is_integer(column.type) or pa.types.is_timestamp(column.type):
                values = column.cast(pa.int64()).fill_null(0)
                data = pc.pairwise_diff(values).fill_null(0).buffers()[1].to_pybytes()
            elif pa.types.is_floating(column.type):
                data = column.fill_null(0.0).buffers()[1].to_pybytes()
            else:
                data = "\n".join(str(v) for v in column.to_pylist()).encode()
            total += len(lzma.compress(data, preset=9))
    return total


def rebuild(root: Path, hosts: int) -> None:
    builder = LakeBuilder(root / "lake")
    hour = START
    build_hour(builder, hosts, hour, seed=3)
    builder.watermarks(hour + timedelta(hours=1))
    store = LakeStore(str(root / "lake"))
    settings = load_settings(
        data_dir=root / "data",
        lake_url=str(root / "lake"),
        warehouse_url=str(root / "wh.duckdb"),
    )
    files = len(raw_files(store, TOPIC, hour))

    def measure() -> float:
        wh = DuckDBWarehouse(settings.warehouse_url)
        began = time.perf_counter()
        try:
            run_hour(settings, wh, store, hour, rebuild=True)
        finally:
            wh.close()
        return time.perf_counter() - began

    def measure_load() -> float:
        wh = DuckDBWarehouse(str(root / "load-only.duckdb"))
        try:
            wh.ensure_tables()
            began = time.perf_counter()
            load(wh, store, TOPIC, hour, rebuild=True)
            return time.perf_counter() - began
        finally:
            wh.close()

    from_raw, load_raw = measure(), measure_load()
    began = time.perf_counter()
    done = compact_hour(store, TOPIC, hour, memory_limit=settings.duckdb_memory_limit)
    compact_s = time.perf_counter() - began
    from_curated, load_curated = measure(), measure_load()
    print(f"(b) rebuild of one hour of {hosts:,} hosts ({done.rows:,} events)")
    print(f"    from raw JSON ({files:,} files)    {from_raw:8.1f} s  (load step {load_raw:.1f} s)")
    print(
        f"    from curated Parquet (1 file)  {from_curated:8.1f} s  (load step "
        f"{load_curated:.1f} s)   {from_raw / from_curated:.1f}x faster, load step "
        f"{load_raw / load_curated:.1f}x"
    )
    # The steps after the load are the same work on both paths; estimated on the curated one,
    # whose load step varies least between runs (the raw one's by seconds).
    after_load = from_curated - load_curated
    print(
        f"    the steps after the load: ~{after_load:.1f} s (the curated rebuild less its load"
        f" step); with a load of no cost the curated rebuild is at most"
        f" {from_raw / after_load:.1f}x faster"
    )
    print(f"    lake compact of that hour      {compact_s:8.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hosts", nargs="?", type=int, default=1_000, help="of the storage part")
    parser.add_argument("hours", nargs="?", type=int, default=2, help="of the storage part")
    parser.add_argument("big", nargs="?", type=int, default=10_000, help="hosts of the rebuild")
    args = parser.parse_args()
    hosts, hours, big = args.hosts, args.hours, args.big
    with tempfile.TemporaryDirectory(prefix="sysmetrics-storage-") as tmp:
        storage(Path(tmp) / "a", hosts, hours)
    with tempfile.TemporaryDirectory(prefix="sysmetrics-rebuild-") as tmp:
        rebuild(Path(tmp) / "b", big)


if __name__ == "__main__":
    main()
