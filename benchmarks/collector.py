"""Collector cost and simulator speed.

1. CPU time per sample of this machine (all readers, encode, spool append with fsync) and its
   share of one core at the default 10 s interval. Goal: <= 20 ms per sample, <= 0.2 %.
2. The simulator's events/s into a real Tansu broker against a raw confluent-kafka produce
   loop of the same (pre-encoded) messages in the same run.

    .venv/bin/python benchmarks/collector.py [events]
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer

from sysmetrics.collect.sampler import Sampler
from sysmetrics.config import load_settings
from sysmetrics.schema import encode
from sysmetrics.stream.admin import ensure_topic
from sysmetrics.stream.broker import EmbeddedBroker, free_port
from sysmetrics.stream.kafka_config import producer_config
from sysmetrics.stream.simulator import generate, run_simulation
from sysmetrics.stream.spool import Spool


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def collector_cost(samples: int = 200) -> float:
    sampler = Sampler()
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp), 1 << 30)
        time.sleep(0.2)
        start = cpu_seconds()
        for _ in range(samples):
            spool.append(b"key", encode(sampler.sample()))
        per_sample = (cpu_seconds() - start) / samples
        spool.close()
    return per_sample


def raw_produce_rate(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    producer = Producer(
        {**producer_config(load_settings(bootstrap_servers=bootstrap)), "linger.ms": 20}
    )
    start = time.perf_counter()
    for key, value in payloads:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    return len(payloads) / (time.perf_counter() - start)


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 360_000
    per_sample = collector_cost()
    print(
        f"collector on this machine ({os.cpu_count()} cores): {per_sample * 1000:.2f} ms CPU "
        f"per sample, {100 * per_sample / 10:.3f} % of one core at the 10 s interval "
        f"(goal <= 20 ms, <= 0.2 %)"
    )
    hosts = total // 360
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(Path(tmp), free_port())
        broker.start()
        try:
            start = datetime(2026, 11, 27, tzinfo=UTC)
            payloads = [
                (e.host.host_id.encode(), encode(e)) for _, e in generate(hosts, start, 3600, 10, 9)
            ]
            settings = load_settings(bootstrap_servers=broker.bootstrap, topic="sim")
            ensure_topic(settings)
            raw = raw_produce_rate(broker.bootstrap, "raw", payloads)
            stats = run_simulation(settings, hosts, 3600, start, seed=9)
            sim = stats.produced / stats.seconds
        finally:
            broker.stop()
    print(
        f"simulator, {hosts:,} hosts x 1 h = {stats.produced:,} events into Tansu: "
        f"{sim:,.0f} events/s (generate + encode + produce)"
    )
    print(
        f"raw confluent-kafka produce loop of the same, pre-encoded: {raw:,.0f} events/s; "
        f"simulator / raw = {sim / raw:.2f}x"
    )


if __name__ == "__main__":
    main()
