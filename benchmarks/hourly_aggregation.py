"""One hour of a fleet loaded and aggregated in DuckDB (sysmetrics.batch), against a pandas
implementation of the same aggregation in the same run. Each runs in its own process so its
peak RSS is its own.

    .venv/bin/python benchmarks/hourly_aggregation.py [hosts] [--lake DIR] [--pandas-on both]
        (default 2,000 hosts; 10,000 = 3.6 M events; --lake keeps and reuses the generated lakes)

Two lakes of the same events: the lake writer's default layout (files of 50 records per
partition, uncompressed: what the pipeline really writes) and large .jsonl.zst files, side by
side. Each lake is built in its own process and each engine runs in its own, so a peak RSS
is that engine's alone (a child forked from a parent that built the lake would report the
parent's high-water mark: Linux carries ru_maxrss across fork and exec).

Two pandas variants: json_normalize (what the pandas docs suggest for nested JSON) and a
leaner hand-flattening reader; both then run the same aggregation, and every figure they
produce is compared with DuckDB's table (the count of differing values is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import zstandard

HOUR = datetime(2026, 11, 27, 14, tzinfo=UTC)


def build_lake(lake: Path, hosts: int, flush_records: int, compression: str) -> int:
    """The hour as the lake writer lays it out: per partition (3, by host key), files of
    ``flush_records`` events in offset order, named by their offsets."""
    import zlib

    from sysmetrics.lake import layout
    from sysmetrics.schema import encode
    from sysmetrics.stream.simulator import generate

    folder = lake / layout.hour_dir("machine_metrics", HOUR)
    folder.mkdir(parents=True)
    pending: dict[int, list[bytes]] = defaultdict(list)
    offsets = [0, 0, 0]
    count = 0

    def flush(partition: int) -> None:
        lines = pending.pop(partition)
        start = offsets[partition]
        offsets[partition] += len(lines)
        name = layout.batch_name(
            "machine_metrics", partition, start, start + len(lines) - 1, compression
        )
        data = b"\n".join(lines) + b"\n"
        if compression == "zstd":
            data = zstandard.ZstdCompressor().compress(data)
        (folder / name).write_bytes(data)

    for _, event in generate(hosts, HOUR, 3600, 10, 21):
        if event.ts < HOUR:
            continue
        partition = zlib.crc32(event.host.host_id.encode()) % 3
        pending[partition].append(encode(event))
        count += 1
        if len(pending[partition]) == flush_records:
            flush(partition)
    for partition in list(pending):
        flush(partition)
    return count


def run_duckdb(lake: Path, work: Path) -> dict[str, object]:
    from sysmetrics.batch.hourly import run_hour
    from sysmetrics.config import load_settings
    from sysmetrics.lake.store import LakeStore
    from sysmetrics.warehouse import open_warehouse

    settings = load_settings(
        lake_url=str(lake), warehouse_url=str(work / "wh.duckdb"), lookback_hours=0
    )
    wh = open_warehouse(settings)
    start = time.perf_counter()
    result = run_hour(settings, wh, LakeStore.from_settings(settings), HOUR)
    elapsed = time.perf_counter() - start
    hosts = wh.native_query("SELECT COUNT(*) AS n FROM hourly_host_metrics")[0]["n"]
    wh.close()
    return {"seconds": elapsed, "rows": result.rows, "hosts": hosts}


def _reduce(items: list[dict[str, Any]] | None, field: str, how: str) -> float | None:
    values = [i[field] for i in items or () if i.get(field) is not None]
    if not values:
        return None
    if how == "max":
        return max(values)
    return sum(values) / len(values) if how == "avg" else sum(values)


# The raw-table columns taken straight from a nested field, and those reduced from a list.
_NESTED = {
    "hostname": "host.hostname",
    "cpu_pct": "cpu.utilization_pct",
    "mem_used_pct": "memory.used_pct",
    "swap_used_pct": "swap.used_pct",
    "disk_read_bytes": "disk_io.read_bytes",
    "disk_write_bytes": "disk_io.write_bytes",
    "net_bytes_sent": "network.bytes_sent",
    "net_bytes_recv": "network.bytes_recv",
    "battery_pct": "battery.percent",
    "battery_health_pct": "battery.health_pct",
}
_LISTS = {
    "disk_used_pct": ("disks", "used_pct", "max"),
    "temp_max_celsius": ("temperatures", "celsius", "max"),
    "gpu_util_pct": ("gpus", "utilization_pct", "avg"),
    "gpu_mem_used_bytes": ("gpus", "memory_used_bytes", "sum"),
    "gpu_temp_max_celsius": ("gpus", "temperature_celsius", "max"),
    "gpu_power_watts": ("gpus", "power_watts", "sum"),
}


def _read_lines(path: Path) -> list[bytes]:
    if not path.name.endswith(".zst"):
        return path.read_bytes().splitlines()
    with zstandard.ZstdDecompressor().stream_reader(path.open("rb")) as reader:
        return reader.read().splitlines()


def parse_normalize(path: Path) -> Any:
    """The idiomatic pandas way: json.loads, json_normalize, list columns reduced by map."""
    import pandas as pd

    df = pd.json_normalize([json.loads(line) for line in _read_lines(path)])
    flat = pd.DataFrame(
        {
            "event_id": df["event_id"],
            "ts": pd.to_datetime(df["ts"]),
            "host_id": df["host.host_id"],
            **{name: df.get(field) for name, field in _NESTED.items()},
            **{
                name: df[items].map(lambda v, f=field, h=how: _reduce(v, f, h))
                for name, (items, field, how) in _LISTS.items()
            },
        }
    )
    flat["source_file"] = path.name
    return flat


def parse_by_hand(path: Path) -> Any:
    """A leaner pandas user: json.loads, only the needed fields into columns, no normalize."""
    import pandas as pd

    records = [json.loads(line) for line in _read_lines(path)]
    columns: dict[str, list[Any]] = {"event_id": [], "ts": [], "host_id": []}
    columns |= {name: [] for name in (*_NESTED, *_LISTS)}
    nested = [(name, *field.split(".")) for name, field in _NESTED.items()]
    for r in records:
        columns["event_id"].append(r["event_id"])
        columns["ts"].append(r["ts"])
        columns["host_id"].append(r["host"]["host_id"])
        for name, group, field in nested:
            columns[name].append((r.get(group) or {}).get(field))
        for name, (items, field, how) in _LISTS.items():
            columns[name].append(_reduce(r.get(items), field, how))
    flat = pd.DataFrame(columns)
    flat["ts"] = pd.to_datetime(flat["ts"])
    flat["source_file"] = path.name
    return flat


def aggregate_pandas(df: Any) -> Any:
    """warehouse/sql.py AGGREGATE in pandas: dedup by event_id, counter deltas with resets,
    exact (linear) percentiles, rates from deltas over the time between samples."""
    import numpy as np
    import pandas as pd

    df = df.sort_values("source_file", kind="stable").drop_duplicates("event_id")
    df = df[(df["ts"] >= HOUR) & (df["ts"] < HOUR + timedelta(hours=1))]
    df = df.sort_values(["host_id", "ts"]).reset_index(drop=True)
    by_host = df.groupby("host_id", sort=False)
    dt = by_host["ts"].diff().dt.total_seconds()
    reset = pd.Series(False, index=df.index)
    for name, column in (
        ("sent", "net_bytes_sent"),
        ("recv", "net_bytes_recv"),
        ("read", "disk_read_bytes"),
        ("write", "disk_write_bytes"),
    ):
        delta = by_host[column].diff()
        reset |= delta < 0
        df["inc_" + name] = delta.where(~(delta < 0), df[column])
        df["dt_" + name] = dt.where(df["inc_" + name].notna())
        df["rate_" + name] = df["inc_" + name] / dt.replace(0, np.nan)
    df["is_reset"] = reset.astype(int)
    g = df.groupby("host_id")
    out = g.agg(
        hostname=("hostname", "last"),
        samples=("event_id", "size"),
        first_ts=("ts", "min"),
        last_ts=("ts", "max"),
        cpu_avg=("cpu_pct", "mean"),
        cpu_min=("cpu_pct", "min"),
        cpu_max=("cpu_pct", "max"),
        mem_avg=("mem_used_pct", "mean"),
        mem_max=("mem_used_pct", "max"),
        swap_avg=("swap_used_pct", "mean"),
        swap_max=("swap_used_pct", "max"),
        disk_used_avg=("disk_used_pct", "mean"),
        disk_used_max=("disk_used_pct", "max"),
        temp_avg=("temp_max_celsius", "mean"),
        temp_max=("temp_max_celsius", "max"),
        gpu_util_avg=("gpu_util_pct", "mean"),
        gpu_util_max=("gpu_util_pct", "max"),
        gpu_mem_used_max=("gpu_mem_used_bytes", "max"),
        gpu_temp_max=("gpu_temp_max_celsius", "max"),
        gpu_power_avg=("gpu_power_watts", "mean"),
        gpu_power_max=("gpu_power_watts", "max"),
        net_sent_bytes=("inc_sent", "sum"),
        net_recv_bytes=("inc_recv", "sum"),
        net_sent_rate_peak=("rate_sent", "max"),
        net_recv_rate_peak=("rate_recv", "max"),
        disk_read_bytes=("inc_read", "sum"),
        disk_write_bytes=("inc_write", "sum"),
        disk_read_rate_peak=("rate_read", "max"),
        disk_write_rate_peak=("rate_write", "max"),
        counter_resets=("is_reset", "sum"),
        battery_health_pct=("battery_health_pct", "last"),
        battery_min_pct=("battery_pct", "min"),
    )
    out["completeness_pct"] = (100.0 * out["samples"] / 360).round(2)
    for name in ("sent", "recv"):
        out[f"net_{name}_rate_avg"] = g["inc_" + name].sum() / g["dt_" + name].sum()
    for column, source in (
        ("cpu_p95", "cpu_pct"),
        ("mem_p95", "mem_used_pct"),
        ("temp_p95", "temp_max_celsius"),
        ("gpu_util_p95", "gpu_util_pct"),
    ):
        out[column] = g[source].quantile(0.95)
    return out


def run_pandas(lake: Path, work: Path, parse: str) -> dict[str, object]:
    """The same hourly table in pandas, then every figure checked against DuckDB's."""
    import duckdb
    import numpy as np
    import pandas as pd

    reader = parse_normalize if parse == "normalize" else parse_by_hand
    start = time.perf_counter()
    df = pd.concat([reader(p) for p in sorted(lake.rglob("*.jsonl*"))], ignore_index=True)
    rows = len(df)
    result = aggregate_pandas(df)
    elapsed = time.perf_counter() - start
    del df
    with duckdb.connect(str(work / "wh.duckdb"), read_only=True) as con:
        expected = con.execute("SELECT * FROM hourly_host_metrics").df().set_index("host_id")
    mismatched = 0
    for column in result.columns:
        ours, theirs = result[column], expected.loc[result.index, column]
        if column in ("hostname",):
            mismatched += int((ours != theirs).sum())
        elif column.endswith("_ts"):
            mismatched += int((ours.values != theirs.dt.tz_convert("UTC").values).sum())
        else:
            same = np.isclose(
                ours.astype(float), theirs.astype(float), rtol=1e-6, atol=1e-6, equal_nan=True
            )
            mismatched += int((~same).sum())
    return {
        "seconds": elapsed,
        "rows": rows,
        "hosts": len(result),
        "mismatched_values": mismatched,
        "compared_values": result.size,
    }


