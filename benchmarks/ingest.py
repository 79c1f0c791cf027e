"""`sysmetrics ingest` against the real receivers it replaces, whole processes, one run.

1. Remote-write: samples per CPU-second of `sysmetrics ingest` (into the embedded broker) vs
   Prometheus 2.42's own receiver (`--web.enable-remote-write-receiver`, into its TSDB), fed
   the same payloads: this machine's real node_exporter `/metrics`, only the series the
   README's `write_relabel_configs` keep, as HOSTS hosts x SAMPLES samples, 500 samples per
   request (Prometheus' `max_samples_per_send`) from 4 parallel senders (its shards).
   Then the same samples as remote-write 2.0 requests, vs Prometheus 3.16's receiver of 2.0
   (built from its Go module, as the tests build it).
2. OTLP/HTTP: data points per CPU-second vs the OTel Collector's own `otlp` receiver feeding
   its `debug` exporter (counts and drops what it gets) and, apart, its `file` exporter
   (keeps every point, as JSON lines); the payload is a real `hostmetrics` export captured
   from that Collector, one resource per host. Then the same for a Collector's `prometheus`
   receiver scraping this machine's node_exporter (the README's relabelling), one resource
   (`service.instance.id`) per host. Then the hostmetrics requests gzipped, as the
   Collector's `otlphttp` sends them by default, and over gRPC, gzipped, as its `otlp`
   exporter sends them by default, to both receivers' gRPC ports (reported, not goals).
3. Freshness: FRESH_HOSTS hosts in real time (a sample every 10 s, stamped now) through
   remote-write → ingest → Kafka → `sysmetrics consume` (default flush) → lake: sample time →
   lake file, p50/p99; baseline in the same run: sample time → a bare Kafka consumer.

CPU is utime+stime from /proc of each receiver process, from its first request until what it
took is done (ours: every event produced to Kafka; the broker's CPU is printed apart).

    .venv/bin/python benchmarks/ingest.py [hosts] [samples] [fresh_hosts] [fresh_minutes]

BENCH_ROUNDS (default 5) sets the rounds of each comparison.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import http.client
import http.server
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
from confluent_kafka import Consumer
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from sysmetrics.config import load_settings
from sysmetrics.ingest.server import OTLP_GRPC_METHOD
from sysmetrics.stream.admin import ensure_topic
from sysmetrics.stream.broker import EmbeddedBroker, stop_pid
from sysmetrics.stream.kafka_config import consumer_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.collector import process_cpu_s
from tests.support.agents import (
    PROMETHEUS,
    NodeExporter,
    otelcol_binary,
    prometheus_3_binary,
    remote_write_block,
)
from tests.support.ports import free_port
from tests.support.remote_write import series_of, write_request, write_request_v2

SYSMETRICS = str(Path(sys.executable).parent / "sysmetrics")
SENDERS = 4
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
"""Rounds per comparison; more (BENCH_ROUNDS=9) narrow a median this machine's drift widens."""
SAMPLES_PER_REQUEST = 500
RW_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
V2 = "io.prometheus.write.v2.Request"
RW2_HEADERS = {
    "Content-Type": f"application/x-protobuf;proto={V2}",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "2.0.0",
}
OTLP_HEADERS = {"Content-Type": "application/x-protobuf"}
OTLP_GZIP_HEADERS = {**OTLP_HEADERS, "Content-Encoding": "gzip"}


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith(name))


def relabel_regex() -> str:
    """The README's relabelling regex: the names of the series sysmetrics maps."""
    return remote_write_block("x").split('regex: "')[1].split('"')[0]


def mapped_node_series() -> list[tuple[dict[str, str], float]]:
    """This machine's node_exporter output, only the series the README's relabelling keeps."""
    import re

    keep = re.compile(relabel_regex())
    exporter = NodeExporter()
    try:
        with urllib.request.urlopen(exporter.url, timeout=5) as response:
            text = response.read().decode()
    finally:
        exporter.close()
    return [(labels, v) for labels, v in series_of(text) if keep.fullmatch(labels["__name__"])]


