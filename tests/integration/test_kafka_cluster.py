"""Production Kafka: a 3-node Apache Kafka 4.4 cluster (KRaft) behind SASL_SSL with SCRAM users
and ACLs (tests/support/kafka_cluster.py), driven through the project's own settings.

The collector principal may only write the metrics topic; the lake-writer principal may read
it and use its group; a third user has valid credentials and no ACL at all.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from sysmetrics.config import load_settings
from sysmetrics.lake.layout import parse_batch_name
from sysmetrics.stream.admin import under_replicated
from tests.support.apache_kafka import missing_tools
from tests.support.kafka_cluster import (
    ADMIN_PASSWORD,
    KafkaCluster,
    KafkaNode,
    deployed_cluster,
    make_ca,
)
from tests.support.kafka_io import SYSMETRICS, read_topic
from tests.support.lake import event_id_counts
from tests.support.ports import free_port
from tests.support.scrape import metric
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools())),
    pytest.mark.broker,
]
TOPIC = "machine_metrics"
GROUP = "sysmetrics-lake-writer"
PASSWORDS = {
    "collector": "c0llector-pw-7f3a",
    "lake-writer": "wr1ter-pw-91bd",
    "alerts": "al3rts-pw-55c0",
    "nobody": "n0b0dy-pw",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Set up with the deploy scripts (certificates, users, ACLs), plus a user without ACLs."""
    users = {u: p for u, p in PASSWORDS.items() if u != "nobody"}
    cluster = deployed_cluster(tmp_path_factory.mktemp("kafka-cluster"), users)
    try:
        cluster.add_user("nobody", PASSWORDS["nobody"])
        yield cluster
    finally:
        for node in cluster.nodes:
            node.kill()


def env_for(
    cluster: KafkaCluster,
    work: Path,
    user: str,
    password: str | None = None,
    ca: Path | None = None,
) -> dict[str, str]:
    secret = work / f"{user}-{uuid.uuid4().hex[:6]}.password"
    secret.write_text((password or PASSWORDS[user]) + "\n")
    return {
        **os.environ,
        "SYSMETRICS_BOOTSTRAP_SERVERS": cluster.bootstrap,
        "SYSMETRICS_SECURITY_PROTOCOL": "SASL_SSL",
        "SYSMETRICS_SASL_MECHANISM": "SCRAM-SHA-512",
        "SYSMETRICS_SASL_USERNAME": user,
        "SYSMETRICS_SASL_PASSWORD_FILE": str(secret),
        "SYSMETRICS_SSL_CA_LOCATION": str(ca or cluster.ca_pem),
        "SYSMETRICS_TOPIC": TOPIC,
        "SYSMETRICS_CONSUMER_GROUP": GROUP,
        "SYSMETRICS_DATA_DIR": str(work / "data"),
        "SYSMETRICS_LAKE_URL": str(work / "lake"),
        "SYSMETRICS_FLUSH_SECONDS": "2",
        "SYSMETRICS_METRICS_PORT": "0",
    }


def run(
    command: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSMETRICS, *command], env=env, capture_output=True, text=True, timeout=timeout
    )


