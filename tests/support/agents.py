"""Real agents that feed `sysmetrics ingest`: Debian's node_exporter scraped by Debian's
Prometheus 2.42 or by Prometheus 3 (built from Go modules) with remote_write, the OTel
Collector built from Go modules, and the receiver itself as a process."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from sysmetrics.config import Settings
from sysmetrics.ingest.mapping import REMOTE_WRITE_SERIES
from sysmetrics.stream.broker import stop_pid
from tests.support.kafka_io import SYSMETRICS
from tests.support.ports import free_port
from tests.support.tool_cache import exclusive
from tests.support.waiting import wait_for

PROMETHEUS = shutil.which("prometheus")
NODE_EXPORTER = shutil.which("prometheus-node-exporter")
OTELCOL_SOURCE = Path(__file__).resolve().parents[1] / "otelcol"
NODE_COLLECTORS = (
    "cpu",
    "meminfo",
    "filesystem",
    "diskstats",
    "netdev",
    "loadavg",
    "uname",
    "stat",
)


def _get(
    url: str,
    timeout_s: float = 2.0,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
        return bytes(response.read())


def _ready(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        _get(url, 1.0, context)
    except OSError:
        return False
    return True


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl), for a receiver over TLS."""
    cert, key = folder / "ingest.pem", folder / "ingest.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "1", "-subj", "/CN=sysmetrics ingest"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Ingest:
    """`sysmetrics ingest` as a process on a fixed port (it keeps the port across restarts);
    with ``grpc``, OTLP/gRPC on ``grpc_port`` too."""

    def __init__(
        self,
        settings: Settings,
        data_dir: Path,
        wait_s: float = 3.0,
        grpc: bool = False,
        **env: str,
    ):
        self.port = free_port()
        self.grpc_port = free_port() if grpc else 0
        cert = env.get("SYSMETRICS_INGEST_TLS_CERT")
        self.tls = None if cert is None else ssl.create_default_context(cafile=cert)
        self.url = f"{'http' if cert is None else 'https'}://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SYSMETRICS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "SYSMETRICS_TOPIC": settings.topic,
            "SYSMETRICS_DATA_DIR": str(data_dir),
            "SYSMETRICS_INGEST_PORT": str(self.port),
            "SYSMETRICS_INGEST_ASSEMBLY_WAIT_S": str(wait_s),
            **({"SYSMETRICS_INGEST_GRPC_PORT": str(self.grpc_port)} if grpc else {}),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        data_dir = Path(self.env["SYSMETRICS_DATA_DIR"])
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = (data_dir / "ingest.log").open("a")
        self.process = subprocess.Popen(
            [SYSMETRICS, "ingest"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_for(
            lambda: _ready(f"{self.url}/-/healthy", self.tls), 30, "sysmetrics ingest to listen"
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> str:
        """Stop it (SIGTERM); its output."""
        assert self.process is not None
        stop_pid(self.process.pid, timeout_s=30)
        self.log.close()
        return Path(self.log.name).read_text()

    def exposition(self) -> str:
        """Its /metrics (with its token, when it has one)."""
        token_file = self.env.get("SYSMETRICS_INGEST_TOKEN_FILE")
        token = (
            Path(token_file).read_text().strip()
            if token_file
            else self.env.get("SYSMETRICS_INGEST_TOKEN")
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return _get(f"{self.url}/metrics", 5.0, self.tls, headers).decode()

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.exposition().splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def spool_resent(log: str) -> int:
    """Events a restarted receiver's spool resent, from its log ("spool holds N unsent events"
    at each start): Kafka may have taken them before the kill, so they may be in it twice."""
    return sum(int(n) for n in re.findall(r"spool holds (\d+) unsent events", log))


class RecordingProxy:
    """Stands between Prometheus and node_exporter: every scrape's body, with its time, is
    kept, so the test knows what node_exporter answered at each scrape."""

    def __init__(self, upstream: str) -> None:
        self.scrapes: list[tuple[float, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                received = time.time()
                body = _get(upstream)
                proxy.scrapes.append((received, body.decode()))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class NodeExporter:
    def __init__(self) -> None:
        assert NODE_EXPORTER is not None
        self.port = free_port()
        flags = [f"--collector.{c}" for c in NODE_COLLECTORS]
        self.process = subprocess.Popen(
            [
                NODE_EXPORTER,
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--collector.disable-defaults",
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        wait_for(lambda: _ready(self.url), 30, "node_exporter")

    def close(self) -> None:
        stop_pid(self.process.pid, timeout_s=10)


PROMETHEUS_3 = "github.com/prometheus/prometheus/cmd/prometheus@v0.316.0"
"""Prometheus 3.16 (its Go module is numbered v0.316): the release that sends remote-write 2.0."""


def prometheus_3_binary() -> Path | None:
    """Prometheus 3, built once with ``go install`` through the Go proxy and cached by its
    version (as the Kafka jars are; ~7 minutes on a fresh 2-core machine); None when Go is
    missing."""
    go = shutil.which("go")
    if go is None:
        return None
    name = "prometheus-" + hashlib.sha256(PROMETHEUS_3.encode()).hexdigest()[:12]
    with exclusive(name) as cache:
        binary = cache / name / "prometheus"
        if not binary.exists():
            building = cache / name / "building"
            subprocess.run(
                [go, "install", "-trimpath", "-ldflags=-s", PROMETHEUS_3],
                env={**os.environ, "GOBIN": str(building)},
                check=True,
            )
            os.replace(building / "prometheus", binary)
            building.rmdir()
    return binary


def remote_write_block(
    url: str,
    protobuf_message: str = "",
    basic_auth: tuple[str, str] | None = None,
    ca_file: Path | None = None,
) -> str:
    """The README's remote_write block: only the series sysmetrics maps leave Prometheus.
    ``protobuf_message`` (Prometheus 3): ``io.prometheus.write.v2.Request`` sends 2.0;
    ``basic_auth``: (the name it gives itself as a sender, the ingest token); ``ca_file``: the
    certificate an HTTPS receiver's is checked against."""
    names = "|".join(sorted(REMOTE_WRITE_SERIES))
    message = f"\n    protobuf_message: {protobuf_message}" if protobuf_message else ""
    if basic_auth is not None:
        user, password = basic_auth
        message += f"\n    basic_auth: {{username: {user}, password: {password}}}"
    if ca_file is not None:
        message += f"\n    tls_config: {{ca_file: {ca_file}}}"
    return f"""remote_write:
  - url: {url}/api/v1/write{message}
    queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 2s}}
    write_relabel_configs:
      - source_labels: [__name__]
        regex: "{names}"
        action: keep
"""


class Prometheus:
    """Debian's Prometheus (or ``binary``) with this configuration (and an empty TSDB of its
    own), listening on ``port`` (default: a free one)."""

    def __init__(
        self,
        work: Path,
        config: str,
        flags: tuple[str, ...] = (),
        binary: Path | None = None,
        port: int | None = None,
    ) -> None:
        assert PROMETHEUS is not None, "Prometheus missing: run scripts/install-system-deps.sh"
        work.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (work / "prometheus.yml").write_text(config)
        self.process = subprocess.Popen(
            [
                str(binary or PROMETHEUS),
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=(work / "prometheus.log").open("wb"),
        )
        wait_for(lambda: _ready(f"{self.url}/-/ready"), 60, "Prometheus")

    @classmethod
    def scraping(
        cls,
        work: Path,
        target: str,
        ingest_url: str,
        interval_s: float = 2,
        binary: Path | None = None,
        protobuf_message: str = "",
    ) -> Prometheus:
        """Scrapes ``target`` and remote-writes what sysmetrics maps to ``ingest_url``."""
        return cls(
            work,
            f"""global: {{scrape_interval: {interval_s}s, scrape_timeout: {interval_s}s}}
scrape_configs:
  - job_name: node
    static_configs: [{{targets: ["{target}"]}}]
{remote_write_block(ingest_url, protobuf_message)}""",
            binary=binary,
        )

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return response.read().decode()

    def metric(self, name: str) -> float:
        """The sum of ``name``'s series in Prometheus' own /metrics."""
        total = 0.0
        for line in self._get("/metrics").splitlines():
            series, _, value = line.rpartition(" ")
            if series.partition("{")[0] == name:
                total += float(value)
        return total

    def _delivered_past(self, ts_ms: int) -> bool:
        """Remote-write sent a sample later than ``ts_ms`` and has none pending: a stopped
        Prometheus does not send what its WAL watcher had not read yet, so a test's oracle is
        what was delivered, not what was scraped."""
        sent = pending = None
        for line in self._get("/metrics").splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith("prometheus_remote_storage_queue_highest_sent_timestamp_seconds"):
                sent = float(value)  # whole seconds: Prometheus divides the ms by 1000
            elif name.startswith("prometheus_remote_storage_samples_pending"):
                pending = float(value)
        return sent is not None and sent * 1000 > ts_ms and pending == 0

    def wait_delivered(self, series: str, timeout_s: float = 120) -> None:
        """Once the target is gone: wait until remote-write delivered every sample of
        ``series`` (the stale marker after the last one included, so the WAL was read past)."""
        query = urllib.parse.quote(f"{series}[1h]")
        answer = json.loads(self._get(f"/api/v1/query?query={query}"))
        last = max(int(float(ts) * 1000) for r in answer["data"]["result"] for ts, _ in r["values"])
        wait_for(lambda: self._delivered_past(last), timeout_s, f"{series} remote-written")

    def stop(self) -> None:
        stop_pid(self.process.pid, timeout_s=60)


def hostmetrics_to_each(exporters: dict[str, str]) -> str:
    """A Collector configuration: `hostmetrics` (CPU and memory every 2 s) into one pipeline
    per exporter, given as its id and its settings' lines (``{"otlp/gzip": "endpoint: …"}``),
    each behind a `resource` processor naming the host after the id's name (`gzip-host`)."""
    resources = exporter_blocks = pipelines = ""
    for exporter, settings in exporters.items():
        kind = exporter.split("/")[1]
        resources += f"""
  resource/{kind}:
    attributes: [{{key: host.name, value: {kind}-host, action: upsert}}]"""
        exporter_blocks += f"\n  {exporter}:" + "".join(
            f"\n    {line}" for line in settings.splitlines()
        )
        pipelines += f"""
    metrics/{kind}:
      {{receivers: [hostmetrics], processors: [resource/{kind}], exporters: [{exporter}]}}"""
    return f"""receivers:
  hostmetrics:
    collection_interval: 2s
    scrapers: {{cpu: {{}}, memory: {{metrics: {{system.memory.limit: {{enabled: true}}}}}}}}
processors:{resources}
exporters:{exporter_blocks}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:{pipelines}
"""


class OtelCollector:
    """The test Collector (:func:`otelcol_binary`) running ``config``; its log is written
    beside it (``otelcol.yaml`` -> ``otelcol.log``), not to a pipe nobody reads while it runs."""

    def __init__(self, binary: Path, config: Path) -> None:
        self.log = config.with_suffix(".log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(binary), "--config", str(config)], stdout=subprocess.DEVNULL, stderr=log
            )

    def stop(self) -> str:
        """Stop it (SIGTERM); its log."""
        stop_pid(self.process.pid, timeout_s=30)
        return self.log.read_text()


def otelcol_binary() -> Path | None:
    """The test Collector, built once from tests/otelcol through the Go proxy and cached by
    the hash of its sources (as the Kafka jars are); None when Go is missing."""
    go = shutil.which("go")
    if go is None:
        return None
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((OTELCOL_SOURCE / name).read_bytes())
    name = f"otelcol-{digest.hexdigest()[:12]}"
    with exclusive(name) as cache:
        binary = cache / name / "otelcol"
        if not binary.exists():
            binary.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [go, "build", "-trimpath", "-ldflags=-s", "-o", str(binary) + ".tmp", "."],
                cwd=OTELCOL_SOURCE,
                check=True,
            )
            os.replace(str(binary) + ".tmp", binary)
    return binary