def child(kind: str, lake: Path, work: Path) -> None:
    if kind == "duckdb":
        result = run_duckdb(lake, work)
    else:
        result = run_pandas(lake, work, kind.removeprefix("pandas-"))
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


KINDS = ("duckdb", "pandas-normalize", "pandas-hand")
LAYOUTS = {
    "writer default (50-record .jsonl files)": (50, "none"),
    "large files (60,000-record .jsonl.zst)": (60_000, "zstd"),
}


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{args[0]} failed:\n{out.stderr}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in KINDS:
        child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "build":
        events = build_lake(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        print(json.dumps({"events": events}))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hosts", type=int, nargs="?", default=2_000)
    parser.add_argument("--lake", type=Path, help="keep the generated lakes here and reuse them")
    parser.add_argument(
        "--pandas-on",
        choices=("large", "both"),
        default="large",
        help="run the pandas variants on the large-file lake only (default) or on both",
    )
    args = parser.parse_args()
    print(f"hourly aggregation, {args.hosts:,} hosts, {os.cpu_count()} cores", flush=True)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = args.lake or Path(tmp)
        for index, (layout_name, (flush_records, compression)) in enumerate(LAYOUTS.items()):
            lake, work = base / f"lake{index}", Path(tmp) / f"work{index}"
            work.mkdir()
            began = time.perf_counter()
            if not lake.exists():  # built in its own process: no engine inherits its memory
                run_child("build", str(lake), str(args.hosts), str(flush_records), compression)
            files = [p for p in lake.rglob("*.jsonl*")]
            size = sum(p.stat().st_size for p in files) / 2**20
            print(
                f"\n{layout_name}: {len(files):,} files, {size:,.0f} MiB "
                f"(ready in {time.perf_counter() - began:.0f} s)",
                flush=True,
            )
            kinds = KINDS if index == 1 or args.pandas_on == "both" else KINDS[:1]
            for kind in kinds:
                r = run_child(kind, str(lake), str(work))
                results.setdefault(layout_name, {})[kind] = r
                check = (
                    f"  {r['mismatched_values']:,} of {r['compared_values']:,} values differ "
                    "from DuckDB's"
                    if "compared_values" in r
                    else ""
                )
                print(
                    f"  {kind:<17} {r['seconds']:7.1f} s  {r['rows']:>10,} rows  "
                    f"{r['hosts']:>6,} hosts  peak RSS {r['peak_rss_mib']:,.0f} MiB{check}",
                    flush=True,
                )
    default, large = (results[name] for name in LAYOUTS)
    duck = large["duckdb"]["seconds"]
    print(
        f"\n  DuckDB on the writer's default layout takes "
        f"{default['duckdb']['seconds'] / duck:.1f}x as long as on large files"
    )
    for kind in KINDS[1:]:
        print(
            f"  DuckDB (load + checks + aggregate + trends + alerts) is "
            f"{large[kind]['seconds'] / duck:.1f}x faster than {kind} (load + aggregate)"
        )


if __name__ == "__main__":
    main()
