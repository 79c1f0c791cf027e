"""One hour of a fleet loaded and aggregated in DuckDB (sysmetrics.batch), against a pandas
implementation of the same aggregation in the same run. Each runs in its own process so its
peak RSS is its own.

    .venv/bin/python benchmarks/hourly_aggregation.py [hosts]     (default 2,000; 10,000 = 3.6 M)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import zstandard

HOUR = datetime(2026, 11, 27, 14, tzinfo=UTC)


def build_lake(lake: Path, hosts: int) -> int:
    from sysmetrics.lake import layout
    from sysmetrics.schema import encode
    from sysmetrics.stream.simulator import generate

    folder = lake / layout.hour_dir("machine_metrics", HOUR)
    folder.mkdir(parents=True)
    files: dict[int, list[bytes]] = defaultdict(list)
    count = 0
    for _, event in generate(hosts, HOUR, 3600, 10, 21):
        if event.ts < HOUR:
            continue
        files[count // 60_000].append(encode(event))
        count += 1
    for index, lines in files.items():
        name = layout.batch_name(
            "machine_metrics", 0, index * 60_000, index * 60_000 + len(lines) - 1, "zstd"
        )
        (folder / name).write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n"))
    return count


def run_duckdb(lake: Path, work: Path) -> dict[str, object]:
    from sysmetrics.batch.hourly import run_hour
    from sysmetrics.config import load_settings
    from sysmetrics.lake.store import LakeStore
    from sysmetrics.warehouse.duckdb import DuckDBWarehouse

    settings = load_settings(
        lake_url=str(lake), warehouse_url=str(work / "wh.duckdb"), lookback_hours=0
    )
    wh = DuckDBWarehouse(settings.warehouse_url)
    start = time.perf_counter()
    result = run_hour(settings, wh, LakeStore(str(lake)), HOUR)
    elapsed = time.perf_counter() - start
    hosts = wh.native_query("SELECT COUNT(*) AS n FROM hourly_host_metrics")[0]["n"]
    wh.close()
    return {"seconds": elapsed, "rows": result.rows, "hosts": hosts}


def run_pandas(lake: Path) -> dict[str, object]:
    """The same per-host-hour figures (count, avg/min/max/p95 CPU and memory, counter deltas
    with resets), the way a pandas user would write them."""
    import pandas as pd

    start = time.perf_counter()
    frames = []
    for path in sorted(lake.rglob("*.jsonl.zst")):
        with zstandard.ZstdDecompressor().stream_reader(path.open("rb")) as reader:
            records = [json.loads(line) for line in reader.read().splitlines()]
        frames.append(pd.json_normalize(records))
    df = pd.concat(frames, ignore_index=True).drop_duplicates("event_id")
    df["ts"] = pd.to_datetime(df["ts"])
    df = df.sort_values(["host.host_id", "ts"])
    for column in ("network.bytes_sent", "network.bytes_recv"):
        delta = df.groupby("host.host_id")[column].diff()
        df[column + ".inc"] = delta.where(delta >= 0, df[column])
    grouped = df.groupby("host.host_id")
    result = grouped.agg(
        samples=("event_id", "count"),
        cpu_avg=("cpu.utilization_pct", "mean"),
        cpu_min=("cpu.utilization_pct", "min"),
        cpu_max=("cpu.utilization_pct", "max"),
        mem_avg=("memory.used_pct", "mean"),
        mem_max=("memory.used_pct", "max"),
        net_sent=("network.bytes_sent.inc", "sum"),
        net_recv=("network.bytes_recv.inc", "sum"),
    )
    result["cpu_p95"] = grouped["cpu.utilization_pct"].quantile(0.95)
    result["mem_p95"] = grouped["memory.used_pct"].quantile(0.95)
    return {"seconds": time.perf_counter() - start, "rows": len(df), "hosts": len(result)}


def child(kind: str, lake: Path, work: Path) -> None:
    result = run_duckdb(lake, work) if kind == "duckdb" else run_pandas(lake)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("duckdb", "pandas"):
        child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
        return
    hosts = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    with tempfile.TemporaryDirectory() as tmp:
        lake, work = Path(tmp) / "lake", Path(tmp)
        began = time.perf_counter()
        events = build_lake(lake, hosts)
        size = sum(p.stat().st_size for p in lake.rglob("*.zst")) / 2**20
        print(
            f"hourly aggregation, {hosts:,} hosts, {events:,} events "
            f"({size:,.0f} MiB .jsonl.zst, built in {time.perf_counter() - began:.0f} s), "
            f"{os.cpu_count()} cores"
        )
        results = {}
        for kind in ("duckdb", "pandas"):
            out = subprocess.run(
                [sys.executable, __file__, kind, str(lake), str(work)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    d, p = results["duckdb"], results["pandas"]
    for kind, r in results.items():
        print(
            f"  {kind:<7} {r['seconds']:7.1f} s  {r['rows']:>10,} rows  {r['hosts']:>6,} hosts  "
            f"peak RSS {r['peak_rss_mib']:,.0f} MiB"
        )
    print(
        f"  DuckDB load + aggregate + trends + alerts is {p['seconds'] / d['seconds']:.1f}x "
        "faster than pandas computing a subset of the aggregates"
    )


if __name__ == "__main__":
    main()
