"""A real 3-node Apache Kafka 4.4 cluster (KRaft, each node broker + controller) behind TLS and
SASL/SCRAM-SHA-512 with ACLs, for the production tier of the tests.

Each node has its own data dir and ports on 127.0.0.1, so a test can ``kill -9`` and restart
any of them. Clients connect to the ``CLIENT`` listener (SASL_SSL, a certificate from the test's
own CA with 127.0.0.1 in its SAN); nodes talk to each other on PLAINTEXT listeners bound to
127.0.0.1 (principal ANONYMOUS, a super user, as an internal network would be). The
StandardAuthorizer denies everything without an ACL; ``admin`` is a super user created at
format time, the other users through the admin API.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shlex
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from sysmetrics.stream.broker import stop_pid
from tests.support.apache_kafka import java_command, kafka_libs
from tests.support.ports import distinct_free_ports

ADMIN_PASSWORD = "admin-secret-for-tests"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# What every node of a secured, replicated cluster sets. deploy/docker-compose.cluster.yml sets
# the same (tests/unit/test_deploy.py compares them), so what the tests prove is what it runs.
CLUSTER_PROPERTIES = {
    "process.roles": "broker,controller",
    "listener.security.protocol.map": "CLIENT:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "inter.broker.listener.name": "INTERNAL",
    "controller.listener.names": "CONTROLLER",
    "sasl.enabled.mechanisms": "SCRAM-SHA-512",
    "listener.name.client.scram-sha-512.sasl.jaas.config": (
        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    ),
    "ssl.keystore.type": "PEM",
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "false",
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "auto.create.topics.enable": "false",
    "unclean.leader.election.enable": "false",
}
# The scripts of Kafka's distribution (which Maven does not ship) and the classes they run.
ADMIN_TOOLS = {
    "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
    "kafka-configs.sh": "org.apache.kafka.tools.ConfigCommand",
    "kafka-acls.sh": "org.apache.kafka.tools.AclCommand",
}


def make_ca(folder: Path) -> tuple[Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost: (ca.pem, server.pem with key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("sysmetrics test CA"))
        .issuer_name(name("sysmetrics test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = folder / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_pem = folder / "server.pem"
    server_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return ca_pem, server_pem


class KafkaNode:
    def __init__(self, cluster: KafkaCluster, node_id: int, ports: list[int]) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.client_port, self.internal_port, self.controller_port = ports
        self.dir = cluster.work_dir / f"node-{node_id}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def properties(self) -> Path:
        return self.dir / "server.properties"

    def write_properties(self) -> None:
        c = self.cluster
        self.dir.mkdir(parents=True, exist_ok=True)
        properties = {
            **CLUSTER_PROPERTIES,
            "node.id": str(self.node_id),
            "controller.quorum.voters": ",".join(
                f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in c.nodes
            ),
            "listeners": f"CLIENT://127.0.0.1:{self.client_port},"
            f"INTERNAL://127.0.0.1:{self.internal_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{self.client_port},"
            f"INTERNAL://127.0.0.1:{self.internal_port}",
            "ssl.keystore.location": str(c.server_pem),
            "super.users": "User:admin;User:ANONYMOUS",
            "log.dirs": str(self.dir / "data"),
            # Small and quick for tests: fewer offsets partitions, no initial rebalance delay.
            "num.partitions": "6",
            "offsets.topic.num.partitions": "6",
            "group.initial.rebalance.delay.ms": "0",
        }
        lines = [f"{key}={value}" for key, value in properties.items()]
        self.properties.write_text("\n".join(lines) + "\n")

    def format(self, cluster_id: str) -> None:
        subprocess.run(
            self.cluster.java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.properties),
                "--add-scram",
                f"SCRAM-SHA-512=[name=admin,password={ADMIN_PASSWORD}]",
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        with (self.dir / "kafka.log").open("ab") as out:
            self.process = subprocess.Popen(
                self.cluster.java("kafka.Kafka", str(self.properties)),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_pid(self.process.pid, timeout_s=60)
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class KafkaCluster:
    def __init__(self, work_dir: Path, size: int = 3, tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: (CA certificate, the nodes' key + certificate) in PEM; default: made here."""
        self.work_dir = work_dir
        self.libs = kafka_libs()
        self.ca_pem, self.server_pem = tls or make_ca(work_dir / "tls")
        ports = distinct_free_ports(3 * size)
        self.nodes = [KafkaNode(self, n, ports[3 * n - 3 : 3 * n]) for n in range(1, size + 1)]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.client_port}" for n in self.nodes)

    def java(self, main_class: str, *args: str) -> list[str]:
        return java_command(self.libs, "512m", main_class, *args)

    @property
    def internal_bootstrap(self) -> str:
        """The nodes' PLAINTEXT listeners, whose connections are trusted (a super user)."""
        return ",".join(f"127.0.0.1:{n.internal_port}" for n in self.nodes)

    def admin_tools(self) -> Path:
        """A bin folder with kafka-topics.sh, kafka-configs.sh and kafka-acls.sh as in Kafka's
        distribution, each running its tool class from the Maven jars."""
        bin_dir = self.work_dir / "bin"
        bin_dir.mkdir(exist_ok=True)
        for script, main_class in ADMIN_TOOLS.items():
            path = bin_dir / script
            path.write_text(f'#!/bin/sh\nexec {shlex.join(self.java(main_class))} "$@"\n')
            path.chmod(0o755)
        return bin_dir

    def client(self, user: str = "admin", password: str = ADMIN_PASSWORD) -> dict[str, str]:
        """librdkafka settings of a SASL_SSL client."""
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": str(self.ca_pem),
        }

    def start(self, timeout_s: float = 180.0) -> None:
        cluster_id = uuid.uuid4().hex[:22]
        for node in self.nodes:
            node.write_properties()
            node.format(cluster_id)
        for node in self.nodes:
            node.start()
        try:
            self.wait_ready(timeout_s)
        except RuntimeError:
            for node in self.nodes:  # nothing left running after a failed start
                node.kill()
            raise

    def wait_ready(self, timeout_s: float = 180.0, brokers: int | None = None) -> None:
        """Until ``brokers`` (default: all running) answer metadata as brokers."""
        want = brokers or sum(n.running for n in self.nodes)
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            admin = AdminClient(self.client())
            try:
                metadata = admin.list_topics(timeout=5)
                if len(metadata.brokers) >= want:
                    return
            except Exception as exc:
                last = exc
            time.sleep(1.0)
        exited = {n.node_id: n.process.poll() for n in self.nodes if n.process is not None}
        logs = [str(n.dir / "kafka.log") for n in self.nodes]
        raise RuntimeError(
            f"cluster not ready ({last}; exit codes by node, None: running: {exited}); see {logs}"
        )

    def add_user(self, name: str, password: str) -> None:
        admin = AdminClient(self.client())
        futures = admin.alter_user_scram_credentials(
            [
                UserScramCredentialUpsertion(
                    name,
                    ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                    password.encode(),
                )
            ]
        )
        for future in futures.values():
            future.result(30)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def deployed_cluster(work_dir: Path, passwords: dict[str, str]) -> KafkaCluster:
    """A started cluster set up the way the README tells an administrator to:
    deploy/kafka-secrets.sh makes the CA, the nodes' certificate and the passwords it is not
    given (``passwords``: collector, lake-writer, alerts); deploy/kafka-setup.sh creates the
    topics, the users and their ACLs through Kafka's own tools. Raises with their output if
    either fails, or prints a password."""
    secrets = work_dir / "secrets"
    secrets.mkdir(parents=True)
    for user, password in passwords.items():
        (secrets / f"kafka_{user.replace('-', '_')}_password").write_text(password + "\n")
    subprocess.run(
        # 127.0.0.1 only: "localhost" is the name a test uses for a TLS name mismatch.
        ["bash", str(DEPLOY / "kafka-secrets.sh"), "IP:127.0.0.1"],
        env={**os.environ, "SECRETS_DIR": str(secrets)},
        capture_output=True,
        check=True,
    )
    cluster = KafkaCluster(work_dir, tls=(secrets / "kafka_ca.pem", secrets / "kafka_server.pem"))
    cluster.start()
    setup = subprocess.run(
        ["bash", str(DEPLOY / "kafka-setup.sh")],
        env={
            **os.environ,
            "BOOTSTRAP": cluster.internal_bootstrap,
            "KAFKA_BIN": str(cluster.admin_tools()),
            "SECRETS_DIR": str(secrets),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = setup.stdout + setup.stderr
    leaked = [user for user, password in passwords.items() if password in output]
    if setup.returncode != 0 or leaked:
        for node in cluster.nodes:
            node.kill()
        raise RuntimeError(f"kafka-setup.sh (rc {setup.returncode}, leaked {leaked}): {output}")
    return cluster
