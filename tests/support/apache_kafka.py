"""A real single-node Apache Kafka 4.x (KRaft, broker + controller) for the test tier.

The jars come from Maven Central through ``tests/kafka/pom.xml`` into a cache folder that
survives between runs (``SYSMETRICS_KAFKA_CACHE``, default ``~/.cache/sysmetrics``).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from pathlib import Path

from sysmetrics.stream.broker import BrokerError, stop_pid, wait_for_metadata
from tests.support.ports import free_port
from tests.support.tool_cache import exclusive

POM = Path(__file__).resolve().parents[1] / "kafka" / "pom.xml"
KAFKA_VERSION = "4.4.0"


def missing_tools() -> str | None:
    """Why Apache Kafka cannot run here, or None when it can."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            return (
                f"'{tool}' not found: install Java 17+ and Maven to run the Apache Kafka tier "
                "(Debian: apt-get install openjdk-17-jre-headless maven)"
            )
    return None


def maven_libs(pom: Path, name: str) -> Path:
    """The runtime jars of ``pom``'s dependencies, fetched once into the cache as ``name``."""
    with exclusive(name) as cache:
        libs = cache / name / "libs"
        # The marker names the pom it was fetched for: a changed pom fetches again.
        marker = libs / f".complete-{hashlib.sha256(pom.read_bytes()).hexdigest()[:12]}"
        if not marker.exists():
            libs.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    "mvn",
                    "-q",
                    "-B",
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={libs}",
                    "-DincludeScope=runtime",
                ],
                check=True,
            )
            marker.touch()
    return libs


def kafka_libs() -> Path:
    return maven_libs(POM, f"kafka-{KAFKA_VERSION}")


def java_command(libs: Path, heap: str, main_class: str, *args: str) -> list[str]:
    """A Kafka class run from the Maven jars, small enough for a 2-core test machine."""
    return [
        "java",
        "-Xms128m",
        f"-Xmx{heap}",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Dlog4j2.level=WARN",
        "-cp",
        f"{libs}/*",
        main_class,
        *args,
    ]


class ApacheKafkaBroker:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.controller_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.libs = kafka_libs()
        self.properties = work_dir / "server.properties"
        self.log_file = work_dir / "kafka.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> None:
        data = self.work_dir / "data"
        fresh = not data.exists()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=3",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=3",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                ]
            )
            + "\n"
        )
        if fresh:
            cluster_id = uuid.uuid4().hex[:22]
            subprocess.run(
                java_command(
                    self.libs,
                    "768m",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self.properties),
                    "--standalone",
                ),
                check=True,
                capture_output=True,
            )
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(
                java_command(self.libs, "768m", "kafka.Kafka", str(self.properties)),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_metadata(self.bootstrap, timeout_s)
        except BrokerError:
            self.stop()
            raise BrokerError(f"Apache Kafka did not start; see {self.log_file}") from None

    def stop(self) -> None:
        if self.process is not None:
            stop_pid(self.process.pid, timeout_s=30)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
