"""Sustained events/s through one and two lake writers (real Tansu broker, local lake).

Baselines in the same run, on the same topic: a bare confluent-kafka consumer reading it
without writing anything; the seed system's style of writer; and a real peer, Apache Kafka's
own Connect worker (standalone, `FileStreamSink`, jars from Maven through
benchmarks/kafka-connect/pom.xml), which writes each record's value as a line to one file: no
validation, no partitioning by event hour, no exactly-once commit. Writer time is from its
first file (the sink: its first line) until 95 % of the events are written (group join and the
idle stop-time flush excluded).

Two floors in each round say what no writer of this lake can beat: (d) the contract alone
(consume, one file per 50-record batch through the same store, commit; nothing validated) and
(e) the kernel's share of it: creating those files with the same bytes and nothing else. And
the cores the one writer and the broker use bound what two writers can add on this machine.

    .venv/bin/python benchmarks/lake_writer.py [events] [rounds]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicPartition

from sysmetrics.config import Settings, load_settings
from sysmetrics.lake import layout
from sysmetrics.lake.store import LakeStore
from sysmetrics.lake.writer import LakeWriter
from sysmetrics.schema import encode
from sysmetrics.stream.admin import ensure_topic
from sysmetrics.stream.broker import EmbeddedBroker
from sysmetrics.stream.kafka_config import consumer_config
from sysmetrics.stream.simulator import generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.apache_kafka import maven_libs
from tests.support.kafka_io import SYSMETRICS, produce
from tests.support.ports import free_port

CONNECT_POM = Path(__file__).resolve().parent / "kafka-connect" / "pom.xml"


def bare_consume_rate(settings: Settings, total: int) -> float:
    consumer = Consumer(consumer_config(settings, group_id=f"bench-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([settings.topic])
    seen, first = 0, None
    while seen < total:
        batch = consumer.consume(1000, timeout=1.0)
        if batch and first is None:
            first = time.perf_counter()
        seen += sum(1 for m in batch if m.error() is None)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    return total / elapsed


def seed_style_rate(settings: Settings, out_dir: Path, total: int) -> float:
    """What the seed system did: kafka-python, auto-commit, json.loads per record, batches of
    50 written as indented JSON arrays (no fsync, no exactly-once)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"seed-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        consumer_timeout_ms=10_000,
    )
    out_dir.mkdir(parents=True)
    batch: list[object] = []
    seen, first = 0, None
    for message in consumer:
        if first is None:
            first = time.perf_counter()
        batch.append(json.loads(message.value))
        seen += 1
        if len(batch) >= 50 or seen == total:
            (out_dir / f"batch-{seen}.json").write_text(json.dumps(batch, indent=4))
            batch = []
        if seen == total:
            break
    elapsed = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    return seen / elapsed


