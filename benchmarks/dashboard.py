"""The dashboard at fleet scale, in a real browser: a warehouse filled by the real hourly job
from a simulated fleet, the real `sysmetrics dashboard` process, Debian's Chromium driven by
Playwright. Each page is timed from navigation start to the load event (Navigation Timing),
with the warehouse's share beside it (the dashboard's Server-Timing header). The baseline in
the same run is the same pages over a small fleet: the ratio is what the fleet size costs.

    .venv/bin/python benchmarks/dashboard.py [hosts] [--hours H] [--baseline-hosts N]
        (default 10,000 hosts = 3.6 M events an hour; goal: each page <= 1 s on this machine)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import load_settings
from sysmetrics.lake import layout
from sysmetrics.lake.store import LakeStore
from sysmetrics.schema import encode
from sysmetrics.stream.simulator import generate
from sysmetrics.timeutil import hour_floor
from sysmetrics.warehouse import open_warehouse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.ports import free_port

TOPIC = "machine_metrics"
FILE_EVENTS = 20_000
PAGES = {
    "fleet page": "/",
    "fleet, sorted by CPU, page 3": "/?sort=cpu&dir=desc&page=3",
    "fleet, search": "/?q=host-0004",
    "host page (24 h, raw buckets)": "/host?id=sim-42-00042",
    "host page (7 d, hourly)": "/host?id=sim-42-00042&range=7d",
}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def build(root: Path, hosts: int, hours: int) -> tuple[int, float]:
    """Simulated fleet up to now, written in the lake layout, then the real hourly job for each
    hour. Returns (events, seconds the hourly job took)."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = hour_floor(now) - timedelta(hours=hours - 1)
    files: dict[datetime, list[bytes]] = defaultdict(list)
    offset = events = 0

    def flush(hour: datetime) -> None:
        nonlocal offset
        lines = files.pop(hour)
        name = layout.batch_name(TOPIC, 0, offset, offset + len(lines) - 1)
        folder = root / "lake" / layout.hour_dir(TOPIC, hour)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\n".join(lines) + b"\n")
        offset += len(lines)

    for _, event in generate(hosts, start, (now - start).total_seconds()):
        hour = hour_floor(event.ts)
        files[hour].append(encode(event))
        events += 1
        if len(files[hour]) == FILE_EVENTS:
            flush(hour)
    for hour in list(files):
        flush(hour)
    settings = settings_for(root)
    wh = open_warehouse(settings)
    began = time.perf_counter()
    try:
        for n in range(hours):
            run_hour(settings, wh, LakeStore(settings.lake_url), start + timedelta(hours=n))
    finally:
        wh.close()
    return events, time.perf_counter() - began


def settings_for(root: Path):  # type: ignore[no-untyped-def]
    return load_settings(
        data_dir=root / "data", lake_url=str(root / "lake"), warehouse_url=str(root / "wh.duckdb")
    )


def serve(root: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SYSMETRICS_DATA_DIR": str(root / "data"),
        "SYSMETRICS_LAKE_URL": str(root / "lake"),
        "SYSMETRICS_WAREHOUSE_URL": str(root / "wh.duckdb"),
    }
    sysmetrics = str(Path(sys.executable).with_name("sysmetrics"))
    process = subprocess.Popen(
        [sysmetrics, "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the dashboard did not start")


def measure(url: str, repeat: int) -> dict[str, tuple[float, float]]:
    """Median (page load ms, warehouse ms) per page, after one warm-up load each."""
    from playwright.sync_api import sync_playwright

    timings: dict[str, tuple[float, float]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name, path in PAGES.items():
            loads, queries = [], []
            for attempt in range(repeat + 1):
                page.goto(url + path, wait_until="load")
                entry = page.evaluate(
                    """() => { const n = performance.getEntriesByType('navigation')[0];
                    const w = n.serverTiming.find(t => t.name === 'warehouse');
                    return [n.loadEventEnd - n.startTime, w ? w.duration : -1]; }"""
                )
                if attempt:  # the first load warms DuckDB's and the OS's caches
                    loads.append(entry[0])
                    queries.append(entry[1])
            timings[name] = (statistics.median(loads), statistics.median(queries))
        browser.close()
    return timings


def run(hosts: int, hours: int, repeat: int) -> tuple[dict[str, tuple[float, float]], str]:
    with tempfile.TemporaryDirectory(prefix="sysmetrics-dash-") as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        events, job_s = build(root, hosts, hours)
        built = time.perf_counter() - began
        port = free_port()
        process = serve(root, port)
        try:
            timings = measure(f"http://127.0.0.1:{port}", repeat)
        finally:
            process.terminate()
            process.wait(20)
        note = (
            f"{hosts:,} hosts, {events:,} events over {hours} h: built in {built:.0f} s "
            f"(hourly job {job_s:.0f} s)"
        )
        return timings, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hosts", type=int, nargs="?", default=10_000)
    parser.add_argument("--hours", type=int, default=2, help="hours of raw data up to now")
    parser.add_argument("--baseline-hosts", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5, help="timed loads per page")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit("Chromium missing: run scripts/install-system-deps.sh")
    print(f"building and measuring the baseline ({args.baseline_hosts} hosts)...", flush=True)
    small, small_note = run(args.baseline_hosts, args.hours, args.repeat)
    print(f"building and measuring {args.hosts:,} hosts...", flush=True)
    large, large_note = run(args.hosts, args.hours, args.repeat)
    print(f"\nbaseline: {small_note}\nmeasured: {large_note}")
    print(f"median of {args.repeat} loads, navigation start to load event, real Chromium\n")
    header = f"{'page':32} {'load ms':>9} {'warehouse ms':>13} {'baseline ms':>12} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for name in PAGES:
        load, query = large[name]
        base = small[name][0]
        goal = "" if load <= 1000 else "  over the 1 s goal"
        print(f"{name:32} {load:9.0f} {query:13.0f} {base:12.0f} {load / base:6.1f}x{goal}")


if __name__ == "__main__":
    main()
