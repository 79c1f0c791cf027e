"""Collector cost against a real peer, and simulator speed.

1. CPU time per sample of the sampling function alone (all readers, encode, spool append).
2. Whole processes, side by side for the same wall time at the same 10 s interval: a running
   `sysmetrics collect` publishing into Tansu (CPU per sample, from /proc/PID/stat, and RSS)
   against Prometheus' node_exporter (Debian's prometheus-node-exporter) scraped as often
   (CPU per scrape, RSS), 3 runs of 180 s by default, the median and the spread; ours split
   by thread (main = the sampling loop, librdkafka, other = the /metrics server). Goal: ours
   <= 0.5x node_exporter's CPU per scrape, RSS <= 35 MB.
   With --soak-samples N, one collector takes N samples at a 0.05 s interval: its RSS at the
   end against after the first tenth (a leak grows with the samples; days of them in minutes).
3. The simulator's events/s into a real Tansu broker against a raw confluent-kafka produce
   loop of the same (pre-encoded) messages in the same run.

    .venv/bin/python benchmarks/collector.py [events] [--peer-seconds S] [--runs N]
        [--soak-samples N]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer

from sysmetrics.collect.sampler import Sampler
from sysmetrics.collect.service import uncompiled_packages
from sysmetrics.config import load_settings
from sysmetrics.schema import encode
from sysmetrics.stream.admin import ensure_topic
from sysmetrics.stream.broker import EmbeddedBroker
from sysmetrics.stream.kafka_config import producer_config
from sysmetrics.stream.simulator import generate, run_simulation
from sysmetrics.stream.spool import Spool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.ports import free_port


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


def _stat(path: str) -> tuple[str, float]:
    """(name, utime + stime in seconds) from a /proc ``stat`` file."""
    name, rest = Path(path).read_text().split("(", 1)[1].rsplit(")", 1)
    fields = rest.split()
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of a whole process (all its threads), from /proc/PID/stat."""
    return _stat(f"/proc/{pid}/stat")[1]


