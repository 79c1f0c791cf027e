"""The cost of a production Kafka: the pipeline on a 3-node SASL_SSL cluster vs one broker.

    .venv/bin/python benchmarks/kafka_cluster.py [minutes] [hosts]

Both runs in the same process, one after the other, the same load: a simulated fleet of
``hosts`` (default 20,000; one sample per host every 10 s = 2,000 events/s) producing in real
time for ``minutes`` (default 10) into a topic of 6 partitions, consumed by 3 lake writers
(`sysmetrics consume`, default flush: 50 records or 60 s).

(1) 3-node Apache Kafka 4.4 cluster (KRaft), clients on SASL_SSL / SCRAM-SHA-512 with ACLs,
    replication 3, min ISR 2, set up by deploy/kafka-secrets.sh and deploy/kafka-setup.sh.
(2) one Apache Kafka 4.4 broker, PLAINTEXT, replication 1 (the baseline).

Printed per run: the writers' consumer lag sampled every 10 s (max, and at the end), freshness
(event time -> its lake file written, p50 / p99 over every event), the events per second the
fleet produced and the lake received, and the CPU seconds of the brokers, the writers and the
simulator; then the cluster's cost as ratios to the single broker.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil
from confluent_kafka import Consumer, TopicPartition

from sysmetrics.config import load_settings
from sysmetrics.stream.admin import ensure_topic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.apache_kafka import ApacheKafkaBroker
from tests.support.kafka_cluster import ADMIN_PASSWORD, deployed_cluster
from tests.support.kafka_io import SYSMETRICS

TOPIC = "machine_metrics"
PARTITIONS = 6
WRITERS = 3
GROUP = "sysmetrics-lake-writer"
SPEED = ["--speedup", "1"]  # real time: one sample per host every 10 s


@dataclass
class Run:
    label: str
    lags: list[int] = field(default_factory=list)
    freshness: list[float] = field(default_factory=list)
    produced: int = 0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def lag(client: dict[str, str]) -> int:
    """Events in the topic the writers' group has not committed yet."""
    consumer = Consumer({**client, "group.id": GROUP, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        committed = consumer.committed(partitions, timeout=10)
        behind = 0
        for tp in committed:
            high = consumer.get_watermark_offsets(TopicPartition(TOPIC, tp.partition), 10)[1]
            behind += high - max(tp.offset, 0)
        return behind
    finally:
        consumer.close()


def run_pipeline(
    label: str,
    env: dict[str, str],
    writer_env: dict[str, str],
    fleet_env: dict[str, str],
    client: dict[str, str],
    broker_pids: Callable[[], list[int]],
    root: Path,
    minutes: float,
    hosts: int,
) -> Run:
    run = Run(label)
    root.mkdir(parents=True)
    lake = root / "lake"
    env = {**env, "SYSMETRICS_LAKE_URL": str(lake), "SYSMETRICS_METRICS_PORT": "0"}
    cpu_before = cpu_seconds(broker_pids())
    writers = [
        subprocess.Popen(
            [SYSMETRICS, "consume"],
            env={**env, **writer_env, "SYSMETRICS_DATA_DIR": str(root / f"writer-{n}")},
            stdout=subprocess.DEVNULL,
            stderr=(root / f"writer-{n}.log").open("wb"),
        )
        for n in range(WRITERS)
    ]
    time.sleep(5)  # the group forms before the fleet starts
    began = time.monotonic()
    fleet = subprocess.Popen(
        [SYSMETRICS, "simulate", "--hosts", str(hosts), "--duration", f"{minutes:g}m", *SPEED],
        env={**env, **fleet_env, "SYSMETRICS_DATA_DIR": str(root / "fleet")},
        stdout=subprocess.DEVNULL,
        stderr=(root / "fleet.log").open("wb"),
    )
    stop = threading.Event()

    def sample_lag() -> None:
        while not stop.wait(10):
            try:
                run.lags.append(lag(client))
            except Exception as exc:  # a sample lost is reported, the run goes on
                print(f"  [{label}] lag sample failed: {exc}", file=sys.stderr)
            print(f"  [{label}] {time.monotonic() - began:5.0f} s  lag {run.lags[-1:]}", flush=True)

    sampler = threading.Thread(target=sample_lag)
    sampler.start()
    fleet_cpu = 0.0
    try:
        while fleet.poll() is None:
            fleet_cpu = cpu_seconds([fleet.pid]) or fleet_cpu
            time.sleep(1)
        run.seconds = time.monotonic() - began
        # Drain: the last batches flush within the 60-s timer. No lag = all committed, and a
        # writer commits only what is durable in the lake.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and lag(client) > 0:
            time.sleep(2)
    finally:
        stop.set()
        sampler.join()
        run.cpu = {
            "brokers": cpu_seconds(broker_pids()) - cpu_before,
            "writers": cpu_seconds([w.pid for w in writers]),
            "fleet": fleet_cpu,
        }
        for writer in writers:
            writer.terminate()
        for writer in writers:
            writer.wait(60)
    run.produced = hosts * int(minutes * 6)
    for path in lake.rglob("*.jsonl"):
        written = path.stat().st_mtime
        for line in path.read_bytes().splitlines():
            ts = datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
            run.freshness.append(written - ts)
    return run


def report(run: Run) -> None:
    q = statistics.quantiles(run.freshness, n=100, method="inclusive")
    print(
        f"{run.label}: fleet {run.produced:,} events in {run.seconds:.0f} s, lake "
        f"{len(run.freshness):,} events; "
        f"lag max {max(run.lags, default=0):,} (samples {len(run.lags)}, last "
        f"{run.lags[-1] if run.lags else '-'}); freshness p50 {q[49]:.1f} s p99 {q[98]:.1f} s; "
        "CPU s: " + ", ".join(f"{k} {v:.0f}" for k, v in run.cpu.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("minutes", nargs="?", type=float, default=10.0)
    parser.add_argument("hosts", nargs="?", type=int, default=20_000)
    args = parser.parse_args()
    minutes, hosts = args.minutes, args.hosts
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        users = {u: uuid.uuid4().hex for u in ("collector", "lake-writer", "alerts")}
        cluster = deployed_cluster(root / "cluster", users)
        try:
            base = {
                **os.environ,
                "SYSMETRICS_BOOTSTRAP_SERVERS": cluster.bootstrap,
                "SYSMETRICS_SECURITY_PROTOCOL": "SASL_SSL",
                "SYSMETRICS_SASL_MECHANISM": "SCRAM-SHA-512",
                "SYSMETRICS_SSL_CA_LOCATION": str(cluster.ca_pem),
                "SYSMETRICS_TOPIC": TOPIC,
            }
            login = {}
            for user in ("lake-writer", "collector"):
                secret = root / f"{user}.password"
                secret.write_text(users[user])
                login[user] = {
                    "SYSMETRICS_SASL_USERNAME": user,
                    "SYSMETRICS_SASL_PASSWORD_FILE": str(secret),
                }
            runs.append(
                run_pipeline(
                    "3-node SASL_SSL cluster, replication 3",
                    base,
                    login["lake-writer"],
                    login["collector"],
                    cluster.client("admin", ADMIN_PASSWORD),
                    lambda: [n.process.pid for n in cluster.nodes if n.process],
                    root / "run-cluster",
                    minutes,
                    hosts,
                )
            )
        finally:
            cluster.stop()
        broker = ApacheKafkaBroker(root / "single")
        broker.start()
        try:
            settings = load_settings(bootstrap_servers=broker.bootstrap, topic=TOPIC)
            ensure_topic(settings, partitions=PARTITIONS)
            runs.append(
                run_pipeline(
                    "1 broker, PLAINTEXT, replication 1",
                    {**os.environ, "SYSMETRICS_BOOTSTRAP_SERVERS": broker.bootstrap},
                    {},
                    {},
                    {"bootstrap.servers": broker.bootstrap},
                    lambda: [broker.process.pid] if broker.process else [],
                    root / "run-single",
                    minutes,
                    hosts,
                )
            )
        finally:
            broker.stop()
    print(f"\n{hosts:,} hosts, {minutes:g} min, {PARTITIONS} partitions, {WRITERS} writers")
    for run in runs:
        report(run)
    cluster_run, single = runs
    for part in cluster_run.cpu:
        ratio = cluster_run.cpu[part] / max(single.cpu[part], 1e-9)
        print(f"  {part} CPU, cluster / single: {ratio:.2f}x")
    total = sum(cluster_run.cpu.values()) / sum(single.cpu.values())
    p99 = [statistics.quantiles(r.freshness, n=100, method="inclusive")[98] for r in runs]
    print(
        f"  total CPU, cluster / single: {total:.2f}x; freshness p99 ratio {p99[0] / p99[1]:.2f}x"
    )


if __name__ == "__main__":
    main()
