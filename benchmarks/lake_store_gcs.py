"""One flush round's files created on a GCS API (fake-gcs-server): concurrently, as the lake
writer does, against one request after another in the same run.

    .venv/bin/python benchmarks/lake_store_gcs.py [files] [bytes per file]

The emulator answers in about a millisecond; real GCS takes tens of ms per create, so the ratio
here is a floor.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.gcs import bench_lake

from sysmetrics.lake.store import UPLOAD_CONCURRENCY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", nargs="?", type=int, default=200, help="files")
    parser.add_argument(
        "size", nargs="?", type=int, default=60_000, help="bytes a file (~50 events of 1.2 kB)"
    )
    args = parser.parse_args()
    count, size = args.count, args.size
    with bench_lake() as store:
        one_by_one = [(f"raw/a/{i}.jsonl", b"x" * size) for i in range(count)]
        began = time.perf_counter()
        for rel, data in one_by_one:
            store.create_files([(rel, data)])
        sequential = time.perf_counter() - began
        together = [(f"raw/b/{i}.jsonl", b"x" * size) for i in range(count)]
        began = time.perf_counter()
        created = store.create_files(together)
        concurrent = time.perf_counter() - began
        replayed = store.create_files(together)
    assert all(created) and not any(replayed)
    print(f"{count} creates of {size:,} bytes on fake-gcs-server")
    print(f"  one request after another   {sequential:6.2f} s  {count / sequential:7.0f} files/s")
    print(
        f"  {UPLOAD_CONCURRENCY} in flight (the writer)     {concurrent:6.2f} s  "
        f"{count / concurrent:7.0f} files/s  {sequential / concurrent:.1f}x"
    )


if __name__ == "__main__":
    main()
