"""Keeping the warehouse current at fleet scale: incremental refreshes against today's
whole-hour reload, on a lake in the lake writer's real layout (default flush: files of 50
records per partition, a round manifest per partition and minute, watermarks).

    .venv/bin/python benchmarks/incremental_refresh.py [hosts] [--keep DIR]
        (default 10,000 hosts: 3.6 M events and ~72,000 files an hour)

Scenarios, each next to the whole-hour path (`run_hour(rebuild=True)`, every file of the hour
read again) in the same run:
  (a) a live refresh at minute 59: the hour loaded up to minute 58, the last minute new;
  (b) the finished hour: its last run, once the final minute has landed;
  (c) one late file (a laptop's spool) for an hour 20 hours old, that hour fully loaded;
  (d) for each: files read and object-store list/read calls.
The lake is built in a child process, so the measuring process's memory is its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import tempfile
import time
import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import Settings, load_settings
from sysmetrics.lake import layout
from sysmetrics.lake.catalog import RoundManifest, Watermark
from sysmetrics.lake.store import LakeStore
from sysmetrics.schema import encode
from sysmetrics.stream.simulator import generate
from sysmetrics.timeutil import hour_floor
from sysmetrics.warehouse.duckdb import DuckDBWarehouse

TOPIC = "machine_metrics"
PARTITIONS = 3
FLUSH_RECORDS = 50
NOW = hour_floor(datetime.now(UTC)) + timedelta(minutes=59, seconds=30)
CURRENT = hour_floor(NOW)
OLD = CURRENT - timedelta(hours=20)


class LakeBuilder:
    """Writes like the lake writer: per partition, 50-record files in offset order, one
    manifest per partition and minute of writing, and the partitions' watermarks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.offsets = [0] * PARTITIONS
        self.files = 0

    def round(self, events: list[bytes], keys: list[str], written: datetime) -> None:
        by_partition: dict[int, list[tuple[bytes, str]]] = defaultdict(list)
        for line, key in zip(events, keys, strict=True):
            by_partition[zlib.crc32(key.encode()) % PARTITIONS].append((line, key))
        for partition, records in by_partition.items():
            start = self.offsets[partition]
            names = []
            for i in range(0, len(records), FLUSH_RECORDS):
                chunk = records[i : i + FLUSH_RECORDS]
                first = start + i
                by_hour: dict[datetime, list[bytes]] = defaultdict(list)
                for line, _ in chunk:
                    ts = datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00"))
                    by_hour[hour_floor(ts)].append(line)
                for hour, lines in by_hour.items():
                    name = layout.batch_name(TOPIC, partition, first, first + len(chunk) - 1)
                    rel = f"{layout.hour_dir(TOPIC, hour)}/{name}"
                    path = self.root / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(b"\n".join(lines) + b"\n")
                    names.append(rel)
                    self.files += 1
            end = start + len(records) - 1
            self.offsets[partition] = end + 1
            manifest = RoundManifest(partition, start, end, names)
            target = self.root / layout.manifest_path(TOPIC, written, partition, start)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(manifest.encode())

    def watermarks(self, complete_before: datetime) -> None:
        for partition, committed in enumerate(self.offsets):
            mark = Watermark(partition, committed, complete_before)
            target = self.root / layout.watermark_path(TOPIC, partition)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(mark.encode())