def admin_settings(cluster: KafkaCluster, tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_settings(
        bootstrap_servers=cluster.bootstrap,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="admin",
        sasl_password=ADMIN_PASSWORD,
        ssl_ca_location=str(cluster.ca_pem),
        topic=TOPIC,
        data_dir=tmp_path / "admin",
    )


def end_offsets(cluster: KafkaCluster, partitions: Iterable[int] = range(6)) -> int:
    """The sum of the partitions' high watermarks: what the topic has acknowledged."""
    from confluent_kafka import Consumer

    consumer = Consumer({**cluster.client(), "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def test_refusals_are_one_line_and_nothing_is_written(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    """Wrong password, no ACL, unknown CA, TLS name mismatch: one line saying what to check, no
    traceback, no retry storm, nothing in the topic or the lake from that client; the collector
    spools and delivers once its password is fixed; the password given by file is never
    printed."""
    before = end_offsets(cluster)
    outputs: list[str] = []

    # The collector with a wrong password: spools, says why once, exits cleanly.
    collector = env_for(cluster, tmp_path, "collector", password="wrong-password")
    collector["SYSMETRICS_HOST_ID"] = "secure-host-1"
    spooled = run(["collect", "--count", "2", "--interval", "0.5"], collector)
    outputs += [spooled.stdout, spooled.stderr]
    assert spooled.returncode == 0, spooled.stderr
    assert "2 waiting in the spool" in spooled.stdout
    assert "Traceback" not in spooled.stderr
    refusal = "Kafka refused the credentials of user collector"
    assert 1 <= spooled.stderr.count(refusal) <= 2, spooled.stderr  # ensure_topic, producer
    assert end_offsets(cluster) == before

    # The lake writer: wrong password, a user without ACLs, a CA that did not sign the brokers,
    # a host name the brokers' certificate does not name.
    other_ca, _ = make_ca(tmp_path / "other-ca")
    cases = [
        (
            env_for(cluster, tmp_path, "lake-writer", password="wrong"),
            refusal.replace("collector", "lake-writer"),
        ),
        (env_for(cluster, tmp_path, "nobody"), "Kafka user nobody may not see or create topic"),
        (env_for(cluster, tmp_path, "lake-writer", ca=other_ca), "TLS with Kafka at 127.0.0.1"),
        (  # the right CA, a name the certificate does not hold
            {
                **env_for(cluster, tmp_path, "lake-writer"),
                "SYSMETRICS_BOOTSTRAP_SERVERS": cluster.bootstrap.replace("127.0.0.1", "localhost"),
            },
            "TLS with Kafka at localhost",
        ),
    ]
    for env, expected in cases:
        try:
            result = run(["consume"], env, timeout=90)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"no refusal ({expected}): {exc.stderr!r}") from None
        outputs += [result.stdout, result.stderr]
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and expected in errors[0], result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "lake" / "raw").exists()

    # Fixed: the same collector (same spool) delivers what it kept, plus one new sample.
    fixed = env_for(cluster, tmp_path, "collector")
    fixed["SYSMETRICS_HOST_ID"] = "secure-host-1"
    delivered = run(["collect", "--count", "1", "--interval", "0.5"], fixed)
    outputs += [delivered.stdout, delivered.stderr]
    assert delivered.returncode == 0 and "0 waiting in the spool" in delivered.stdout
    messages = read_topic(admin_settings(cluster, tmp_path), before + 3, timeout_s=60)
    ours = [m for m in messages if m.key() == b"secure-host-1"]
    assert len(ours) == 3

    shown = run(["config", "show"], fixed)
    status = run(["status"], fixed)
    outputs += [shown.stdout, shown.stderr, status.stdout, status.stderr]
    for secret in (*PASSWORDS.values(), "wrong-password"):
        assert all(secret not in text for text in outputs), secret


def partition_leaders(cluster: KafkaCluster) -> dict[int, int]:
    admin = AdminClient(cluster.client())
    topic = admin.list_topics(TOPIC, timeout=10).topics[TOPIC]
    return {p.id: p.leader for p in topic.partitions.values()}


def leaders(cluster: KafkaCluster) -> Counter[int]:
    """How many partitions each node leads."""
    return Counter(partition_leaders(cluster).values())


def node(cluster: KafkaCluster, node_id: int) -> KafkaNode:
    return next(n for n in cluster.nodes if n.node_id == node_id)


def in_sync(cluster: KafkaCluster, tmp_path: Path) -> bool:
    try:
        return under_replicated(admin_settings(cluster, tmp_path)) == []
    except ConnectionError:
        return False


def durable_ends(lake: Path) -> dict[int, int]:
    """Per partition, the offset after the last one in a durable lake file (data or quarantine):
    the most a writer may have committed."""
    ends: dict[int, int] = {}
    for path in lake.rglob("*.jsonl*") if lake.exists() else []:
        parsed = parse_batch_name(path.name)
        if parsed is not None:
            partition, _, end = parsed
            ends[partition] = max(ends.get(partition, 0), end + 1)
    return ends


def committed(cluster: KafkaCluster, group: str) -> dict[int, int]:
    """The group's committed offsets, {} when its coordinator cannot answer now. (Read by a
    consumer that never joins the group: an admin client dropped with a request still pending
    on a dead coordinator aborted the whole test process.)"""
    from confluent_kafka import Consumer

    consumer = Consumer({**cluster.client(), "group.id": group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(TOPIC, p) for p in range(6)]
        result = consumer.committed(partitions, timeout=5)
    except KafkaException:
        return {}
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in result if tp.offset >= 0}


def under_load(
    cluster: KafkaCluster,
    tmp_path: Path,
    disrupt: Callable[[str], None],
    minutes: int = 20,
) -> None:
    """A simulated fleet of 40 hosts produces ``minutes`` of samples (at 40 times real speed)
    while two lake writers of a fresh group consume; ``disrupt(group)`` runs 8 s in. Then every
    event of the topic (this fleet's and any an earlier test left) is in the lake exactly once,
    and the group never committed past the lake's durable files."""
    group = f"{GROUP}-{uuid.uuid4().hex[:6]}"  # the writers' ACL covers the prefix
    collector = env_for(cluster, tmp_path, "collector")
    writer = {**env_for(cluster, tmp_path, "lake-writer"), "SYSMETRICS_CONSUMER_GROUP": group}
    hosts = 40
    before = end_offsets(cluster)
    writers = [
        subprocess.Popen(
            [SYSMETRICS, "consume"], env=writer, stdout=subprocess.DEVNULL, stderr=log.open("wb")
        )
        for log in (tmp_path / "writer-1.log", tmp_path / "writer-2.log")
    ]
    fleet = subprocess.Popen(
        [
            SYSMETRICS,
            "simulate",
            "--hosts",
            str(hosts),
            "--duration",
            f"{minutes}m",
            "--speedup",
            "40",
            "--seed",
            str(minutes),
        ],
        env=collector,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "fleet.log").open("wb"),
    )
    lake = tmp_path / "lake"
    try:
        time.sleep(8)
        disrupt(group)
        assert fleet.wait(300) == 0, (tmp_path / "fleet.log").read_text()[-2000:]
        cluster.wait_ready(120, brokers=3)
        # What the fleet produced: the topic's events since the test began (read as admin).
        everything = end_offsets(cluster)
        messages = read_topic(admin_settings(cluster, tmp_path), everything, timeout_s=120)
        assert len(messages) == everything
        produced = {json.loads(m.value())["event_id"] for m in messages}
        assert len(produced) == everything and everything - before >= hosts * minutes * 6

        def all_in_lake() -> bool:
            return sum(event_id_counts(lake).values()) >= everything

        wait_for(all_in_lake, 180, f"{everything} events in the lake")
        time.sleep(4)  # a duplicate would land now
    finally:
        for process in writers:
            process.send_signal(signal.SIGTERM)
        for process in writers:
            process.wait(60)
    counts = event_id_counts(lake)
    assert set(counts) == produced and set(counts.values()) == {1}
    final = committed(cluster, group)
    assert final == durable_ends(lake) and sum(final.values()) == everything


def test_leader_failover_under_load_exactly_once(cluster: KafkaCluster, tmp_path: Path) -> None:
    """``kill -9`` the node leading most partitions mid-stream, restart it 12 s later."""

    def kill_the_busiest_leader(group: str) -> None:
        victim = node(cluster, leaders(cluster).most_common(1)[0][0])
        victim.kill()
        time.sleep(12)
        victim.start()

    under_load(cluster, tmp_path, kill_the_busiest_leader)


def test_rolling_restart_under_load_exactly_once(cluster: KafkaCluster, tmp_path: Path) -> None:
    """Each node in turn is stopped (controlled shutdown), started, and caught up before the
    next, the way an administrator upgrades a cluster, while the fleet keeps producing."""
    restarted: list[int] = []

    def rolling_restart(group: str) -> None:
        for each in cluster.nodes:
            each.stop()
            each.start()
            cluster.wait_ready(120, brokers=3)
            wait_for(lambda: in_sync(cluster, tmp_path), 120, f"node {each.node_id} in sync")
            restarted.append(each.node_id)

    under_load(cluster, tmp_path, rolling_restart, minutes=60)
    assert restarted == [1, 2, 3]


def spool_depth(port: int) -> float | None:
    return metric(port, "sysmetrics_collector_spool_depth")


def test_below_min_isr_nothing_acknowledged_then_exactly_once(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    """Two of three nodes down for 35 s: the topic acknowledges nothing (min.insync.replicas
    2), a running collector's spool grows, no writer commits past its durable files; once the
    nodes return the spool drains and every event arrives exactly once."""
    port = free_port()
    env = {
        **env_for(cluster, tmp_path, "collector"),
        "SYSMETRICS_HOST_ID": "isr-host",
        "SYSMETRICS_METRICS_PORT": str(port),
    }
    collector = subprocess.Popen(
        [SYSMETRICS, "collect", "--interval", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "collector.log").open("wb"),
        text=True,
    )
    outage: dict[str, list[object]] = {
        "depths": [],
        "samples": [],
        "acknowledged": [],
        "summary": [],
    }

    def two_nodes_down(group: str) -> None:
        wait_for(lambda: spool_depth(port) == 0, 60, "the collector delivering")
        # The survivor leads the most partitions: their high watermarks stay readable.
        survivor, _ = leaders(cluster).most_common(1)[0]
        survivor_partitions = [
            p for p, leader in partition_leaders(cluster).items() if leader == survivor
        ]
        victims = [n for n in cluster.nodes if n.node_id != survivor]
        for victim in victims:
            victim.kill()
        started = time.monotonic()
        time.sleep(3)
        frozen = end_offsets(cluster, survivor_partitions)
        while time.monotonic() - started < 35:
            outage["depths"].append(spool_depth(port))
            outage["samples"].append((committed(cluster, group), durable_ends(tmp_path / "lake")))
            time.sleep(2)
        outage["acknowledged"].append(end_offsets(cluster, survivor_partitions) - frozen)
        for victim in victims:
            victim.start()
        cluster.wait_ready(120, brokers=3)
        wait_for(lambda: spool_depth(port) == 0, 120, "the collector's spool to drain")
        collector.send_signal(signal.SIGTERM)  # before the topic is read back
        outage["summary"].append(collector.communicate(timeout=60)[0])

    try:
        under_load(cluster, tmp_path, two_nodes_down, minutes=40)
    finally:
        collector.kill()
    (summary,) = outage["summary"]
    assert isinstance(summary, str)

    assert outage["acknowledged"] == [0]
    depths = [d for d in outage["depths"] if isinstance(d, float)]
    assert depths and max(depths) >= 20, depths  # ~1 sample a second, none acknowledged
    samples = outage["samples"]
    assert samples
    for offsets, durable in samples:  # type: ignore[misc]
        assert all(offset <= durable.get(p, 0) for p, offset in offsets.items()), (
            offsets,
            durable,
        )
    match = re.search(r"collected (\d+) samples?, delivered (\d+), 0 waiting", summary)
    assert match is not None and match[1] == match[2], summary
    ours = [
        m
        for m in read_topic(admin_settings(cluster, tmp_path), end_offsets(cluster), 120)
        if m.key() == b"isr-host"
    ]
    assert len({json.loads(m.value())["event_id"] for m in ours}) == len(ours) == int(match[1])


def test_coordinator_moves_mid_flush_exactly_once(cluster: KafkaCluster, tmp_path: Path) -> None:
    """``kill -9`` the node hosting the writers' group coordinator while they flush every 2 s;
    the group moves to another node and back when it restarts."""
    moved: list[int] = []

    def kill_the_coordinator(group: str) -> None:
        admin = AdminClient(cluster.client())
        description = admin.describe_consumer_groups([group])[group].result(30)
        victim = node(cluster, description.coordinator.id)
        victim.kill()
        moved.append(victim.node_id)
        time.sleep(12)
        victim.start()

    under_load(cluster, tmp_path, kill_the_coordinator)
    assert len(moved) == 1


def test_alert_evaluator_works_with_only_the_setup_acls(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    """The evaluator's principal, granted only what kafka-setup.sh grants, reads the whole
    topic, keeps its state topic and group, and stops cleanly: no refusal."""
    port = free_port()
    env = {**env_for(cluster, tmp_path, "alerts"), "SYSMETRICS_METRICS_PORT": str(port)}
    evaluator = subprocess.Popen(
        [SYSMETRICS, "alert"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    total = end_offsets(cluster)

    def read_everything() -> bool:
        assert evaluator.poll() is None, evaluator.communicate()[1][-2000:]
        seen = [metric(port, f"sysmetrics_alert_{n}_total") for n in ("events", "skipped")]
        return None not in seen and sum(s or 0 for s in seen) >= total

    try:
        wait_for(read_everything, 120, f"the evaluator to read {total} events")
    finally:
        evaluator.send_signal(signal.SIGTERM)
        _, errors = evaluator.communicate(timeout=60)
    assert evaluator.returncode == 0, errors[-2000:]
    assert "Error:" not in errors and "Traceback" not in errors