def remote_write_payloads(
    series: list[tuple[dict[str, str], float]],
    hosts: int,
    samples: int,
    start_ms: int,
    version: int = 1,
) -> list[list[bytes]]:
    """Per sender: its hosts' requests, sample by sample (a series' samples stay in order), as
    remote-write 1.0 ``WriteRequest``s or 2.0 ``Request``s."""
    shards: list[list[bytes]] = [[] for _ in range(SENDERS)]
    encode = write_request if version == 1 else write_request_v2
    for k in range(samples):
        ts = start_ms + 10_000 * k
        for shard in range(SENDERS):
            chunk: list[tuple[dict[str, str], float]] = []
            for host in range(shard, hosts, SENDERS):
                for labels, value in series:
                    host_labels = {**labels, "instance": f"host-{host}:9100", "job": "node"}
                    chunk.append((host_labels, value + k))
                    if len(chunk) == SAMPLES_PER_REQUEST:
                        shards[shard].append(encode(chunk, ts))
                        chunk = []
            if chunk:
                shards[shard].append(encode(chunk, ts))
    return shards


def in_parallel(
    sender: Callable[[list[bytes]], None], shards: list[list[bytes]], failures: list[str]
) -> float:
    """Run ``sender`` on each shard's bodies, shards in parallel; wall seconds. Stops the
    benchmark when a sender noted a failure (a refused request is not a measurement)."""
    began = time.perf_counter()
    threads = [threading.Thread(target=sender, args=(bodies,)) for bodies in shards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests refused, e.g. {failures[0]}")
    return time.perf_counter() - began


def send(address: str, path: str, headers: dict[str, str], shards: list[list[bytes]]) -> float:
    """Post every shard's bodies in order, shards in parallel; wall seconds."""
    host, port = address.rsplit(":", 1)
    failures: list[str] = []

    def sender(bodies: list[bytes]) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        for body in bodies:
            for attempt in range(20):
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status < 300:
                    break
                if response.status < 500 or attempt == 19:
                    failures.append(f"{response.status} {response.reason}")
                    break
                time.sleep(0.2)
        connection.close()

    return in_parallel(sender, shards, failures)


def send_grpc(address: str, shards: list[list[bytes]]) -> float:
    """Export every shard's bodies over OTLP/gRPC, gzipped (the Collector's `otlp` default),
    in order, shards in parallel, each on a channel of its own; wall seconds."""
    failures: list[str] = []

    def sender(bodies: list[bytes]) -> None:
        with grpc.insecure_channel(address, compression=grpc.Compression.Gzip) as channel:
            export = channel.unary_unary(OTLP_GRPC_METHOD)
            for body in bodies:
                for attempt in range(20):
                    try:
                        export(body, timeout=60)
                        break
                    except grpc.RpcError as exc:
                        code = exc.code()  # type: ignore[attr-defined]
                        if code != grpc.StatusCode.UNAVAILABLE or attempt == 19:
                            failures.append(str(code))
                            break
                        time.sleep(0.2)

    return in_parallel(sender, shards, failures)


class Ingest:
    """`sysmetrics ingest` on the embedded broker, measured from /proc."""

    def __init__(
        self, root: Path, bootstrap: str, topic: str, wait_s: float, grpc_port: int | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = grpc_port
        env = {
            **os.environ,
            "SYSMETRICS_BOOTSTRAP_SERVERS": bootstrap,
            "SYSMETRICS_TOPIC": topic,
            "SYSMETRICS_DATA_DIR": str(root),
            "SYSMETRICS_INGEST_PORT": str(self.port),
            "SYSMETRICS_INGEST_ASSEMBLY_WAIT_S": str(wait_s),
            **({"SYSMETRICS_INGEST_GRPC_PORT": str(grpc_port)} if grpc_port else {}),
        }
        root.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [SYSMETRICS, "--log-level", "warning", "ingest"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(root / "ingest.log").open("wb"),
        )
        wait_until(lambda: ready(f"{self.url}/-/healthy"), 60, "sysmetrics ingest")

    def stop(self) -> None:
        stop_pid(self.process.pid, timeout_s=30)


def capture(binary: Path, work: Path, receiver: str, count: int) -> list[bytes]:
    """The first ``count`` request bodies a Collector with ``receiver`` (its YAML; the
    pipeline's receiver is its first word) posts through its otlphttp exporter."""
    bodies: list[bytes] = []

    class Capture(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = work / "capture.yaml"
    config.write_text(
        f"""receivers:
  {receiver}
exporters:
  otlphttp: {{endpoint: "http://127.0.0.1:{server.server_address[1]}", compression: none}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{metrics: {{receivers: [{receiver.split(":")[0]}], exporters: [otlphttp]}}}}
"""
    )
    collector = subprocess.Popen(
        [str(binary), "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: len(bodies) >= count, 60, f"{count} exports")
    finally:
        stop_pid(collector.pid)
        server.shutdown()
    return bodies[:count]


def capture_scraped_export(binary: Path, work: Path) -> ExportMetricsServiceRequest:
    """One real export of this machine's node_exporter scraped by the Collector's prometheus
    receiver, with the README's relabelling regex as its metric_relabel_configs."""
    keep = relabel_regex()
    exporter = NodeExporter()
    try:
        (body,) = capture(
            binary,
            work,
            f"""prometheus:
    config:
      scrape_configs:
        - job_name: node
          scrape_interval: 1s
          static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]
          metric_relabel_configs: [{{source_labels: [__name__], regex: "{keep}", action: keep}}]""",
            1,
        )
    finally:
        exporter.close()
    return ExportMetricsServiceRequest.FromString(body)


def capture_otlp_export(binary: Path, work: Path) -> ExportMetricsServiceRequest:
    """One real hostmetrics export, as the Collector's otlphttp exporter posts it."""
    bodies = capture(
        binary,
        work,
        """hostmetrics:
    collection_interval: 1s
    scrapers: {cpu: {}, load: {}, memory: {}, paging: {}, filesystem: {}, disk: {},
               network: {}}""",
        24,
    )
    # An export may carry a part of a collection: one metric of each name, the latest.
    latest = {}
    for body in bodies[1:]:
        part = ExportMetricsServiceRequest()
        part.ParseFromString(body)
        for resource_metrics in part.resource_metrics:  # one per scraper
            for scope in resource_metrics.scope_metrics:
                for m in scope.metrics:
                    latest[m.name] = m
    export = ExportMetricsServiceRequest()
    resource = export.resource_metrics.add()
    resource.resource.CopyFrom(part.resource_metrics[0].resource)
    resource.scope_metrics.add().metrics.extend(latest.values())
    return export


def otlp_payloads(
    export: ExportMetricsServiceRequest,
    hosts: int,
    samples: int,
    per_request: int = 10,
    host_attribute: tuple[str, str] = ("host.name", "otel-{}"),
) -> tuple[list[list[bytes]], int]:
    """Per sender: requests of ``per_request`` hosts' resources, sample by sample, each host
    named by its ``host_attribute`` (key, format of the host's number); and the number of data
    points in all of them."""
    template = export.resource_metrics[0]
    base = min(
        p.time_unix_nano
        for s in template.scope_metrics
        for m in s.metrics
        for p in getattr(m, m.WhichOneof("data")).data_points
    )
    start = time.time_ns() - samples * 10_000_000_000
    shards: list[list[bytes]] = [[] for _ in range(SENDERS)]
    points = 0
    for k in range(samples):
        shift = start + k * 10_000_000_000 - base
        sample = copy.deepcopy(template)
        for scope in sample.scope_metrics:
            for m in scope.metrics:
                for p in getattr(m, m.WhichOneof("data")).data_points:
                    p.time_unix_nano += shift
                    points += hosts
        for shard in range(SENDERS):
            mine = list(range(shard, hosts, SENDERS))
            for i in range(0, len(mine), per_request):
                request = ExportMetricsServiceRequest()
                for host in mine[i : i + per_request]:
                    resource = request.resource_metrics.add()
                    resource.CopyFrom(sample)
                    attributes = resource.resource.attributes
                    key, value = host_attribute
                    kept = [a for a in attributes if a.key not in ("host.id", "host.name", key)]
                    del attributes[:]
                    attributes.extend(kept)
                    name = attributes.add()
                    name.key, name.value.string_value = key, value.format(host)
                shards[shard].append(request.SerializeToString())
    return shards, points


def measure(pid: int, run: Callable[[], float], done: Callable[[], bool]) -> tuple[float, float]:
    """(CPU seconds of ``pid``, wall seconds) for ``run`` and until ``done``."""
    before = process_cpu_s(pid)
    wall = run()
    wait_until(done, 300, "the receiver to finish")
    time.sleep(1.0)  # work a receiver does right after its last answer
    return process_cpu_s(pid) - before, wall


def ours_once(
    root: Path,
    bootstrap: str,
    path: str,
    headers: dict[str, str],
    shards: list[list[bytes]],
    events: int,
    over_grpc: bool = False,
) -> tuple[float, float]:
    """A fresh `sysmetrics ingest` (new journal, new topic) takes every request (``over_grpc``:
    every OTLP export on its gRPC port) and produces every event; (its CPU seconds, wall
    seconds)."""
    topic = f"bench-{uuid.uuid4().hex[:6]}"
    ensure_topic(load_settings(bootstrap_servers=bootstrap, topic=topic))
    grpc_port = free_port() if over_grpc else None
    ingest = Ingest(root / f"ingest-{topic}", bootstrap, topic, wait_s=2, grpc_port=grpc_port)
    if grpc_port:
        wait_until(lambda: listening(grpc_port), 60, "sysmetrics ingest's gRPC port")
    try:
        return measure(
            ingest.process.pid,
            lambda: (
                send_grpc(f"127.0.0.1:{grpc_port}", shards)
                if grpc_port
                else send(ingest.url.removeprefix("http://"), path, headers, shards)
            ),
            lambda: metric(ingest.url, "sysmetrics_ingest_events_total") >= events,
        )
    finally:
        ingest.stop()


def prometheus_once(
    root: Path, shards: list[list[bytes]], binary: Path | None = None, version: int = 1
) -> tuple[float, float]:
    """A fresh Prometheus (Debian's 2.42, or ``binary``; new TSDB) with its remote-write
    receiver takes every request (``version`` 2: 2.0 requests, which Prometheus 3 reads)."""
    assert PROMETHEUS is not None
    port, work = free_port(), root / f"prom-{uuid.uuid4().hex[:6]}"
    accept = [f"--web.remote-write-receiver.accepted-protobuf-messages={V2}"] * (version == 2)
    work.mkdir()
    (work / "prom.yml").write_text("global: {scrape_interval: 1h}\n")
    prometheus = subprocess.Popen(
        [
            str(binary or PROMETHEUS),
            f"--config.file={work / 'prom.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver",
            *accept,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: ready(f"http://127.0.0.1:{port}/-/ready"), 60, "Prometheus")
        return measure(
            prometheus.pid,
            lambda: send(
                f"127.0.0.1:{port}",
                "/api/v1/write",
                RW_HEADERS if version == 1 else RW2_HEADERS,
                shards,
            ),
            lambda: True,
        )
    finally:
        stop_pid(prometheus.pid, timeout_s=60)


def collector_once(
    binary: Path,
    root: Path,
    shards: list[list[bytes]],
    exporter: str,
    headers: dict[str, str] = OTLP_HEADERS,
    over_grpc: bool = False,
) -> tuple[float, float]:
    """A fresh OTel Collector: its otlp receiver (HTTP; ``over_grpc``: gRPC) into the ``debug``
    exporter (which counts what it gets and drops it) or the ``file`` exporter (which keeps
    every point, as JSON lines: the work closer to ours, which keeps every event in Kafka)."""
    port, name = free_port(), f"otelcol-{uuid.uuid4().hex[:6]}"
    exporters = {
        "debug": "debug: {verbosity: basic}",
        "file": f"file: {{path: {root / name}.jsonl}}",
    }
    config = root / f"{name}.yaml"
    config.write_text(
        f"""receivers:
  otlp: {{protocols: {{{"grpc" if over_grpc else "http"}: {{endpoint: "127.0.0.1:{port}"}}}}}}
exporters:
  {exporters[exporter]}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{metrics: {{receivers: [otlp], exporters: [{exporter}]}}}}
"""
    )
    collector = subprocess.Popen(
        [str(binary), "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: listening(port), 60, "the OTel Collector")
        return measure(
            collector.pid,
            lambda: (
                send_grpc(f"127.0.0.1:{port}", shards)
                if over_grpc
                else send(f"127.0.0.1:{port}", "/v1/metrics", headers, shards)
            ),
            lambda: True,
        )
    finally:
        stop_pid(collector.pid)
        (root / f"{name}.jsonl").unlink(missing_ok=True)


def compare(
    unit: str,
    amount: int,
    ours: Callable[[], tuple[float, float]],
    peers: dict[str, Callable[[], tuple[float, float]]],
    goal: str = "goal >= 1x",
) -> None:
    """Alternate our receiver and each peer ROUNDS times; per-round rates and the median
    ratio against each peer (and the issue's ``goal`` for it)."""
    ratios: dict[str, list[float]] = {name: [] for name in peers}
    for round_number in range(1, ROUNDS + 1):
        our_cpu, our_wall = ours()
        line = (
            f"  round {round_number}: sysmetrics ingest {amount / our_cpu:>9,.0f} {unit}/CPU-s "
            f"({our_cpu:.2f} CPU-s, {our_wall:.1f} s wall)"
        )
        for name, theirs in peers.items():
            their_cpu, their_wall = theirs()
            ratio = (amount / our_cpu) / (amount / their_cpu)
            ratios[name].append(ratio)
            line += (
                f"; {name} {amount / their_cpu:>9,.0f} ({their_cpu:.2f} CPU-s, "
                f"{their_wall:.1f} s wall): {ratio:.2f}x"
            )
        print(line)
    for name, values in ratios.items():
        print(
            f"  vs {name}: median ratio {statistics.median(values):.2f}x "
            f"(rounds {min(values):.2f}-{max(values):.2f}x; {goal})"
        )


def throughput(hosts: int, samples: int, root: Path) -> None:
    series = mapped_node_series()
    start_ms = (int(time.time()) - samples * 10) * 1000
    shards = remote_write_payloads(series, hosts, samples, start_ms)
    total = len(series) * hosts * samples
    print(
        f"remote-write: {hosts} hosts x {samples} samples x {len(series)} node_exporter series "
        f"= {total:,} samples in {sum(len(s) for s in shards)} requests, {SENDERS} senders"
    )
    broker = EmbeddedBroker(root / "broker", free_port())
    broker_pid = broker.start().pid
    broker_before = process_cpu_s(broker_pid)
    compare(
        "samples",
        total,
        lambda: ours_once(
            root, broker.bootstrap, "/api/v1/write", RW_HEADERS, shards, hosts * samples
        ),
        {"Prometheus 2.42": lambda: prometheus_once(root, shards)},
    )
    print(
        f"  (the embedded broker took {process_cpu_s(broker_pid) - broker_before:.2f} CPU-s "
        f"for our {ROUNDS * hosts * samples:,} events)"
    )
    prometheus_3 = prometheus_3_binary()
    if prometheus_3 is None:
        print("remote-write 2.0: skipped (Go missing: Prometheus 3 cannot be built)")
    else:
        shards_v2 = remote_write_payloads(series, hosts, samples, start_ms, version=2)
        size_v1, size_v2 = (sum(len(b) for s in each for b in s) for each in (shards, shards_v2))
        print(
            f"remote-write 2.0: the same samples as 2.0 requests ({size_v2 / size_v1:.2f}x the "
            "bytes of 1.0), vs Prometheus 3.16's own receiver of 2.0"
        )
        compare(
            "samples",
            total,
            lambda: ours_once(
                root, broker.bootstrap, "/api/v1/write", RW2_HEADERS, shards_v2, hosts * samples
            ),
            {
                "Prometheus 3.16": lambda: prometheus_once(
                    root, shards_v2, binary=prometheus_3, version=2
                )
            },
            goal="reported, not a goal of the issue",
        )
    binary = otelcol_binary()
    if binary is None:
        print("OTLP: skipped (Go missing: the OTel Collector cannot be built)")
        broker.stop()
        return
    otlp_shards, points = otlp_payloads(capture_otlp_export(binary, root), hosts, samples)

    def against_the_collector(
        shards: list[list[bytes]],
        amount: int,
        headers: dict[str, str] = OTLP_HEADERS,
        over_grpc: bool = False,
        goal: str = "goal >= 1x",
    ) -> None:
        """Our receiver and the Collector's otlp receiver into debug and into file, on
        ``shards`` (``amount`` data points; over gRPC, or over HTTP with ``headers``)."""
        compare(
            "points",
            amount,
            lambda: ours_once(
                root,
                broker.bootstrap,
                "" if over_grpc else "/v1/metrics",
                headers,
                shards,
                hosts * samples,
                over_grpc=over_grpc,
            ),
            {
                f"OTel Collector otlp->{exporter}": (
                    lambda exporter=exporter: collector_once(
                        binary, root, shards, exporter, headers, over_grpc=over_grpc
                    )
                )
                for exporter in ("debug", "file")
            },
            goal=goal,
        )

    print(
        f"OTLP/HTTP: {hosts} hosts x {samples} samples of a real hostmetrics export "
        f"= {points:,} data points in {sum(len(s) for s in otlp_shards)} requests"
    )
    against_the_collector(otlp_shards, points)
    scraped_shards, scraped_points = otlp_payloads(
        capture_scraped_export(binary, root),
        hosts,
        samples,
        host_attribute=("service.instance.id", "node-{}:9100"),
    )
    print(
        f"OTLP/HTTP from a Collector scraping node_exporter (its prometheus receiver, the "
        f"README's relabelling): {hosts} hosts x {samples} scrapes of this machine's "
        f"node_exporter = {scraped_points:,} data points"
    )
    against_the_collector(
        scraped_shards,
        scraped_points,
        goal="reported: the same goal's peer, on what a scraping Collector sends",
    )
    gzipped = [[gzip.compress(body) for body in shard] for shard in otlp_shards]
    size, zipped = (sum(len(b) for s in each for b in s) for each in (otlp_shards, gzipped))
    print(
        f"OTLP/HTTP gzip (the Collector's otlphttp default): the same requests, "
        f"{size / zipped:.1f}x smaller"
    )
    against_the_collector(
        gzipped,
        points,
        OTLP_GZIP_HEADERS,
        goal="reported: what a Collector sends unless told otherwise",
    )
    print("OTLP/gRPC gzip (the Collector's otlp exporter's default): the same exports")
    against_the_collector(
        otlp_shards, points, over_grpc=True, goal="reported: the Collector's usual exporter"
    )
    broker.stop()


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def freshness(hosts: int, minutes: float, root: Path) -> None:
    series = mapped_node_series()
    broker = EmbeddedBroker(root / "fresh-broker", free_port())
    broker.start()
    topic = f"fresh-{uuid.uuid4().hex[:6]}"
    settings = load_settings(bootstrap_servers=broker.bootstrap, topic=topic)
    ensure_topic(settings)
    ingest = Ingest(root / "fresh-ingest", broker.bootstrap, topic, wait_s=15)
    lake = root / "fresh-lake"
    writer = subprocess.Popen(
        [SYSMETRICS, "--log-level", "warning", "consume", "--metrics-port", "0"],
        env={
            **os.environ,
            "SYSMETRICS_BOOTSTRAP_SERVERS": broker.bootstrap,
            "SYSMETRICS_TOPIC": topic,
            "SYSMETRICS_LAKE_URL": str(lake),
            "SYSMETRICS_DATA_DIR": str(root / "fresh-writer"),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop = threading.Event()
    kafka_latency: list[float] = []

    def bare_consumer() -> None:
        consumer = Consumer(consumer_config(settings, group_id=f"fresh-{uuid.uuid4().hex[:6]}"))
        consumer.subscribe([topic])
        while not stop.is_set():
            for m in consumer.consume(500, timeout=0.2):
                if m.error() is None:
                    ts = datetime.fromisoformat(json.loads(m.value())["ts"])
                    kafka_latency.append(time.time() - ts.timestamp())
        consumer.close()

    def watch_lake(seen: dict[Path, float]) -> None:
        while not stop.is_set():
            for path in lake.rglob("*.jsonl"):
                seen.setdefault(path, time.time())
            time.sleep(0.25)

    seen: dict[Path, float] = {}
    threads = [
        threading.Thread(target=bare_consumer),
        threading.Thread(target=watch_lake, args=(seen,)),
    ]
    for thread in threads:
        thread.start()
    rounds = int(minutes * 6)
    behind = 0
    for _ in range(rounds):
        tick = time.time()
        shards = remote_write_payloads(series, hosts, 1, int(tick * 1000))
        send(ingest.url.removeprefix("http://"), "/api/v1/write", RW_HEADERS, shards)
        spent = time.time() - tick
        behind += spent > 10
        time.sleep(max(0.0, 10 - spent))
    time.sleep(90)  # the writer's 60 s flush timer for the last partial batches
    stop.set()
    for thread in threads:
        thread.join()
    stop_pid(writer.pid, timeout_s=30)
    ingest.stop()
    broker.stop()
    lake_latency = [
        at - datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
        for path, at in seen.items()
        for line in path.read_bytes().splitlines()
    ]
    expected = hosts * rounds
    print(
        f"freshness: {hosts} hosts every 10 s for {minutes:g} min via remote-write, "
        f"default flush (50 records / 60 s); {len(lake_latency)} of {expected} events in the "
        f"lake; sender over 10 s in {behind} of {rounds} rounds"
    )
    print(
        f"  sample -> Kafka consumer (baseline)  p50 {pct(kafka_latency, 50):6.2f} s  "
        f"p99 {pct(kafka_latency, 99):6.2f} s"
    )
    print(
        f"  sample -> lake file                  p50 {pct(lake_latency, 50):6.2f} s  "
        f"p99 {pct(lake_latency, 99):6.2f} s  (goal p99 <= 65 s; a host's first sample waits "
        f"the 15 s assembly bound)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hosts", nargs="?", type=int, default=1000, help="0: no throughput")
    parser.add_argument("samples", nargs="?", type=int, default=6, help="per host")
    parser.add_argument("fresh_hosts", nargs="?", type=int, default=1000, help="0: no freshness")
    parser.add_argument("fresh_minutes", nargs="?", type=float, default=3.0)
    args = parser.parse_args()
    hosts, samples = args.hosts, args.samples
    fresh_hosts, fresh_minutes = args.fresh_hosts, args.fresh_minutes
    print(f"{os.cpu_count()} cores; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    decoder = "compiled (native/)" if importlib.util.find_spec("sysmetrics_native") else "Python"
    print(f"decoders of the receiver (remote-write, OTLP protobuf): {decoder}")
    with tempfile.TemporaryDirectory() as tmp:
        if hosts:
            throughput(hosts, samples, Path(tmp))
        if fresh_hosts:
            freshness(fresh_hosts, fresh_minutes, Path(tmp))


if __name__ == "__main__":
    main()
