"""Finding a query's hours in a lake kept for a long time, on a GCS API (fake-gcs-server).

Remote read (Grafana's panels through Prometheus) and the `lake` commands with --from/--to
ask which hours of a range the lake holds. Up to a week, the range's day folders are listed
(one request each), up to a year its month folders; the baseline, in the same run, is one
listing of every hour folder of both layers (what each request did before, and what an open
range still does).

    .venv/bin/python benchmarks/lake_listing.py [--days 365] [--rounds 3]

The lake: --days of curated hours (a Parquet file and a manifest each, as compaction leaves
them) and the last two days' raw hours. The emulator answers a listing page in milliseconds;
real GCS takes longer per page, so the ratio here is a floor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.gcs import bench_lake

from sysmetrics.lake import layout
from sysmetrics.lake.compaction import hours_between, hours_in_lake
from sysmetrics.lake.store import LakeStore
from sysmetrics.timeutil import hour_floor

TOPIC = "machine_metrics"
LAYERS = ("curated", "raw")
HOUR = timedelta(hours=1)


def fill(store: LakeStore, days: int, now: datetime) -> int:
    files = []
    for n in range(days * 24):
        hour = now - n * HOUR
        curated = layout.curated_hour_dir(TOPIC, hour)
        files += [
            (f"{curated}/{layout.curated_data_name(1)}", b"PAR1"),
            (f"{curated}/{layout.curated_manifest_name(1)}", b"{}"),
        ]
        if n < 48:
            name = layout.batch_name(TOPIC, 0, n * 50, n * 50 + 49)
            files.append((f"{layout.hour_dir(TOPIC, hour)}/{name}", b"{}\n"))
    for start in range(0, len(files), 500):
        store.create_files(files[start : start + 500])
    return len(files)


def timed(store: LakeStore, fn: Callable[[], list[datetime]], rounds: int) -> tuple[float, int]:
    seconds, found = [], 0
    for _ in range(rounds):
        store.fs.invalidate_cache()  # each request of a server finds the lake as it is now
        began = time.perf_counter()
        found = len(fn())
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="days of curated hours")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    now = hour_floor(datetime.now(UTC))
    with bench_lake() as store:
        began = time.perf_counter()
        objects = fill(store, args.days, now)
        print(
            f"lake: {args.days} days of curated hours, 2 days of raw hours, {objects:,} "
            f"objects on fake-gcs-server (written in {time.perf_counter() - began:.0f} s)"
        )

        def whole_lake() -> list[datetime]:
            return sorted(h for layer in LAYERS for h in hours_in_lake(store, TOPIC, layer))

        baseline, every = timed(store, whole_lake, args.rounds)
        print(f"  baseline, every hour folder listed: {baseline * 1000:,.0f} ms ({every:,})")
        spans = {"last hour": 1, "last 24 hours": 24, "last 7 days": 168, "last 30 days": 720}
        for label, span in spans.items():
            first = now - (span - 1) * HOUR

            def query(first: datetime = first) -> list[datetime]:
                return hours_between(store, TOPIC, LAYERS, first, now)

            seconds, found = timed(store, query, args.rounds)
            print(
                f"  {label:>14}: {seconds * 1000:7,.0f} ms ({found} hours): "
                f"{baseline / seconds:,.1f}x faster than the baseline"
            )


if __name__ == "__main__":
    main()