def build_hour(
    builder: LakeBuilder, hosts: int, hour: datetime, seed: int, written_minutes: int = 60
) -> dict[int, tuple[list[bytes], list[str]]]:
    """The hour's events, written minute by minute as rounds up to ``written_minutes``; the
    later minutes' rounds are returned, not written."""
    per_minute: dict[int, tuple[list[bytes], list[str]]] = defaultdict(lambda: ([], []))
    arrival = random.Random(seed)
    for emit_at, event in generate(hosts, hour, 3600.0, 10.0, seed):
        # Stamped as the lake writer stamps each line: its arrival at Kafka, a little after.
        event.received_at = hour + timedelta(seconds=emit_at + arrival.uniform(0.005, 0.4))
        lines, keys = per_minute[min(int(emit_at // 60), 59)]
        lines.append(encode(event))
        keys.append(event.host.host_id)
    for minute, (lines, keys) in sorted(per_minute.items()):
        if minute < written_minutes:
            builder.round(lines, keys, hour + timedelta(minutes=minute + 1))
    return {m: rounds for m, rounds in per_minute.items() if m >= written_minutes}


def settings_for(root: Path) -> Settings:
    return load_settings(
        data_dir=root / "data",
        lake_url=str(root / "lake"),
        warehouse_url=str(root / "wh.duckdb"),
        flush_records=FLUSH_RECORDS,
    )


def measure(settings: Settings, hour: datetime, rebuild: bool = False) -> dict[str, float]:
    store = LakeStore(settings.lake_url)
    wh = DuckDBWarehouse(settings.warehouse_url)
    began = time.perf_counter()
    try:
        result = run_hour(settings, wh, store, hour, rebuild=rebuild)
    finally:
        wh.close()
    return {
        "seconds": time.perf_counter() - began,
        "files_read": result.read + result.late_read,
        "lists": store.calls["list"],
        "reads": store.calls["read"],
    }


def stage(root: str, hosts: int, step: str) -> None:
    """One step in a child process: builds and loads happen where their memory is counted."""
    base = Path(root)
    builder_state = base / "builder.json"
    builder = LakeBuilder(base / "lake")
    if builder_state.exists():
        state = json.loads(builder_state.read_text())
        builder.offsets, builder.files = state["offsets"], state["files"]
    if step == "old hour":
        build_hour(builder, hosts, OLD, seed=3)
        builder.watermarks(OLD + timedelta(hours=1))
    elif step == "58 minutes":
        rest = build_hour(builder, hosts, CURRENT, seed=4, written_minutes=58)
        builder.watermarks(CURRENT + timedelta(minutes=58))
        (base / "rest.json").write_text(
            json.dumps(
                {m: ([x.decode() for x in lines], keys) for m, (lines, keys) in rest.items()}
            )
        )
    builder_state.write_text(json.dumps({"offsets": builder.offsets, "files": builder.files}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hosts", type=int, nargs="?", default=10_000)
    parser.add_argument("--keep", help="build the lake here and keep it")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="sysmetrics-refresh-"))
    settings = settings_for(root)
    ctx = multiprocessing.get_context("spawn")

    def child(step: str) -> None:
        process = ctx.Process(target=stage, args=(str(root), args.hosts, step))
        process.start()
        process.join()
        assert process.exitcode == 0, step

    rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
    print(f"{args.hosts:,} hosts; lake at {root}", flush=True)
    child("old hour")
    measure(settings, OLD)  # the old hour, loaded once
    child("58 minutes")
    measure(settings, CURRENT)  # the hour so far, loaded once

    # (a) the last minute lands, a live refresh runs.
    builder = LakeBuilder(root / "lake")
    state = json.loads((root / "builder.json").read_text())
    builder.offsets, builder.files = state["offsets"], state["files"]
    last = {
        int(m): ([x.encode() for x in lines], keys)
        for m, (lines, keys) in json.loads((root / "rest.json").read_text()).items()
    }
    lines, keys = last[58]
    builder.round(lines, keys, CURRENT + timedelta(minutes=59))
    builder.watermarks(CURRENT + timedelta(minutes=59))
    rows.append(("(a) live refresh at minute 59", measure(settings, CURRENT), {}))
    # (b) the final minute, then the finished hour's run.
    lines, keys = last[59]
    builder.round(lines, keys, CURRENT + timedelta(hours=1))
    builder.watermarks(CURRENT + timedelta(hours=1))
    rows.append(("(b) the finished hour", measure(settings, CURRENT), {}))
    whole = measure(settings, CURRENT, rebuild=True)
    rows[0] = (rows[0][0], rows[0][1], whole)
    rows[1] = (rows[1][0], rows[1][1], whole)
    # (c) one late file for the hour 20 h old.
    late = [e for _, e in generate(1, OLD + timedelta(minutes=30), 300.0, 10.0, 77)]
    builder.round([encode(e) for e in late], [e.host.host_id for e in late], NOW)
    builder.watermarks(CURRENT + timedelta(hours=1))
    rows.append(("(c) one late file, hour 20 h old", measure(settings, CURRENT), {}))
    rows[2] = (rows[2][0], rows[2][1], measure(settings, OLD, rebuild=True))

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nlake: {builder.files:,} files; peak RSS of the measuring process {peak:,.0f} MiB\n")
    header = (
        f"{'scenario':34} {'incremental s':>13} {'files':>7} {'lists':>6} {'reads':>6}"
        f" {'whole-hour s':>13} {'files':>7} {'speed-up':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, inc, full in rows:
        print(
            f"{name:34} {inc['seconds']:13.1f} {inc['files_read']:7.0f} {inc['lists']:6.0f}"
            f" {inc['reads']:6.0f} {full['seconds']:13.1f} {full['files_read']:7.0f}"
            f" {full['seconds'] / inc['seconds']:8.1f}x"
        )


if __name__ == "__main__":
    main()
