"""Freshness with default settings: sample → lake file, and hour end → aggregated hour.

A simulated fleet produces in real time (10 s samples, event time = now) into the embedded
broker; one `sysmetrics consume` with the default flush rule (50 records or 60 s) writes the
lake, which this script watches. Baseline in the same run: sample → visible to a bare Kafka
consumer. Then one full simulated hour of the same fleet is aggregated with
`sysmetrics batch run`, timed; the scheduled job starts SYSMETRICS_WATERMARK_GRACE_S (120 s by
default) after the hour ends.

    .venv/bin/python benchmarks/e2e/freshness.py [minutes] [hosts]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer

from sysmetrics.config import load_settings
from sysmetrics.stream.admin import ensure_topic
from sysmetrics.stream.broker import EmbeddedBroker
from sysmetrics.stream.kafka_config import consumer_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.ports import free_port

SYSMETRICS = str(Path(sys.executable).parent / "sysmetrics")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("minutes", nargs="?", type=float, default=4.0, help="of real-time samples")
    parser.add_argument("hosts", nargs="?", type=int, default=30, help="simulated hosts")
    args = parser.parse_args()
    minutes, hosts = args.minutes, args.hosts
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = EmbeddedBroker(root / "broker", free_port())
        broker.start()
        lake = root / "lake"
        env = {
            **os.environ,
            "SYSMETRICS_BOOTSTRAP_SERVERS": broker.bootstrap,
            "SYSMETRICS_LAKE_URL": str(lake),
            "SYSMETRICS_DATA_DIR": str(root / "state"),
            "SYSMETRICS_WAREHOUSE_URL": str(root / "wh.duckdb"),
        }
        settings = load_settings(bootstrap_servers=broker.bootstrap)
        ensure_topic(settings)
        writer = subprocess.Popen(
            [SYSMETRICS, "consume"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        kafka_latency: list[float] = []
        stop = threading.Event()

        def bare_consumer() -> None:
            consumer = Consumer(consumer_config(settings, group_id=f"fresh-{uuid.uuid4().hex[:6]}"))
            consumer.subscribe([settings.topic])
            while not stop.is_set():
                for m in consumer.consume(500, timeout=0.2):
                    if m.error() is None:
                        ts = datetime.fromisoformat(json.loads(m.value())["ts"])
                        kafka_latency.append(time.time() - ts.timestamp())
            consumer.close()

        reader = threading.Thread(target=bare_consumer)
        reader.start()
        sim = subprocess.Popen(
            [
                SYSMETRICS,
                "simulate",
                "--hosts",
                str(hosts),
                "--duration",
                f"{minutes}m",
                "--speedup",
                "1",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seen: dict[Path, float] = {}
        deadline = time.time() + minutes * 60 + 90
        while time.time() < deadline:
            for path in lake.rglob("*.jsonl"):
                seen.setdefault(path, time.time())
            time.sleep(0.25)
        sim.wait()
        stop.set()
        reader.join()
        writer.terminate()
        writer.wait()
        lake_latency = []
        for path, at in seen.items():
            for line in path.read_bytes().splitlines():
                ts = datetime.fromisoformat(json.loads(line)["ts"])
                lake_latency.append(at - ts.timestamp())
        # Hour end → aggregated hour: a full simulated hour of the same fleet.
        hour = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
        subprocess.run(
            [
                SYSMETRICS,
                "simulate",
                "--hosts",
                str(hosts),
                "--duration",
                "1h",
                "--start",
                hour.isoformat(),
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [SYSMETRICS, "consume", "--idle-exit", "3"], env=env, check=True, capture_output=True
        )
        began = time.perf_counter()
        subprocess.run(
            [SYSMETRICS, "batch", "run", "--hour", hour.isoformat()],
            env=env,
            check=True,
            capture_output=True,
        )
        batch_s = time.perf_counter() - began
        broker.stop()
    k50, k99 = pct(kafka_latency, 50), pct(kafka_latency, 99)
    l50, l99 = pct(lake_latency, 50), pct(lake_latency, 99)
    print(
        f"freshness, default settings (flush 50 records / 60 s), {hosts} hosts real time, "
        f"{minutes:g} min, {os.cpu_count()} cores"
    )
    print(
        f"  sample -> Kafka consumer (baseline)  p50 {k50:6.2f} s  p99 {k99:6.2f} s  "
        f"({len(kafka_latency)} events)"
    )
    print(
        f"  sample -> lake file                  p50 {l50:6.2f} s  p99 {l99:6.2f} s  "
        f"({len(lake_latency)} events)  p99 ratio {l99 / k99:,.0f}x baseline"
    )
    print(
        f"  hour end -> aggregated hour          {batch_s:.1f} s of work for "
        f"{hosts * 360} events + the {settings.watermark_grace_s:.0f} s grace = "
        f"{batch_s + settings.watermark_grace_s:.0f} s"
    )


if __name__ == "__main__":
    main()