def contract_floor_rate(settings: Settings, lake: Path, total: int) -> float:
    """What the lake's contract alone costs, in one Python process: consume, cut 50-record
    batches per partition, create one file per batch through the same store (intent first,
    create-if-absent, the same syncs), commit synchronously. Nothing is validated, stamped or
    partitioned by hour: our writer can at best approach this rate."""
    consumer = Consumer(consumer_config(settings, group_id=f"floor-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([settings.topic])
    store = LakeStore(str(lake))
    pending: dict[int, list[Message]] = defaultdict(list)
    read = written = 0
    first = t95 = None
    while written < total:
        polled = [
            m for m in consumer.consume(LakeWriter.consume_batch, timeout=1.0) if not m.error()
        ]
        if polled and first is None:
            first = time.perf_counter()
        read += len(polled)
        for message in polled:
            pending[message.partition()].append(message)  # type: ignore[index]
        files: list[tuple[str, bytes]] = []
        state: dict[str, bytes] = {}
        offsets: list[TopicPartition] = []
        for partition, messages in pending.items():
            cut = len(messages) if read >= total else len(messages) - len(messages) % 50
            batches = [messages[i : min(i + 50, cut)] for i in range(0, cut, 50)]
            pending[partition] = messages[cut:]
            if not batches:
                continue
            offsets.append(TopicPartition(settings.topic, partition, batches[-1][-1].offset() + 1))  # type: ignore[operator]
            state[layout.intent_path(settings.topic, partition)] = json.dumps(
                {"start": batches[0][0].offset(), "ends": [b[-1].offset() for b in batches]}
            ).encode()
            for batch in batches:
                start, end = batch[0].offset(), batch[-1].offset()
                name = layout.batch_name(settings.topic, partition, start, end)
                files.append((f"raw/{name}", b"\n".join(m.value() for m in batch) + b"\n"))  # type: ignore[misc]
                written += len(batch)
        if files:
            store.create_files(files, state)
            consumer.commit(offsets=offsets, asynchronous=False)
        if t95 is None and written >= 0.95 * total:
            t95 = time.perf_counter()
    consumer.close()
    assert first is not None and t95 is not None
    return 0.95 * total / max(t95 - first, 1e-3)


def file_creation_seconds(work: Path, values: list[bytes], per_file: int = 50) -> float:
    """Seconds to create the files a writer flushing every ``per_file`` records creates, with
    the same bytes, and nothing else: open, write, close (no temporary name, no sync, no
    Kafka). What the one-file-per-batch contract costs the kernel, in any language."""
    work.mkdir(parents=True)
    chunks = [b"\n".join(values[i : i + per_file]) + b"\n" for i in range(0, len(values), per_file)]
    began = time.perf_counter()
    for i, chunk in enumerate(chunks):
        fd = os.open(work / f"{i}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, chunk)
        finally:
            os.close(fd)
    return time.perf_counter() - began


def cpu_seconds(pid: int) -> float:
    """A live process's user + system CPU time so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect_sink_rate(settings: Settings, work: Path, total: int) -> float:
    """Kafka Connect standalone with the FileStreamSink connector on the same topic."""
    libs = maven_libs(CONNECT_POM, "kafka-connect-4.1.0")
    work.mkdir(parents=True)
    sink = work / "sink.jsonl"
    worker = work / "worker.properties"
    worker.write_text(
        f"bootstrap.servers={settings.bootstrap_servers}\n"
        "key.converter=org.apache.kafka.connect.storage.StringConverter\n"
        "value.converter=org.apache.kafka.connect.storage.StringConverter\n"
        f"offset.storage.file.filename={work / 'offsets'}\n"
        f"listeners=http://127.0.0.1:{free_port()}\n"
        "consumer.auto.offset.reset=earliest\n"
    )
    connector = work / "file-sink.properties"
    connector.write_text(
        "name=file-sink\n"
        "connector.class=org.apache.kafka.connect.file.FileStreamSinkConnector\n"
        f"tasks.max=1\nfile={sink}\ntopics={settings.topic}\n"
    )
    command = [
        "java",
        "-Xmx1g",
        "-cp",
        f"{libs}/*",
        "org.apache.kafka.connect.cli.ConnectStandalone",
    ]
    with (work / "connect.log").open("wb") as log:
        process = subprocess.Popen(
            [*command, str(worker), str(connector)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        first = t95 = None
        lines, read = 0, 0
        deadline = time.monotonic() + 900
        while t95 is None and time.monotonic() < deadline:
            assert process.poll() is None, (work / "connect.log").read_text()[-3000:]
            if sink.exists():
                with sink.open("rb") as f:
                    f.seek(read)
                    chunk = f.read()
                read += len(chunk)
                lines += chunk.count(b"\n")
                now = time.perf_counter()
                if lines and first is None:
                    first = now
                if lines >= 0.95 * total:
                    t95 = now
            time.sleep(0.05)
        assert first is not None and t95 is not None, f"the sink wrote {lines} of {total} lines"
        return 0.95 * total / max(t95 - first, 1e-3)
    finally:
        process.kill()
        process.wait()


@dataclass
class WritersRun:
    rate: float  # events/s, from the first file until 95 % are written
    cores: float  # CPU-seconds per second over that window: the writers' and the broker's


def writers_rate(
    settings: Settings, lake: Path, total: int, writers: int, flush: int, broker_pid: int
) -> WritersRun:
    env = {
        **os.environ,
        "SYSMETRICS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "SYSMETRICS_TOPIC": settings.topic,
        "SYSMETRICS_LAKE_URL": str(lake),
        "SYSMETRICS_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:6]}",
        "SYSMETRICS_DATA_DIR": str(lake.parent / "state"),
        "SYSMETRICS_FLUSH_RECORDS": str(flush),
        "SYSMETRICS_METRICS_PORT": "0",
    }
    procs = [
        subprocess.Popen(
            [SYSMETRICS, "--log-level", "warning", "consume", "--idle-exit", "3"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(writers)
    ]
    # (wall time, CPU-seconds of the writers and the broker so far), every 50 ms
    samples: list[tuple[float, float]] = []
    while any(p.poll() is None for p in procs):
        try:
            used = sum(cpu_seconds(p.pid) for p in procs) + cpu_seconds(broker_pid)
        except (FileNotFoundError, ProcessLookupError):  # a writer just exited
            break
        samples.append((time.time(), used))
        time.sleep(0.05)
    for p in procs:
        p.wait()
    files = list((lake / "raw").rglob("*.jsonl"))
    lines = sum(f.read_bytes().count(b"\n") for f in files)
    assert lines == total, f"{lines} != {total}"
    by_time = sorted((f.stat().st_mtime, f.read_bytes().count(b"\n")) for f in files)
    first, done, t95 = by_time[0][0], 0, by_time[-1][0]
    for mtime, count in by_time:
        done += count
        if done >= 0.95 * total:
            t95 = mtime
            break
    window = [(t, used) for t, used in samples if first <= t <= t95]
    cores = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
    return WritersRun(0.95 * total / max(t95 - first, 1e-3), cores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("total", nargs="?", type=int, default=500_000, help="events")
    parser.add_argument("rounds", nargs="?", type=int, default=3)
    args = parser.parse_args()
    total, rounds = args.total, args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = EmbeddedBroker(root / "broker", free_port())
        pid = broker.start().pid
        try:
            settings = load_settings(
                bootstrap_servers=broker.bootstrap, topic="bench", topic_partitions=4
            )
            ensure_topic(settings)
            start = datetime(2026, 11, 27, tzinfo=UTC)
            hosts = total // 360 + 1
            events = [e for _, e in generate(hosts, start, 3600, 10, 5)][:total]
            messages = [(e.host.host_id.encode(), encode(e)) for e in events]
            produce(settings, messages)
            base = bare_consume_rate(settings, total)
            seed = seed_style_rate(settings, root / "seed", total)
            cores = os.cpu_count() or 1
            print(f"lake writer throughput, {total:,} events, {cores} cores, Tansu, local disk")
            print(f"  (a) bare confluent-kafka consumer  {base:>10,.0f} events/s")
            print(f"  (b) seed-style kafka-python writer {seed:>10,.0f} events/s")
            # This machine's speed drifts by tens of percent within minutes: the peer and our
            # writers alternate, round after round, and each ratio is taken within one round.
            one_vs_connect: list[float] = []
            two_vs_one: list[float] = []
            floor_vs_connect: list[float] = []  # (d)
            files_vs_connect: list[float] = []  # (e)
            ceilings: list[float] = []
            for n in range(rounds):
                connect = connect_sink_rate(settings, root / f"connect-{n}", total)
                floor = contract_floor_rate(settings, root / f"floor-{n}" / "lake", total)
                files_s = file_creation_seconds(root / f"files-{n}", [v for _, v in messages])
                files_vs_connect.append(files_s / (total / connect))
                one = writers_rate(settings, root / f"lake-1-{n}" / "lake", total, 1, 50, pid)
                two = writers_rate(settings, root / f"lake-2-{n}" / "lake", total, 2, 50, pid)
                # At a constant CPU cost per event, k times one writer's rate needs k times
                # the cores the one writer and the broker used: the machine caps k.
                ceiling = min(2.0, cores / one.cores)
                one_vs_connect.append(one.rate / connect)
                two_vs_one.append(two.rate / one.rate)
                floor_vs_connect.append(floor / connect)
                ceilings.append(ceiling)
                print(
                    f"  round {n + 1}: (c) Kafka Connect FileStreamSink {connect:>8,.0f} events/s; "
                    f"(d) the contract alone {floor:>8,.0f} ({floor / connect:.2f}x (c)); "
                    f"(e) creating its {total // 50:,} files alone {files_s:.2f} s = "
                    f"{files_vs_connect[-1]:.2f}x (c)'s whole run; "
                    f"default flush (50): 1 writer {one.rate:>8,.0f} "
                    f"({one.rate / connect:.2f}x (c), "
                    f"{one.rate / floor:.2f}x (d), {one.rate / base:.3f}x (a), "
                    f"{one.rate / seed:.1f}x (b); writer + broker {one.cores:.2f} cores), "
                    f"2 writers {two.rate:>8,.0f} ({two.rate / one.rate:.2f}x 1; "
                    f"{two.cores:.2f} cores; at most {ceiling:.2f}x on {cores} cores)"
                )
            print(
                f"  median of {rounds}: 1 writer {statistics.median(one_vs_connect):.2f}x Connect "
                f"(spread {min(one_vs_connect):.2f}-{max(one_vs_connect):.2f}); the contract "
                f"alone {statistics.median(floor_vs_connect):.2f}x Connect "
                f"({min(floor_vs_connect):.2f}-{max(floor_vs_connect):.2f}), creating its files "
                f"alone takes {statistics.median(files_vs_connect):.2f}x Connect's time "
                f"({min(files_vs_connect):.2f}-{max(files_vs_connect):.2f}); 2 writers "
                f"{statistics.median(two_vs_one):.2f}x 1 writer "
                f"({min(two_vs_one):.2f}-{max(two_vs_one):.2f}), the cores allow "
                f"{statistics.median(ceilings):.2f}x ({min(ceilings):.2f}-{max(ceilings):.2f})"
            )
            for writers in (1, 2):
                rate = writers_rate(
                    settings, root / f"lake-{writers}-500" / "lake", total, writers, 500, pid
                ).rate
                print(
                    f"  {writers} writer(s), flush 500 records     {rate:>10,.0f} events/s  "
                    f"{rate / base:.3f}x (a)  {rate / seed:.2f}x (b)"
                )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