def process_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of a process by where they went: its main thread (our sampling loop),
    librdkafka's threads (``rdk:*``), and its other threads (the /metrics server)."""
    out = {"main": 0.0, "librdkafka": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name, cpu = _stat(f"/proc/{pid}/task/{tid}/stat")
        except FileNotFoundError:
            continue  # a thread that just ended
        where = "main" if int(tid) == pid else "librdkafka" if name.startswith("rdk:") else "other"
        out[where] += cpu
    return out


@dataclass
class Run:
    ours_ms: float
    peer_ms: float
    ours_rss: float
    peer_rss: float
    split_ms: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.ours_ms / self.peer_ms


@contextmanager
def running_collector(interval_s: float) -> Iterator[subprocess.Popen[str]]:
    """A `sysmetrics collect` process publishing into a fresh Tansu broker every ``interval_s``;
    its closing summary line is on its stdout once the block ends."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(Path(tmp), free_port())
        broker.start()
        env = dict(
            os.environ,
            SYSMETRICS_BOOTSTRAP_SERVERS=broker.bootstrap,
            SYSMETRICS_DATA_DIR=str(Path(tmp) / "data"),
            SYSMETRICS_SAMPLE_INTERVAL_S=str(interval_s),
        )
        ours = subprocess.Popen(
            [sys.executable, "-m", "sysmetrics", "--log-level", "warning", "collect"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            yield ours
        finally:
            ours.terminate()
            ours.wait(30)
            broker.stop()


def whole_processes(exporter: str, seconds: float, interval_s: float = 10.0) -> Run:
    """Our collector and node_exporter, each measured as a process over the same wall time."""
    port = free_port()
    with running_collector(interval_s) as ours:
        peer = subprocess.Popen(
            [exporter, f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(15)  # both started, connected, first sample taken
            ours_start, peer_start = thread_cpu_s(ours.pid), process_cpu_s(peer.pid)
            scrapes = 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                    response.read()
                scrapes += 1
                time.sleep(interval_s)
            ours_end = thread_cpu_s(ours.pid)
            peer_cpu = process_cpu_s(peer.pid) - peer_start
            ours_rss, peer_rss = process_rss_mb(ours.pid), process_rss_mb(peer.pid)
        finally:
            peer.terminate()
            peer.wait(30)
    # The same interval and wall time: as many samples as scrapes.
    split = {k: 1000 * (ours_end[k] - ours_start[k]) / scrapes for k in ours_end}
    return Run(sum(split.values()), 1000 * peer_cpu / scrapes, ours_rss, peer_rss, split)


def soak(samples: int, interval_s: float = 0.05) -> None:
    """Resident memory of one collector process over ``samples`` samples taken fast (days of
    10-s samples in minutes): after the first tenth (warm: spool segments, the allocator's
    pools) against the end, the same process in the same run."""
    with running_collector(interval_s) as ours:
        time.sleep(5 + samples * interval_s / 10)
        warm = process_rss_mb(ours.pid)
        time.sleep(samples * interval_s * 0.9)
        end = process_rss_mb(ours.pid)
    summary = ours.stdout.read() if ours.stdout else ""
    taken = int(summary.split("collected ")[1].split()[0]) if "collected " in summary else 0
    print(
        f"soak: {taken:,} samples at a {interval_s} s interval ({taken * 10 / 86400:.1f} days of "
        f"10-s samples): RSS {warm:.2f} MB after the first tenth, {end:.2f} MB at the end "
        f"({end / warm:.3f}x)"
    )


def compare_with_node_exporter(seconds: float, runs: int) -> None:
    exporter = shutil.which("prometheus-node-exporter")
    if exporter is None:
        print("node_exporter peer skipped: apt install prometheus-node-exporter")
        return
    # Where none is cached and PYTHONDONTWRITEBYTECODE is set, each start compiles the imports
    # from source and the process holds ~5 MB more (pip and `make install` compile them).
    cached = "no, each start compiles them" if uncompiled_packages() else "yes"
    print(
        f"whole processes, {runs} run{'s' if runs != 1 else ''} of {seconds:.0f} s at the 10 s "
        f"interval (imports from cached bytecode: {cached}):"
    )
    results = []
    for n in range(runs):
        run = whole_processes(exporter, seconds)
        results.append(run)
        split = ", ".join(f"{k} {v:.2f}" for k, v in run.split_ms.items())
        print(
            f"  run {n + 1}: sysmetrics collect {run.ours_ms:.2f} ms CPU per sample ({split}),"
            f" RSS {run.ours_rss:.1f} MB; node_exporter {run.peer_ms:.2f} ms per scrape, RSS "
            f"{run.peer_rss:.0f} MB; ratio {run.ratio:.2f}x"
        )
    ratios = sorted(r.ratio for r in results)
    rss = sorted(r.ours_rss for r in results)
    print(
        f"  median: ours / node_exporter = {statistics.median(ratios):.2f}x (spread "
        f"{ratios[0]:.2f}-{ratios[-1]:.2f}; goal <= 0.5), our RSS {statistics.median(rss):.1f} MB"
        f" (spread {rss[0]:.1f}-{rss[-1]:.1f}; goal <= 35)"
    )


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("total", nargs="?", type=int, default=360_000, help="simulated events")
    parser.add_argument(
        "--peer-seconds", type=float, default=180, help="length of each node_exporter run"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of the comparison (median); 0: none"
    )
    parser.add_argument(
        "--soak-samples",
        type=int,
        default=0,
        help="also run one collector for this many samples at a 0.05 s interval and compare its "
        "memory at the end with after the first tenth (20000: ~17 min, 2.3 days of 10-s samples)",
    )
    args = parser.parse_args()
    peer_seconds, runs, total = args.peer_seconds, args.runs, args.total
    per_sample = collector_cost()
    print(
        f"collector on this machine ({os.cpu_count()} cores): {per_sample * 1000:.2f} ms CPU "
        f"per sample, {100 * per_sample / 10:.3f} % of one core at the 10 s interval "
        f"(goal <= 20 ms, <= 0.2 %)"
    )
    if runs:
        compare_with_node_exporter(peer_seconds, runs)
    if args.soak_samples:
        soak(args.soak_samples)
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
