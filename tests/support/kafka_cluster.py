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
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from sysmetrics.stream.broker import free_port, stop_pid
from tests.support.apache_kafka import kafka_libs

ADMIN_PASSWORD = "admin-secret-for-tests"


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
    def __init__(self, cluster: KafkaCluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.client_port = free_port()
        self.internal_port = free_port()
        self.controller_port = free_port()
        self.dir = cluster.work_dir / f"node-{node_id}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def properties(self) -> Path:
        return self.dir / "server.properties"

    def write_properties(self) -> None:
        c = self.cluster
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            "controller.quorum.voters="
            + ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in c.nodes),
            f"listeners=CLIENT://127.0.0.1:{self.client_port},"
            f"INTERNAL://127.0.0.1:{self.internal_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=CLIENT://127.0.0.1:{self.client_port},"
            f"INTERNAL://127.0.0.1:{self.internal_port}",
            "listener.security.protocol.map=CLIENT:SASL_SSL,INTERNAL:PLAINTEXT,"
            "CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=INTERNAL",
            "controller.listener.names=CONTROLLER",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.client.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={c.server_pem}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:admin;User:ANONYMOUS",
            "allow.everyone.if.no.acl.found=false",
            f"log.dirs={self.dir / 'data'}",
            "num.partitions=6",
            "default.replication.factor=3",
            "min.insync.replicas=2",
            "offsets.topic.replication.factor=3",
            "offsets.topic.num.partitions=6",
            "transaction.state.log.replication.factor=3",
            "transaction.state.log.min.isr=2",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "unclean.leader.election.enable=false",
        ]
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
    def __init__(self, work_dir: Path, size: int = 3) -> None:
        self.work_dir = work_dir
        self.libs = kafka_libs()
        self.ca_pem, self.server_pem = make_ca(work_dir / "tls")
        self.nodes: list[KafkaNode] = []
        self.nodes = [KafkaNode(self, n) for n in range(1, size + 1)]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.client_port}" for n in self.nodes)

    def java(self, main_class: str, *args: str) -> list[str]:
        return [
            "java",
            "-Xms128m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Dlog4j2.level=WARN",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

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
        self.wait_ready(timeout_s)

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
        logs = [str(n.dir / "kafka.log") for n in self.nodes]
        raise RuntimeError(f"cluster not ready ({last}); see {logs}")

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

    def allow(self, user: str, resource: ResourceType, name: str, *ops: AclOperation) -> None:
        admin = AdminClient(self.client())
        bindings = [
            AclBinding(
                resource,
                name,
                ResourcePatternType.LITERAL,
                f"User:{user}",
                "*",
                op,
                AclPermissionType.ALLOW,
            )
            for op in ops
        ]
        for future in admin.create_acls(bindings).values():
            future.result(30)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
