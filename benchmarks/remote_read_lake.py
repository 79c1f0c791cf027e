"""Remote read of history the warehouse no longer holds, answered from the lake.

With `SYSMETRICS_WAREHOUSE_RAW_RETENTION_DAYS` set, a Grafana panel over older days reads
those hours from the lake. One host's raw CPU over --hours of compacted lake, timed (median of
--rounds) as a request reads it: each hour's files looked up (16 at a time), then one DuckDB
statement for the whole range (a single scan of the curated files that hold their hour alone).
Baseline in the same run: an hour at a time, a lookup and a statement each (what each request
did before). Both must return the same rows; the script stops if they differ.

    .venv/bin/python benchmarks/remote_read_lake.py [--hosts 10] [--hours 240] [--rounds 3] [--gcs]

--gcs puts the same lake on a GCS API (fake-gcs-server) and reads it through gcsfs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.gcs import bench_lake
from tests.support.lakes import write_simulated_fleet

from sysmetrics.lake.compaction import compact_hour, hour_source, hour_sources, hours_between
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse import sql
from sysmetrics.warehouse.duckdb import DuckDBWarehouse

TOPIC = "machine_metrics"
START = datetime(2026, 10, 1, tzinfo=UTC)
STATEMENT = sql.read_raw(["cpu_pct"], "host_id = @host")


@contextmanager
def lake(root: Path, hours: int, hosts: int, gcs: bool) -> Iterator[LakeStore]:
    began = time.perf_counter()
    write_simulated_fleet(root, hosts=hosts, start=START, hours=hours, seed=5)
    local = LakeStore(str(root))
    for n in range(hours):
        compact_hour(local, TOPIC, START + timedelta(hours=n))
    print(f"lake: {hosts} hosts x {hours} hours, compacted ({time.perf_counter() - began:.0f} s)")
    if not gcs:
        yield local
        return
    with bench_lake() as store:
        for path in root.rglob("*"):
            if path.is_file():
                store.put(str(path.relative_to(root)), path.read_bytes())
        print("  copied to fake-gcs-server")
        yield store


def timed(fn: Callable[[], list[dict[str, Any]]], rounds: int) -> tuple[float, list[Any]]:
    seconds, rows = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        rows = fn()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--hours", type=int, default=240, help="hours of lake, all read")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gcs", action="store_true", help="the lake on fake-gcs-server")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        lake(Path(tmp), args.hours, args.hosts, args.gcs) as store,
    ):
        engine = DuckDBWarehouse(":memory:")
        if not store.is_local:
            engine.use_filesystem(store.fs)
        last = START + timedelta(hours=args.hours - 1)
        start, end = START + timedelta(minutes=30), last + timedelta(minutes=59)
        params = {"start": start, "end": end, "host": "sim-5-00000"}

        def one_statement() -> list[dict[str, Any]]:
            hours = hours_between(store, TOPIC, ("curated", "raw"), START, last)
            return engine.lake_rows(STATEMENT, hour_sources(store, TOPIC, hours), **params)

        def hour_by_hour() -> list[dict[str, Any]]:
            rows = []
            for hour in hours_between(store, TOPIC, ("curated", "raw"), START, last):
                source = hour_source(store, TOPIC, hour)
                if source is not None:
                    rows += engine.lake_rows(STATEMENT, [(hour, source)], **params)
            return rows

        baseline, expected = timed(hour_by_hour, args.rounds)
        seconds, rows = timed(one_statement, args.rounds)
        if rows != expected:
            raise SystemExit("the two ways read different rows")
        print(f"  baseline, an hour at a time: {baseline:.2f} s ({len(expected):,} samples)")
        print(f"  one statement for the range: {seconds:.2f} s: {baseline / seconds:.1f}x faster")


if __name__ == "__main__":
    main()
