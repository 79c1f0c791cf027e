"""Production Kafka: a 3-node Apache Kafka 4.4 cluster (KRaft) behind SASL_SSL with SCRAM users
and ACLs (tests/support/kafka_cluster.py), driven through the project's own settings.

The collector principal may only write the metrics topic; the lake-writer principal may read
it and use its group; a third user has valid credentials and no ACL at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AclOperation, AdminClient, NewTopic, ResourceType

from sysmetrics.config import load_settings
from tests.support.apache_kafka import missing_tools
from tests.support.kafka_cluster import ADMIN_PASSWORD, KafkaCluster, make_ca
from tests.support.kafka_io import SYSMETRICS, read_topic
from tests.support.lake import event_id_counts
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools())),
    pytest.mark.broker,
]
TOPIC = "machine_metrics"
GROUP = "sysmetrics-lake-writer"
PASSWORDS = {"collector": "c0llector-pw-7f3a", "writer": "wr1ter-pw-91bd", "nobody": "n0b0dy-pw"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-cluster"))
    cluster.start()
    try:
        for user, password in PASSWORDS.items():
            cluster.add_user(user, password)
        admin = AdminClient(cluster.client())
        topic = NewTopic(
            TOPIC,
            num_partitions=6,
            replication_factor=3,
            config={"min.insync.replicas": "2", "message.timestamp.type": "LogAppendTime"},
        )
        admin.create_topics([topic])[TOPIC].result(60)
        cluster.allow("collector", ResourceType.TOPIC, TOPIC, AclOperation.WRITE)
        cluster.allow("collector", ResourceType.TOPIC, TOPIC, AclOperation.DESCRIBE)
        cluster.allow("writer", ResourceType.TOPIC, TOPIC, AclOperation.READ)
        cluster.allow("writer", ResourceType.TOPIC, TOPIC, AclOperation.DESCRIBE)
        cluster.allow("writer", ResourceType.GROUP, GROUP, AclOperation.READ)
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


def end_offsets(cluster: KafkaCluster) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**cluster.client(), "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1]
            for p in range(6)
        )
    finally:
        consumer.close()


def test_refusals_are_one_line_and_nothing_is_written(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    """Wrong password, no ACL, unknown CA: one line saying what to check, no traceback, no
    retry storm, nothing in the topic or the lake from that client; the collector spools and
    delivers once its password is fixed; the password given by file is never printed."""
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

    # The lake writer: wrong password, a user without ACLs, a CA that did not sign the brokers.
    other_ca, _ = make_ca(tmp_path / "other-ca")
    cases = [
        (
            env_for(cluster, tmp_path, "writer", password="wrong"),
            refusal.replace("collector", "writer"),
        ),
        (env_for(cluster, tmp_path, "nobody"), "Kafka user nobody may not see or create topic"),
        (env_for(cluster, tmp_path, "writer", ca=other_ca), "TLS with Kafka at 127.0.0.1"),
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


def leaders(cluster: KafkaCluster) -> Counter[int]:
    admin = AdminClient(cluster.client())
    topic = admin.list_topics(TOPIC, timeout=10).topics[TOPIC]
    return Counter(p.leader for p in topic.partitions.values())


def test_leader_failover_under_load_exactly_once(cluster: KafkaCluster, tmp_path: Path) -> None:
    """A simulated fleet produces while two lake writers consume; the node leading most
    partitions is killed mid-stream and restarted later: every event in the lake once."""
    collector = env_for(cluster, tmp_path, "collector")
    writer = env_for(cluster, tmp_path, "writer")
    writer["SYSMETRICS_CONSUMER_GROUP"] = GROUP
    hosts, minutes = 40, 20
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
            "5",
        ],
        env=collector,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "fleet.log").open("wb"),
    )
    try:
        time.sleep(8)
        leader, _ = leaders(cluster).most_common(1)[0]
        victim = next(n for n in cluster.nodes if n.node_id == leader)
        victim.kill()
        time.sleep(12)
        victim.start()
        assert fleet.wait(180) == 0, (tmp_path / "fleet.log").read_text()[-2000:]
        cluster.wait_ready(120, brokers=3)
        # What the fleet produced: the topic's events since the test began (read as admin).
        everything = end_offsets(cluster)
        messages = read_topic(admin_settings(cluster, tmp_path), everything, timeout_s=120)
        assert len(messages) == everything
        # Every event in the topic (the fleet's, and any an earlier test left) once.
        produced = {json.loads(m.value())["event_id"] for m in messages}
        total = everything
        assert len(produced) == total and everything - before > hosts * minutes * 5
        lake = tmp_path / "lake"

        def all_in_lake() -> bool:
            return sum(event_id_counts(lake).values()) >= total

        wait_for(all_in_lake, 180, f"{total} events in the lake")
        time.sleep(4)  # a duplicate would land now
    finally:
        for process in writers:
            process.send_signal(signal.SIGTERM)
        for process in writers:
            process.wait(60)
    counts = event_id_counts(tmp_path / "lake")
    assert set(counts) == produced and set(counts.values()) == {1}
