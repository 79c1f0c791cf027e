"""`sysmetrics ingest` with the real agents: node_exporter scraped by Prometheus 2.42 with
remote_write (1.0) and by Prometheus 3 with remote-write 2.0, and the OTel Collector's
hostmetrics over OTLP/HTTP, through Kafka into the lake, the warehouse and the dashboard; poison
requests, authentication, and faults."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import re
import resource
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cramjam
import pytest
from confluent_kafka.admin import AdminClient
from starlette.testclient import TestClient

from sysmetrics.alerts.evaluator import KnownHost
from sysmetrics.alerts.service import AlertService, read_state_records
from sysmetrics.config import Settings, load_settings
from sysmetrics.dashboard.app import create_app
from sysmetrics.stream.broker import stop_pid
from tests.conftest import settings_for
from tests.support.agents import (
    NODE_EXPORTER,
    PROMETHEUS,
    Ingest,
    NodeExporter,
    OtelCollector,
    Prometheus,
    RecordingProxy,
    hostmetrics_to_each,
    otelcol_binary,
    prometheus_3_binary,
    remote_write_block,
    self_signed_certificate,
    spool_resent,
)
from tests.support.alertmanager import ALERTMANAGER, MISSING, alertmanager
from tests.support.brokers import TansuBroker, TestBroker
from tests.support.kafka_io import SYSMETRICS, read_topic
from tests.support.lake import (
    assert_each_sample_once,
    data_files,
    listed_retirements,
    read_lines,
)
from tests.support.ports import free_port
from tests.support.remote_write import series_of, write_request, write_request_v2
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(
        PROMETHEUS is None or NODE_EXPORTER is None,
        reason="Prometheus / node_exporter missing: run scripts/install-system-deps.sh",
    ),
]


@pytest.fixture
def prometheus_3() -> Path:
    """Prometheus 3.16, built from its Go module on first use (the test's timeout covers it)."""
    binary = prometheus_3_binary()
    if binary is None:
        pytest.skip("Go missing: Prometheus 3 cannot be built")
    return binary


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "SYSMETRICS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "SYSMETRICS_TOPIC": settings.topic,
        "SYSMETRICS_CONSUMER_GROUP": settings.consumer_group,
        "SYSMETRICS_DATA_DIR": str(settings.data_dir),
        "SYSMETRICS_LAKE_URL": settings.lake_url,
        "SYSMETRICS_WAREHOUSE_URL": settings.warehouse_url,
        "SYSMETRICS_FLUSH_SECONDS": "1",
    }


def _status(settings: Settings) -> str:
    """What `sysmetrics status` prints."""
    return subprocess.run(
        [SYSMETRICS, "status"], env=_env(settings), capture_output=True, text=True, timeout=60
    ).stdout


def drain_to_lake(settings: Settings) -> list[dict]:
    subprocess.run(
        [SYSMETRICS, "consume", "--idle-exit", "6", "--metrics-port", "0"],
        env=_env(settings),
        check=True,
        capture_output=True,
        timeout=180,
    )
    return [json.loads(line) for p in data_files(Path(settings.lake_url)) for line in read_lines(p)]


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _cpu_busy_total(exposition: str) -> tuple[float, float]:
    busy = total = 0.0
    for labels, value in series_of(exposition):
        if labels["__name__"] == "node_cpu_seconds_total":
            total += value
            busy += 0 if labels["mode"] in ("idle", "iowait") else value
    return busy, total


def _counter(exposition: str, name: str, **match: str) -> float:
    return sum(
        v
        for labels, v in series_of(exposition)
        if labels["__name__"] == name and all(labels.get(k) == x for k, x in match.items())
    )


def assert_events_are_the_scrapes(
    events: list[dict], proxy: RecordingProxy, sender: str = "127.0.0.1"
) -> None:
    """One event per scrape of the one host behind ``proxy``, each holding exactly what
    node_exporter answered at that scrape (CPU %: what two scrapes' counters give), delivered
    by ``sender`` (without an X-Sysmetrics-Sender: the sender's address)."""
    assert events and {e["source"] for e in events} == {"node_exporter"}
    assert {e["sender"] for e in events} == {sender}
    assert {e["host"]["host_id"] for e in events} == {proxy.address}, "no poison in the lake"
    stamps = [e["ts"] for e in events]
    assert len(stamps) == len(set(stamps)) == len({e["event_id"] for e in events})
    events.sort(key=lambda e: e["ts"])
    scrapes = sorted(proxy.scrapes)
    matched = []
    for event in events:
        ts = datetime.fromisoformat(event["ts"]).timestamp()
        scrape_time, body = min(scrapes, key=lambda s: abs(s[0] - ts))
        assert abs(scrape_time - ts) < 1.0, "every event is one scrape"
        matched.append((event, body))
    assert len(matched) >= 6
    for event, body in matched:  # counters and gauges exactly what node_exporter said
        assert event["memory"]["total_bytes"] == _counter(body, "node_memory_MemTotal_bytes")
        assert event["memory"]["available_bytes"] == _counter(
            body, "node_memory_MemAvailable_bytes"
        )
        for nic in event["network"]["interfaces"]:
            assert nic["bytes_recv"] == _counter(
                body, "node_network_receive_bytes_total", device=nic["name"]
            )
            assert nic["bytes_sent"] == _counter(
                body, "node_network_transmit_bytes_total", device=nic["name"]
            )
        outside = [nic for nic in event["network"]["interfaces"] if nic["name"] != "lo"]
        assert event["network"]["bytes_recv"] == sum(nic["bytes_recv"] for nic in outside)
        assert event["disk_io"]["read_bytes"] == _counter(body, "node_disk_read_bytes_total")
        root = next(d for d in event["disks"] if d["mountpoint"] == "/")
        assert root["total_bytes"] == _counter(body, "node_filesystem_size_bytes", mountpoint="/")
    assert matched[0][0]["cpu"]["utilization_pct"] is None
    for (_prev, prev_body), (event, body) in itertools.pairwise(matched):
        (b0, t0), (b1, t1) = _cpu_busy_total(prev_body), _cpu_busy_total(body)
        assert event["cpu"]["utilization_pct"] == pytest.approx(100 * (b1 - b0) / (t1 - t0))


def poison_requests(url: str) -> dict[str, int]:
    """1,200 requests that can never succeed, 200 of each kind; their status codes."""
    valid = write_request([({"__name__": "node_load1", "instance": "evil:9100"}, 1.0)], 1)
    no_host = write_request([({"__name__": "node_load1"}, 1.0)], int(time.time() * 1000))
    rw = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
    kinds = {
        "not_snappy": (b"\xff" * 64, rw),
        "not_protobuf": (bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff\xff")), rw),
        "wrong_content_type": (valid, {**rw, "Content-Type": "text/plain"}),
        "too_large": (b"\x00" * (2 * 1024 * 1024), rw),
        "no_host_label": (no_host, rw),
        "bad_sender": (valid, {**rw, "X-Sysmetrics-Sender": "prom eu 1"}),
    }
    codes: dict[str, int] = {}
    for kind, (body, headers) in kinds.items():
        for _ in range(200):
            code = post(f"{url}/api/v1/write", body, headers)
            codes[kind] = code
            assert 400 <= code < 500, f"{kind} answered {code}"
    return codes


def test_node_exporter_through_prometheus_reaches_lake_warehouse_and_dashboard(
    broker_settings: Settings, tmp_path: Path
) -> None:
    settings = broker_settings
    ingest = Ingest(settings, settings.data_dir, SYSMETRICS_INGEST_MAX_REQUEST_BYTES="1048576")
    ingest.start()
    node = NodeExporter()
    proxy = RecordingProxy(node.url)
    prometheus = Prometheus.scraping(
        tmp_path / "prometheus", proxy.address, ingest.url, interval_s=2
    )
    try:
        time.sleep(8)
        codes = poison_requests(ingest.url)  # beside the valid stream
        assert codes == {
            "not_snappy": 400,
            "not_protobuf": 400,
            "wrong_content_type": 415,
            "too_large": 413,
            "no_host_label": 400,
            "bad_sender": 400,
        }
        time.sleep(12)
    finally:
        prometheus.stop()
        proxy.close()
        node.close()
    wait_for(lambda: ingest.metric("sysmetrics_ingest_pending_samples") == 0, 30, "assembly")
    assert ingest.metric("sysmetrics_ingest_rejected_total") == 1200
    assert ingest.metric("sysmetrics_ingest_dropped_series_total") == 0, "relabel keeps only ours"
    ingest.stop()

    events = drain_to_lake(settings)
    assert_events_are_the_scrapes(events, proxy)

    hours = sorted({e["ts"][:13] for e in events})
    for hour in hours:
        subprocess.run(
            [SYSMETRICS, "batch", "run", "--hour", hour],
            env=_env(settings),
            check=True,
            capture_output=True,
            timeout=300,
        )
    port = free_port()
    dashboard = subprocess.Popen(
        [SYSMETRICS, "dashboard", "--port", str(port)],
        env=_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/host?id={proxy.address}"
        wait_for(lambda: _page(url) is not None, 60, "the dashboard")
        page = _page(url) or ""
        assert events[-1]["host"]["hostname"] in page
        assert "Sent by node_exporter" in page
    finally:
        stop_pid(dashboard.pid)


def _page(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


@pytest.mark.slow
def test_kafka_down_60s_and_receiver_killed_lose_and_duplicate_nothing(
    restartable_broker: TestBroker, tmp_path: Path
) -> None:
    kafka_down_and_receiver_killed(restartable_broker, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # on a fresh machine it first builds Prometheus (~7 min when idle)
def test_remote_write_2_through_kafka_down_and_receiver_killed_loses_and_duplicates_nothing(
    apache_kafka_broker: TestBroker, prometheus_3: Path, tmp_path: Path
) -> None:
    kafka_down_and_receiver_killed(
        apache_kafka_broker, tmp_path, prometheus_3, "io.prometheus.write.v2.Request"
    )


def kafka_down_and_receiver_killed(
    broker: TestBroker, tmp_path: Path, binary: Path | None = None, protobuf_message: str = ""
) -> None:
    """Prometheus (Debian's 2.42, or ``binary`` sending ``protobuf_message``) scrapes
    node_exporter every second while Kafka is down for 60 s and the receiver is killed in the
    middle: every scrape time Prometheus recorded is in the lake exactly once."""
    settings = settings_for(broker, tmp_path)
    ingest = Ingest(settings, settings.data_dir)
    ingest.start()
    with _node_exporter_remote_written(ingest, tmp_path, binary, protobuf_message):
        time.sleep(8)
        broker.stop()
        time.sleep(20)
        ingest.kill()  # mid-stream, with events in its spool and samples being assembled
        time.sleep(5)
        ingest.start()
        time.sleep(37)
        broker.start()
        time.sleep(10)
    scrape_times = _every_scrape_assembled_and_sent(ingest, tmp_path, drain_s=120)
    version = "2" if protobuf_message else "1"
    assert ingest.metric(f'sysmetrics_ingest_remote_write_requests_total{{version="{version}"}}')
    assert ingest.metric("sysmetrics_ingest_remote_write_requests_total") == ingest.metric(
        f'sysmetrics_ingest_remote_write_requests_total{{version="{version}"}}'
    )
    ingest.stop()
    assert_each_scrape_once_in_the_lake(settings, scrape_times, at_least=60)


def test_receiver_disk_full_answers_503_and_loses_and_duplicates_nothing(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """Prometheus scrapes node_exporter every second while the receiver's files may grow by
    only 300 bytes for 20 s (a real RLIMIT_FSIZE on its process: a write takes what fits, then
    fails, as on a full disk): requests are answered 503 and Prometheus resends them from its
    WAL; once there is room the receiver is killed (-9) and restarted from its journal and
    spool: every scrape time is in the lake once (twice, as the same event, only what its spool
    resends: Kafka took it, the acknowledgement was not read before the kill). Before the fixes
    the record cut by the limit was acknowledged and the next request's record continued it,
    and an emit the journal could not record was emitted again after the restart."""
    settings = tansu_settings
    ingest = Ingest(settings, settings.data_dir)
    ingest.start()
    assert ingest.process is not None
    pid = ingest.process.pid
    with _node_exporter_remote_written(ingest, tmp_path):
        wait_for(lambda: ingest.metric("sysmetrics_ingest_events_total") >= 3, 60, "first events")
        room = (settings.data_dir / "ingest" / "journal.jsonl").stat().st_size + 300
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (room, resource.RLIM_INFINITY))
        wait_for(
            lambda: ingest.metric('sysmetrics_ingest_requests_total{code="503"') >= 3,
            30,
            "503 answers while the disk is full",
        )
        time.sleep(15)
        resource.prlimit(
            pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
        time.sleep(3)
        refused = ingest.metric('sysmetrics_ingest_requests_total{code="503"')
        ingest.kill()  # with samples being assembled: they come back from the journal
        ingest.start()
        time.sleep(8)
    scrape_times = _every_scrape_assembled_and_sent(ingest, tmp_path, drain_s=60)
    log = ingest.stop()
    assert_each_scrape_once_in_the_lake(
        settings, scrape_times, at_least=30, resent=spool_resent(log)
    )
    assert refused >= 3


def assert_each_scrape_once_in_the_lake(
    settings: Settings, scrape_times: list[int], at_least: int, resent: int = 0
) -> None:
    """Every scrape time Prometheus recorded (ms) is one event in the lake, and no other; at
    most ``resent`` of them twice, as the same event (:func:`assert_each_sample_once`)."""
    assert len(set(scrape_times)) >= at_least
    assert_each_sample_once(drain_to_lake(settings), scrape_times, resent)


@contextlib.contextmanager
def _node_exporter_remote_written(
    ingest: Ingest, tmp_path: Path, binary: Path | None = None, protobuf_message: str = ""
) -> Iterator[None]:
    """A real node_exporter scraped every second by a real Prometheus (in ``tmp_path /
    "prometheus"``) that remote-writes to ``ingest``. Leaving the block, node_exporter goes
    away (the next scrape is a stale marker, the last thing Prometheus sends) and Prometheus
    stops once it has delivered every sample."""
    node = NodeExporter()
    prometheus = Prometheus.scraping(
        tmp_path / "prometheus",
        f"127.0.0.1:{node.port}",
        ingest.url,
        1,
        binary=binary,
        protobuf_message=protobuf_message,
    )
    try:
        yield
        node.close()
        prometheus.wait_delivered("node_load1")
    finally:
        prometheus.stop()
        node.close()


def _every_scrape_assembled_and_sent(ingest: Ingest, tmp_path: Path, drain_s: float) -> list[int]:
    """Every scrape time Prometheus recorded, once the receiver holds none of them in
    assembly and its spool is empty."""
    wait_for(lambda: ingest.metric("sysmetrics_ingest_pending_samples") == 0, 60, "assembly")
    wait_for(
        lambda: ingest.metric("sysmetrics_ingest_producer_spool_depth") == 0, drain_s, "spool drain"
    )
    return _prometheus_scrape_times(tmp_path / "prometheus")


def _prometheus_scrape_times(work: Path) -> list[int]:
    """Every scrape time Prometheus recorded (its TSDB, read with promtool)."""
    out = subprocess.run(
        ["promtool", "tsdb", "dump", str(work / "tsdb"), "--match", "node_load1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # a stale marker (the target gone, a failed scrape) is NaN: no reading, no event
    return sorted(
        {int(line.split()[-1]) for line in out.splitlines() if line.strip() and "NaN" not in line}
    )


def _sample_times(events: list[dict], host: str) -> list[float]:
    """The host's sample times in the lake (Unix seconds), oldest first."""
    return sorted(
        datetime.fromisoformat(e["ts"]).timestamp() for e in events if e["host"]["host_id"] == host
    )


def test_over_https_a_real_prometheus_writes_and_plain_http_is_not_served(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """`SYSMETRICS_INGEST_TLS_CERT`/`_KEY`: Debian's Prometheus remote-writes over HTTPS,
    checking the receiver's certificate (`tls_config.ca_file`), and its samples become events;
    a plain-HTTP request to the same port gets no answer it could take for one; without the
    token, 401; `sysmetrics status` names the https URL."""
    cert, key = self_signed_certificate(tmp_path)
    ingest = Ingest(
        tansu_settings,
        tansu_settings.data_dir,
        wait_s=1.0,
        SYSMETRICS_INGEST_TOKEN="s3cret",
        SYSMETRICS_INGEST_TLS_CERT=str(cert),
        SYSMETRICS_INGEST_TLS_KEY=str(key),
    )
    ingest.start()
    node = NodeExporter()
    prometheus = Prometheus(
        tmp_path / "prometheus",
        f"""global: {{scrape_interval: 2s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: node
    static_configs: [{{targets: [127.0.0.1:{node.port}], labels: {{instance: web-1}}}}]
{remote_write_block(ingest.url, basic_auth=("prom-tls", "s3cret"), ca_file=cert)}""",
    )
    rw = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
    body = write_request([({"__name__": "node_load1", "instance": "h:9100"}, 1.0)], 1)
    try:
        wait_for(
            lambda: ingest.metric("sysmetrics_ingest_events_total") >= 2,
            90,
            "two scrapes of web-1 over HTTPS",
        )
        plain = ingest.url.replace("https://", "http://")
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            post(f"{plain}/api/v1/write", body, {**rw, "Authorization": "Bearer s3cret"})
        request = urllib.request.Request(
            f"{ingest.url}/api/v1/write", data=body, headers=rw, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10, context=ingest.tls)
        assert refused.value.code == 401
        status = _status(tansu_settings)
        assert f" {ingest.url}: " in status, status
    finally:
        with contextlib.suppress(Exception):
            prometheus.stop()
        node.close()
        ingest.stop()
    events = drain_to_lake(tansu_settings)
    assert {e["host"]["host_id"] for e in events} == {"web-1"}
    assert {e["sender"] for e in events} == {"prom-tls"}
    assert all(e["cpu"]["logical_cores"] for e in events)


def test_non_loopback_needs_a_token_and_unauthenticated_requests_get_401(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    refused = subprocess.run(
        [SYSMETRICS, "ingest", "--host", "0.0.0.0", "--port", str(free_port())],
        env=_env(tansu_settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "SYSMETRICS_INGEST_TOKEN" in refused.stderr
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    ingest = Ingest(
        tansu_settings,
        tmp_path / "data",
        SYSMETRICS_INGEST_HOST="0.0.0.0",
        SYSMETRICS_INGEST_TOKEN_FILE=str(token_file),
    )
    ingest.start()
    try:
        body = write_request(
            [({"__name__": "node_load1", "instance": "h:9100"}, 1.0)], int(time.time() * 1000)
        )
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
        assert post(f"{ingest.url}/api/v1/write", body, headers) == 401
        wrong = {**headers, "Authorization": "Bearer nope"}
        assert post(f"{ingest.url}/api/v1/write", body, wrong) == 401
        right = {**headers, "Authorization": "Bearer s3cret"}
        assert post(f"{ingest.url}/api/v1/write", body, right) == 204
        # An authenticated sender names itself as it likes: /metrics shows the latest 1,000.
        for n in range(1001):
            named = {**right, "X-Sysmetrics-Sender": f"sender-{n}"}
            assert post(f"{ingest.url}/api/v1/write", body, named) == 204
        shown = re.findall(
            r'^sysmetrics_ingest_sender_last_request_timestamp_seconds\{sender="([^"]+)"\}',
            ingest.exposition(),
            re.MULTILINE,
        )
        assert len(shown) == 1000 and "sender-0" not in shown and "sender-1000" in shown
    finally:
        ingest.stop()


def test_remote_write_2_is_read_and_an_unknown_message_refused(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    ingest = Ingest(tansu_settings, tmp_path / "data")
    ingest.start()
    try:
        series = [
            ({"__name__": "node_load1", "instance": "h:9100"}, 1.0),
            ({"__name__": "go_goroutines", "instance": "h:9100"}, 9.0),  # not mapped
        ]
        now = int(time.time() * 1000)
        v1 = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
        v2 = {
            **v1,
            "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            "X-Prometheus-Remote-Write-Version": "2.0.0",
        }
        body = write_request_v2(series, now, histograms=1, exemplars=2)
        request = urllib.request.Request(f"{ingest.url}/api/v1/write", data=body, headers=v2)
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 204
            # What a 2.0 sender reads to know a 2.0 receiver took the request: all of it,
            # the unmapped series, histograms and exemplars dropped by design.
            assert answer.headers["X-Prometheus-Remote-Write-Samples-Written"] == "2"
            assert answer.headers["X-Prometheus-Remote-Write-Histograms-Written"] == "2"
            assert answer.headers["X-Prometheus-Remote-Write-Exemplars-Written"] == "4"
        unknown = {**v1, "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v3.X"}
        request = urllib.request.Request(
            f"{ingest.url}/api/v1/write", data=write_request_v2(series, now), headers=unknown
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 415
        assert "io.prometheus.write.v2.Request" in refused.value.read().decode()
        # 1.0 naming its message, as the 2.0 specification allows, is read as before.
        named = {**v1, "Content-Type": 'application/x-protobuf; proto="prometheus.WriteRequest"'}
        assert post(f"{ingest.url}/api/v1/write", write_request(series, now + 1), named) == 204
        assert ingest.metric('sysmetrics_ingest_rejected_total{reason="unsupported_message"}') == 1
        assert ingest.metric("sysmetrics_ingest_rejected_total") == 1
        assert ingest.metric('sysmetrics_ingest_remote_write_requests_total{version="2"}') == 1
        assert ingest.metric('sysmetrics_ingest_remote_write_requests_total{version="1"}') == 1
        assert ingest.metric("sysmetrics_ingest_samples_total") == 2
        assert ingest.metric("sysmetrics_ingest_dropped_series_total") == 2
        assert ingest.metric("sysmetrics_ingest_dropped_histograms_total") == 2
        assert ingest.metric("sysmetrics_ingest_dropped_exemplars_total") == 4
    finally:
        ingest.stop()


@pytest.mark.timeout(1800)  # on a fresh machine it first builds Prometheus (~7 min when idle)
def test_prometheus_3_sending_remote_write_2_reaches_the_lake_as_its_scrapes(
    tansu_settings: Settings, prometheus_3: Path, tmp_path: Path
) -> None:
    settings = tansu_settings
    ingest = Ingest(settings, settings.data_dir)
    ingest.start()
    node = NodeExporter()
    proxy = RecordingProxy(node.url)
    prometheus = Prometheus.scraping(
        tmp_path / "prometheus",
        proxy.address,
        ingest.url,
        interval_s=2,
        binary=prometheus_3,
        protobuf_message="io.prometheus.write.v2.Request",
    )
    try:
        wait_for(
            lambda: (
                ingest.metric('sysmetrics_ingest_remote_write_requests_total{version="2"}') >= 8
            ),
            90,
            "Prometheus 3 to remote-write",
        )
        failed = prometheus.metric("prometheus_remote_storage_samples_failed_total")
        sent = prometheus.metric("prometheus_remote_storage_samples_total")
    finally:
        prometheus.stop()
        proxy.close()
        node.close()
    assert sent > 0 and failed == 0, "Prometheus 3 counts every sample it sent as written"
    wait_for(lambda: ingest.metric("sysmetrics_ingest_pending_samples") == 0, 30, "assembly")
    assert ingest.metric('sysmetrics_ingest_remote_write_requests_total{version="1"}') == 0
    assert ingest.metric("sysmetrics_ingest_dropped_series_total") == 0, "relabel keeps only ours"
    ingest.stop()
    assert_events_are_the_scrapes(drain_to_lake(settings), proxy)


@pytest.mark.timeout(1800)  # on a fresh machine it first builds Prometheus (~7 min when idle)
def test_prometheus_3_reads_what_is_dropped_by_design_as_written(
    tansu_settings: Settings, prometheus_3: Path, tmp_path: Path
) -> None:
    """Without the README's relabelling Prometheus 3 sends all it scrapes, native histograms
    included. What sysmetrics does not map is dropped by design and must read to the sender as
    written: a short count is a failure in Prometheus' metrics and an error in its log."""
    ingest = Ingest(tansu_settings, tansu_settings.data_dir)
    ingest.start()
    port = free_port()
    prometheus = Prometheus(
        tmp_path / "prometheus",
        f"""global: {{scrape_interval: 1s, scrape_timeout: 1s, scrape_native_histograms: true}}
scrape_configs:
  - job_name: prometheus
    static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
remote_write:
  - url: {ingest.url}/api/v1/write
    protobuf_message: io.prometheus.write.v2.Request
    send_native_histograms: true
    queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 2s}}
""",
        binary=prometheus_3,
        port=port,
    )
    try:
        wait_for(
            lambda: prometheus.metric("prometheus_remote_storage_histograms_total") >= 20,
            90,
            "Prometheus 3 to remote-write native histograms",
        )
        sent = prometheus.metric("prometheus_remote_storage_samples_total")
        failed = {
            kind: prometheus.metric(f"prometheus_remote_storage_{kind}_failed_total")
            for kind in ("samples", "histograms", "exemplars")
        }
    finally:
        prometheus.stop()
    try:
        assert sent > 0
        assert failed == {"samples": 0, "histograms": 0, "exemplars": 0}
        assert ingest.metric("sysmetrics_ingest_dropped_series_total") > 0
        assert ingest.metric("sysmetrics_ingest_dropped_histograms_total") > 0
        # No reading of a host among them (only `up`, followed for retirements).
        assert ingest.metric("sysmetrics_ingest_events_total") == 0
        assert ingest.metric("sysmetrics_ingest_pending_samples") == 0
        assert ingest.metric("sysmetrics_ingest_rejected_total") == 0
    finally:
        ingest.stop()


def collector_config(receiver_yaml: str, receiver: str, url: str, processors: str = "[]") -> str:
    """A Collector's configuration: ``receiver_yaml`` (the receiver's block under `receivers:`,
    and any top-level sections after it) exporting to the receiver at ``url`` over `otlphttp`
    as the sender `otelcol-eu-1`."""
    return f"""receivers:
  {receiver_yaml}
exporters:
  otlphttp:
    endpoint: {url}
    headers: {{X-Sysmetrics-Sender: otelcol-eu-1}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [{receiver}], processors: {processors}, exporters: [otlphttp]}}
"""


def scraping_collector_config(targets: str, url: str) -> str:
    """A Collector whose `prometheus` receiver scrapes node_exporter every 2 s (the job `node`,
    its targets as ``targets``, a scrape config's discovery line) for the receiver at ``url``."""
    return collector_config(
        f"""prometheus:
    config:
      scrape_configs:
        - job_name: node
          scrape_interval: 2s
          {targets}""",
        "prometheus",
        url,
    )


def test_otel_collector_hostmetrics_over_otlp_reaches_the_lake(
    broker_settings: Settings, tmp_path: Path
) -> None:
    binary = otelcol_binary()
    if binary is None:
        pytest.skip("Go missing: the OTel Collector cannot be built")
    settings = broker_settings
    ingest = Ingest(settings, settings.data_dir)
    ingest.start()
    config = tmp_path / "otelcol.yaml"
    config.write_text(
        collector_config(
            """hostmetrics:
    collection_interval: 2s
    scrapers:
      cpu: {}
      load: {}
      memory: {metrics: {system.memory.limit: {enabled: true}}}
      paging: {}
      filesystem: {}
      disk: {}
      network: {}
processors:
  resource:
    attributes: [{key: host.name, value: otel-test-host, action: upsert}]""",
            "hostmetrics",
            ingest.url,
            processors="[resource]",
        )
    )
    collector = OtelCollector(binary, config)
    try:
        try:
            wait_for(lambda: ingest.metric("sysmetrics_ingest_events_total") >= 6, 90, "6 events")
        finally:
            collector_log = collector.stop()
        wait_for(lambda: ingest.metric("sysmetrics_ingest_pending_samples") == 0, 30, "assembly")
    finally:
        ingest.stop()
    events = sorted(drain_to_lake(settings), key=lambda e: e["ts"])
    assert len(events) >= 6, collector_log[-3000:]
    assert {e["source"] for e in events} == {"otel"}
    assert {e["sender"] for e in events} == {"otelcol-eu-1"}, "as its headers name it"
    assert {e["host"]["host_id"] for e in events} == {"otel-test-host"}
    assert len({e["ts"] for e in events}) == len(events)
    mem_total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    root = os.statvfs("/")
    for event in events:
        assert event["memory"]["total_bytes"] == mem_total  # system.memory.limit: MemTotal
        assert event["network"]["bytes_recv"] >= 0
        assert any(d["total_bytes"] == root.f_blocks * root.f_frsize for d in event["disks"]), (
            "the root filesystem's size, exactly as statvfs says"
        )
    with_cpu = [e for e in events if e["cpu"]["logical_cores"] is not None]
    assert len(with_cpu) >= len(events) - 1
    assert all(e["cpu"]["logical_cores"] == os.cpu_count() for e in with_cpu)
    stat = Path("/proc/stat").read_text().splitlines()
    btime = next(int(line.split()[1]) for line in stat if line.startswith("btime"))
    # The CPU counters' start time: /proc/stat's btime, or in a Docker or LXC guest (where
    # gopsutil reads /proc/uptime) the same to the second.
    (boot,) = {datetime.fromisoformat(e["host"]["boot_time"]) for e in with_cpu}
    assert abs(boot - datetime.fromtimestamp(btime, UTC)).total_seconds() <= 1
    assert with_cpu[0]["cpu"]["utilization_pct"] is None
    assert all(0 <= e["cpu"]["utilization_pct"] <= 100 for e in with_cpu[1:])
    lo = [
        [i["bytes_recv"] for i in e["network"]["interfaces"] if i["name"] == "lo"] for e in events
    ]
    assert all(a <= b for a, b in itertools.pairwise(lo)), "counters pass through"
    for event in events:  # the Collector reports `lo`, the totals leave it out
        outside = [i for i in event["network"]["interfaces"] if i["name"] != "lo"]
        assert event["network"]["bytes_sent"] == sum(i["bytes_sent"] for i in outside)


def test_otel_collector_scraping_node_exporter_over_otlp_reaches_the_lake_as_its_scrapes(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """A Collector whose `prometheus` receiver scrapes node_exporter and exports OTLP sends the
    exporter's series under their Prometheus names: every scrape is one event holding what
    node_exporter answered, as when Prometheus remote-writes it. Before, each point was dropped
    (counted) and the request answered 200: nothing of such a fleet reached the lake."""
    binary = otelcol_binary()
    if binary is None:
        pytest.skip("Go missing: the OTel Collector cannot be built")
    settings = tansu_settings
    ingest = Ingest(settings, settings.data_dir)
    ingest.start()
    node = NodeExporter()
    proxy = RecordingProxy(node.url)
    config = tmp_path / "otelcol.yaml"
    config.write_text(
        scraping_collector_config(f"static_configs: [{{targets: ['{proxy.address}']}}]", ingest.url)
    )
    collector = OtelCollector(binary, config)
    try:
        try:
            wait_for(lambda: ingest.metric("sysmetrics_ingest_events_total") >= 7, 90, "7 events")
        finally:
            collector_log = collector.stop()
            proxy.close()
            node.close()
        wait_for(lambda: ingest.metric("sysmetrics_ingest_pending_samples") == 0, 30, "assembly")
        assert ingest.metric("sysmetrics_ingest_dropped_series_total") > 0, "node_exporter's rest"
    finally:
        ingest.stop()
    events = drain_to_lake(settings)
    assert len(events) >= 7, collector_log[-3000:]
    assert_events_are_the_scrapes(events, proxy, sender="otelcol-eu-1")


def test_a_target_a_collector_stops_scraping_retires_its_host(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """A Collector's `prometheus` receiver scrapes two hosts found by file-based discovery;
    web-2 is taken out of the file (a scale-down). Its target's `up` gets the stale marker,
    which reaches the receiver over OTLP as a point flagged NO_RECORDED_VALUE, and the host is
    retired through the topic (listed in a round manifest), as under Prometheus, not left to
    page HostDown; web-1 goes on."""
    binary = otelcol_binary()
    if binary is None:
        pytest.skip("Go missing: the OTel Collector cannot be built")
    settings = tansu_settings
    ingest = Ingest(settings, settings.data_dir)
    ingest.start()
    node = NodeExporter()
    targets = tmp_path / "targets.yaml"

    def discover(*hosts: str) -> None:
        found = "".join(
            f"- {{targets: ['127.0.0.1:{node.port}'], labels: {{instance: {host}}}}}\n"
            for host in hosts
        )
        targets.with_suffix(".tmp").write_text(found)
        os.replace(targets.with_suffix(".tmp"), targets)  # discovery never reads half a file

    discover("web-1", "web-2")
    config = tmp_path / "otelcol.yaml"
    config.write_text(
        scraping_collector_config(
            f"file_sd_configs: [{{files: ['{targets}'], refresh_interval: 1s}}]", ingest.url
        )
    )
    collector = OtelCollector(binary, config)
    try:
        try:
            wait_for(lambda: ingest.metric("sysmetrics_ingest_events_total") >= 6, 90, "events")
            discover("web-1")
            wait_for(
                lambda: ingest.metric("sysmetrics_ingest_hosts_retired_total") == 1,
                60,
                "web-2's retirement",
            )
            events_after = ingest.metric("sysmetrics_ingest_events_total")
            wait_for(
                lambda: ingest.metric("sysmetrics_ingest_events_total") >= events_after + 2,
                30,
                "web-1's next samples",
            )
        finally:
            collector_log = collector.stop()
            node.close()
        wait_for(lambda: ingest.metric("sysmetrics_ingest_pending_samples") == 0, 30, "assembly")
        retired = ingest.metric("sysmetrics_ingest_hosts_retired_total")
    finally:
        ingest.stop()
    assert retired == 1, collector_log[-3000:]
    events = drain_to_lake(settings)
    assert {e["host"]["host_id"] for e in events} == {"web-1", "web-2"}
    assert {e["source"] for e in events} == {"node_exporter"}
    listed = listed_retirements(Path(settings.lake_url), settings.topic)
    assert listed == ["web-2"], "in a round manifest: the hourly job calls it gone, not silent"
    assert max(_sample_times(events, "web-1")) > max(_sample_times(events, "web-2"))


def test_each_compression_and_json_from_the_otel_collector_are_read(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """One Collector, five pipelines of its `hostmetrics`, each to the receiver with another
    `compression` (zstd, snappy, deflate, lz4) or `encoding: json` (gzipped, the default),
    each its own host: every one's events arrive, none refused. Before, all compressions but
    snappy were refused (415) and the Collector dropped their data; JSON was never tested.
    (This Collector sends snappy's block format; older ones the framed format, which
    `tests/unit/test_ingest_wire.py` covers.)"""
    binary = otelcol_binary()
    if binary is None:
        pytest.skip("Go missing: the OTel Collector cannot be built")
    ingest = Ingest(tansu_settings, tansu_settings.data_dir)
    ingest.start()
    settings = {
        "zstd": "compression: zstd",
        "snappy": "compression: snappy",
        "deflate": "compression: deflate",
        "lz4": "compression: lz4",
        "json": "encoding: json",
    }
    kinds = tuple(settings)
    config = tmp_path / "otelcol.yaml"
    config.write_text(
        hostmetrics_to_each(
            {
                f"otlphttp/{kind}": f"endpoint: {ingest.url}\n{setting}\n"
                f"headers: {{X-Sysmetrics-Sender: otelcol-{kind}}}"
                for kind, setting in settings.items()
            }
        )
    )
    collector = OtelCollector(binary, config)
    try:
        try:
            wait_for(lambda: ingest.metric("sysmetrics_ingest_events_total") >= 15, 90, "15 events")
        finally:
            collector_log = collector.stop()
        rejected = ingest.metric("sysmetrics_ingest_rejected_total")
        wait_for(lambda: ingest.metric("sysmetrics_ingest_pending_samples") == 0, 30, "assembly")
    finally:
        ingest.stop()
    assert rejected == 0
    events = drain_to_lake(tansu_settings)
    mem_total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    for kind in kinds:
        mine = [e for e in events if e["host"]["host_id"] == f"{kind}-host"]
        assert len(mine) >= 2, (kind, collector_log[-3000:])
        assert {e["sender"] for e in mine} == {f"otelcol-{kind}"}
        assert all(e["memory"]["total_bytes"] == mem_total for e in mine), kind


def _alerting(settings: Settings) -> Settings:
    """``settings`` with an alert state topic and consumer group of the test's own."""
    return settings.model_copy(
        update={
            "alert_state_topic": f"{settings.topic}-alert-state",
            "alert_consumer_group": f"{settings.consumer_group}-alerts",
        }
    )


def _ingest_for_alerts(settings: Settings) -> tuple[Ingest, Settings]:
    """A started receiver (1-s assembly wait, the tests' token) and the alerting settings."""
    ingest = Ingest(settings, settings.data_dir, wait_s=1.0, SYSMETRICS_INGEST_TOKEN="s3cret")
    ingest.start()
    return ingest, _alerting(settings)


@pytest.mark.skipif(ALERTMANAGER is None, reason=MISSING)
def test_ingested_host_pinned_at_high_cpu_pages_through_the_alert_evaluator(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """No alert code knows about ingest: node_exporter CPU counters of a host busy 97 % of
    each 10 s for 7 minutes become events whose cpu_pct pages HighCpu through Alertmanager."""
    ingest = Ingest(tansu_settings, tansu_settings.data_dir)
    ingest.start()
    start_ms = (int(time.time()) - 600) * 1000
    rw = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
    try:
        for i in range(43):
            series = [
                ({"__name__": "node_cpu_seconds_total", "cpu": "0", "mode": "user"}, 9.7 * i),
                ({"__name__": "node_cpu_seconds_total", "cpu": "0", "mode": "idle"}, 0.3 * i),
                ({"__name__": "node_memory_MemTotal_bytes"}, 8e9),
                ({"__name__": "node_memory_MemAvailable_bytes"}, 6e9),
            ]
            body = write_request(series, start_ms + 10_000 * i, {"instance": "hot-1:9100"})
            assert post(f"{ingest.url}/api/v1/write", body, rw) == 204
        wait_for(lambda: ingest.metric("sysmetrics_ingest_events_total") >= 43, 60, "43 events")
    finally:
        ingest.stop()
    settings = _alerting(tansu_settings)
    with alertmanager(tmp_path) as (url, receiver):
        service = AlertService(settings.model_copy(update={"alertmanager_url": url}))
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: "firing" in receiver.statuses("HighCpu"), 60, "the HighCpu page")
        finally:
            service.stop.set()
            thread.join(30)
    alert = next(
        a
        for n in receiver.notifications
        for a in n["alerts"]
        if a["labels"]["alertname"] == "HighCpu"
    )
    assert alert["labels"]["host_id"] == "hot-1:9100"
    assert "CPU at 97 % on hot-1" in alert["annotations"]["summary"]
    assert service.stats.events == 43 and service.stats.skipped == 0


@pytest.mark.skipif(ALERTMANAGER is None, reason=MISSING)
def test_a_central_prometheus_that_goes_down_pages_its_hosts_as_one_group(
    broker_settings: Settings, tmp_path: Path
) -> None:
    """A Prometheus that remote-writes three hosts names itself by its basic_auth user name
    (the README's block). When it stops, its hosts fall silent together: each HostDown carries
    `sender="prom-eu-1"`, and an Alertmanager that groups by [alertname, sender] (the README's
    route) pages once for the three, not three times."""
    ingest, settings = _ingest_for_alerts(broker_settings)
    hosts = ["web-1", "web-2", "web-3"]
    node = NodeExporter()
    with alertmanager(tmp_path, group_by="[alertname, sender]", group_wait_s=5) as (url, receiver):
        service = AlertService(settings.model_copy(update={"alertmanager_url": url}))
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        targets = "".join(  # one node_exporter scraped as three hosts
            f"\n      - {{targets: [127.0.0.1:{node.port}], labels: {{instance: {h}}}}}"
            for h in hosts
        )
        prometheus = Prometheus(
            tmp_path / "prometheus",
            f"""global: {{scrape_interval: 2s, scrape_timeout: 2s}}
scrape_configs:
  - job_name: node
    static_configs:{targets}
{remote_write_block(ingest.url, basic_auth=("prom-eu-1", "s3cret"))}""",
        )
        try:

            def heard_at_their_interval() -> bool:
                seen = dict(service.evaluator.seen)
                return set(hosts) <= set(seen) and all(seen[h].interval_s <= 2.5 for h in hosts)

            wait_for(heard_at_their_interval, 90, "the evaluator to hear the three hosts")
            assert {service.evaluator.seen[h].sender for h in hosts} == {"prom-eu-1"}
            sender = '{sender="prom-eu-1"}'
            assert ingest.metric(f"sysmetrics_ingest_sender_hosts{sender}") == 3
            heard = f"sysmetrics_ingest_sender_last_request_timestamp_seconds{sender}"
            assert time.time() - ingest.metric(heard) < 10
            prometheus.stop()
            wait_for(lambda: receiver.statuses("HostDown").count("firing") >= 3, 90, "the pages")
            time.sleep(3)  # what else Alertmanager would send
            firing_now = TestClient(create_app(settings)).get("/alerts").text
        finally:
            with contextlib.suppress(Exception):
                prometheus.stop()
            service.stop.set()
            thread.join(30)
            node.close()
            ingest.stop()
    pages = [n for n in receiver.notifications if n["groupLabels"].get("alertname") == "HostDown"]
    assert len(pages) == 1, [n["alerts"] for n in pages]
    (page,) = pages
    assert page["groupLabels"] == {"alertname": "HostDown", "sender": "prom-eu-1"}
    assert sorted(a["labels"]["host_id"] for a in page["alerts"]) == hosts
    assert {a["status"] for a in page["alerts"]} == {"firing"}
    assert firing_now.count("via prom-eu-1") == 3, "the dashboard's Firing now names the sender"


def _replica(work: Path, node: NodeExporter, hosts: list[str], url: str, name: str) -> Prometheus:
    """One Prometheus of an HA pair: scrapes one node_exporter as ``hosts`` every 3 s and
    remote-writes as ``name`` (its basic_auth user)."""
    targets = "".join(
        f"\n      - {{targets: [127.0.0.1:{node.port}], labels: {{instance: {h}}}}}" for h in hosts
    )
    return Prometheus(
        work / name,
        f"""global: {{scrape_interval: 3s, external_labels: {{replica: {name}}}}}
scrape_configs:
  - job_name: node
    static_configs:{targets}
{remote_write_block(url, basic_auth=(name, "s3cret"))}""",
    )


def test_a_prometheus_ha_pair_makes_one_event_per_scrape_interval_and_fails_over(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """Two Prometheus replicas scrape the same three hosts at their own moments and both
    remote-write them: each host's events come from one replica, one per 3-s interval (not two,
    seconds apart); when that replica stops, the other takes its hosts over within two
    intervals, and keeps them."""
    settings = tansu_settings
    ingest = Ingest(settings, settings.data_dir, wait_s=1.0, SYSMETRICS_INGEST_TOKEN="s3cret")
    ingest.start()
    hosts = ["web-1", "web-2", "web-3"]
    node = NodeExporter()
    pair = [_replica(tmp_path, node, hosts, ingest.url, "prom-a")]
    try:
        wait_for(
            lambda: ingest.metric("sysmetrics_ingest_events_total") >= 3,
            60,
            "prom-a to send the three hosts (it leads them)",
        )
        pair.append(_replica(tmp_path, node, hosts, ingest.url, "prom-b"))
        time.sleep(15)
        replica_series = ingest.metric("sysmetrics_ingest_replica_series_total")
        for replica in pair:
            replica.stop()  # the leader stops; the other goes on alone
            time.sleep(15)
    finally:
        for replica in pair:
            with contextlib.suppress(Exception):
                replica.stop()
        node.close()
    time.sleep(3)  # the assembly wait
    ingest.stop()
    assert replica_series > 0, "both replicas sent every host"
    events = drain_to_lake(settings)
    assert {e["host"]["host_id"] for e in events} == set(hosts)
    for host in hosts:
        mine = sorted(
            (datetime.fromisoformat(e["ts"]).timestamp(), e["sender"])
            for e in events
            if e["host"]["host_id"] == host
        )
        assert len(mine) >= 8, mine
        senders = [sender for _, sender in mine]
        switches = [i for i in range(1, len(senders)) if senders[i] != senders[i - 1]]
        assert len(switches) == 1 and senders[0] == "prom-a" and senders[-1] == "prom-b", senders
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(mine)]
        # One a scrape; at the takeover at most 2.25 (1.25 after the leader's last, then the
        # other's next scrape): under HostDown's 3.
        assert all(2.9 <= gap <= 7.0 for gap in gaps), gaps
        assert sum(gap > 3.5 for gap in gaps) <= 1


def _scraping(hosts: dict[str, NodeExporter], url: str, interval_s: int = 5) -> str:
    """A Prometheus configuration scraping each host (its node_exporter) every ``interval_s``
    and remote-writing as ``prom-eu-1``."""
    targets = "".join(
        f"\n      - {{targets: [127.0.0.1:{node.port}], labels: {{instance: {host}}}}}"
        for host, node in hosts.items()
    )
    return f"""global: {{scrape_interval: {interval_s}s, scrape_timeout: 4s}}
scrape_configs:
  - job_name: node
    static_configs:{targets}
{remote_write_block(url, basic_auth=("prom-eu-1", "s3cret"))}"""


@pytest.mark.skipif(ALERTMANAGER is None, reason=MISSING)
def test_a_target_prometheus_stops_scraping_retires_its_host_and_a_dead_one_still_pages(
    broker_settings: Settings, tmp_path: Path
) -> None:
    """Prometheus scrapes three hosts; at once web-3's node_exporter dies and web-2 is taken
    out of Prometheus' configuration (a reload, as service discovery does when a machine is
    scaled down). web-3 pages HostDown; web-2 is retired through the topic (Prometheus' stale
    marker on its ``up``): it pages nothing, its known-host state is deleted, and the lake has
    each of its samples and nothing quarantined (the retirement is no event)."""
    ingest, settings = _ingest_for_alerts(broker_settings)
    shared, dying = NodeExporter(), NodeExporter()
    hosts = {"web-1": shared, "web-2": shared, "web-3": dying}
    with alertmanager(tmp_path) as (url, receiver):
        service = AlertService(settings.model_copy(update={"alertmanager_url": url}))
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        prometheus = Prometheus(tmp_path / "prometheus", _scraping(hosts, ingest.url))
        try:

            def heard_at_their_interval() -> bool:
                seen = dict(service.evaluator.seen)
                return set(hosts) <= set(seen) and all(seen[h].interval_s <= 6 for h in hosts)

            wait_for(heard_at_their_interval, 90, "the evaluator to hear the three hosts")
            dying.close()
            del hosts["web-2"]
            (tmp_path / "prometheus" / "prometheus.yml").write_text(_scraping(hosts, ingest.url))
            prometheus.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "web-2" not in service.evaluator.seen, 60, "web-2 to be retired")
            wait_for(lambda: "firing" in receiver.statuses("HostDown"), 60, "web-3's page")
            time.sleep(12)  # web-2 would be paged by now: 3 of its 5-s intervals have passed
            retired = ingest.metric("sysmetrics_ingest_hosts_retired_total")
        finally:
            with contextlib.suppress(Exception):
                prometheus.stop()
            service.stop.set()
            thread.join(30)
            shared.close()
            ingest.stop()
    host_down = [
        (a["labels"]["host_id"], a["status"])
        for n in receiver.notifications
        for a in n["alerts"]
        if a["labels"]["alertname"] == "HostDown"
    ]
    assert host_down == [("web-3", "firing")]
    assert retired == 1
    state = read_state_records(settings, 30)
    assert state[KnownHost.key_of("web-2")] is None, "deleted"
    assert state[KnownHost.key_of("web-1")] is not None
    events = drain_to_lake(settings)
    assert {e["host"]["host_id"] for e in events} == {"web-1", "web-2", "web-3"}
    assert not list(Path(settings.lake_url).glob("quarantine/**/*")), "nothing quarantined"
    listed = listed_retirements(Path(settings.lake_url), settings.topic)
    assert listed == ["web-2"], "in a round manifest: the hourly job calls it gone, not silent"
    web_2 = _sample_times(events, "web-2")
    assert len(web_2) >= 2 and all(4.5 <= b - a <= 5.5 for a, b in itertools.pairwise(web_2))


def test_a_target_dropped_while_the_receiver_is_down_still_retires_its_host(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """The receiver is killed (``kill -9``); while it is down Prometheus drops web-2's target
    (a reload) and writes the stale marker into its queue. The restarted receiver gets the
    marker when Prometheus resends and retires web-2: it knows the targets from its journal.
    Before, it knew only the targets heard since it started, ignored the marker, and web-2
    paged HostDown 3 intervals later."""
    ingest = Ingest(
        tansu_settings, tansu_settings.data_dir, wait_s=1.0, SYSMETRICS_INGEST_TOKEN="s3cret"
    )
    ingest.start()
    node = NodeExporter()
    hosts = {"web-1": node, "web-2": node}
    prometheus = Prometheus(tmp_path / "prometheus", _scraping(hosts, ingest.url))
    try:
        wait_for(
            lambda: ingest.metric("sysmetrics_ingest_events_total") >= 4,
            90,
            "two scrapes of both hosts through the receiver",
        )
        ingest.kill()
        del hosts["web-2"]
        (tmp_path / "prometheus" / "prometheus.yml").write_text(_scraping(hosts, ingest.url))
        prometheus.process.send_signal(signal.SIGHUP)
        time.sleep(14)  # the marker is written ~2.1 of the 5-s intervals after the last scrape
        ingest.start()
        wait_for(
            lambda: ingest.metric("sysmetrics_ingest_hosts_retired_total") == 1,
            60,
            "web-2 to be retired by the marker Prometheus sends again",
        )
    finally:
        with contextlib.suppress(Exception):
            prometheus.stop()
        node.close()
        ingest.stop()
    events = drain_to_lake(tansu_settings)
    assert listed_retirements(Path(tansu_settings.lake_url), tansu_settings.topic) == ["web-2"]
    # A sample Kafka took just before the kill may be in the raw lake twice (the spool's
    # acknowledgement window, README): as the same event, which the warehouse keeps once.
    by_sample = {(e["host"]["host_id"], e["ts"]): e["event_id"] for e in events}
    assert len(by_sample) == len({e["event_id"] for e in events}), "one event per sample"
    assert {host for host, _ in by_sample} == {"web-1", "web-2"}


def test_a_host_whose_exporter_moves_to_a_new_address_is_not_retired(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """Prometheus scrapes two hosts every 20 s; a reload moves web-1 to another exporter (the
    same labels: a machine re-addressed) and drops web-2. Prometheus writes the old targets'
    stale markers ~2.1 intervals after their last scrape, and may start the new target's
    scrapes only after that (its discovery, then the target's offset in the interval): web-1
    is not retired and its samples go on; web-2 is retired. Before 2026-12-05 a retirement was
    emitted at once: the same move at a 5-s interval retired web-1 (its alerts resolved, then
    known anew with its next sample) in 2 of 3 runs. At 5 s no wait fits before HostDown's 3
    intervals; at 20 s the new target's first scrape comes within it."""
    ingest = Ingest(
        tansu_settings, tansu_settings.data_dir, wait_s=1.0, SYSMETRICS_INGEST_TOKEN="s3cret"
    )
    ingest.start()
    old_address, new_address, dropped = NodeExporter(), NodeExporter(), NodeExporter()
    config = tmp_path / "prometheus" / "prometheus.yml"
    hosts = {"web-1": old_address, "web-2": dropped}
    prometheus = Prometheus(tmp_path / "prometheus", _scraping(hosts, ingest.url, interval_s=20))
    try:
        wait_for(
            lambda: ingest.metric("sysmetrics_ingest_events_total") >= 4,
            120,
            "two scrapes of both hosts through the receiver",
        )
        config.write_text(_scraping({"web-1": new_address}, ingest.url, interval_s=20))
        prometheus.process.send_signal(signal.SIGHUP)
        moved_at = time.time()
        wait_for(
            lambda: ingest.metric("sysmetrics_ingest_hosts_retired_total") >= 1,
            120,
            "web-2 to be retired",
        )
        # A retirement of web-1 would be due by now: 3 intervals after its last sample at the
        # old address, less 5 s.
        time.sleep(max(0.0, moved_at + 70 - time.time()))
        retired = ingest.metric("sysmetrics_ingest_hosts_retired_total")
    finally:
        with contextlib.suppress(Exception):
            prometheus.stop()
        for node in (old_address, new_address, dropped):
            node.close()
        ingest.stop()
    assert retired == 1
    events = drain_to_lake(tansu_settings)
    assert listed_retirements(Path(tansu_settings.lake_url), tansu_settings.topic) == ["web-2"]
    web_1 = _sample_times(events, "web-1")
    assert web_1[-1] > moved_at + 30, "scraped at its new address"
    # The move's gap: the old target's last scrape to the new one's first, under HostDown's 3;
    # however short, it is not taken for web-1's interval (half of its 20 s at least).
    assert all(0 < b - a < 60 for a, b in itertools.pairwise(web_1)), web_1
    learnt = [e["interval_s"] for e in events if e["host"]["host_id"] == "web-1"]
    assert min(i for i in learnt if i is not None) >= 10, learnt


def test_a_sample_too_large_for_kafka_is_set_aside_and_the_stream_goes_on(
    tansu_settings: Settings,
) -> None:
    """A sender that gives one host's sample thousands of filesystems (here 6,000 long
    persistent-volume mounts in two requests) makes an event over Kafka's message size limit
    (librdkafka's 1,000,000 bytes): it is kept in the spool's ``rejected/``, counted on
    /metrics, and the events after it, of that host and another, reach the lake. Before,
    producing it raised: the receiver's emission stopped for good while its requests were
    still answered 2xx."""
    ingest = Ingest(tansu_settings, tansu_settings.data_dir, wait_s=0.5)
    ingest.start()
    rw = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
    now_ms = int(time.time() * 1000) // 1000 * 1000 - 60_000

    def filesystems(first: int, count: int) -> list[tuple[dict[str, str], float]]:
        return [
            (
                {
                    "__name__": "node_filesystem_size_bytes",
                    "instance": "big-1:9100",
                    "mountpoint": f"/var/lib/kubelet/pods/{n:06d}/volumes/{'x' * 120}",
                    "device": f"/dev/rbd{n}",
                    "fstype": "ext4",
                },
                1e9,
            )
            for n in range(first, first + count)
        ]

    def load(host: str, ts_ms: int) -> bytes:
        return write_request([({"__name__": "node_load1", "instance": host}, 1.0)], ts_ms)

    try:
        assert post(f"{ingest.url}/api/v1/write", load("web-1:9100", now_ms), rw) == 204
        for first in (0, 3_000):
            assert (
                post(
                    f"{ingest.url}/api/v1/write",
                    write_request(filesystems(first, 3_000), now_ms),
                    rw,
                )
                == 204
            )
        for host in ("big-1:9100", "web-1:9100"):
            assert post(f"{ingest.url}/api/v1/write", load(host, now_ms + 10_000), rw) == 204
        wait_for(
            lambda: (
                ingest.metric("sysmetrics_ingest_producer_set_aside_total") == 1
                and ingest.metric("sysmetrics_ingest_producer_delivered_total") >= 3
            ),
            60,
            "the large event set aside, the events after it delivered",
        )
    finally:
        log = ingest.stop()
    assert "over Kafka's message size limit" in log, log
    [rejected] = (tansu_settings.data_dir / "ingest" / "spool" / "rejected").iterdir()
    key, _, value = rejected.read_bytes().partition(b"\n")
    assert key == b"big-1:9100" and len(value) > 1_000_000
    assert len(json.loads(value)["disks"]) == 6_000, "kept whole"
    events = drain_to_lake(tansu_settings)
    assert sorted(
        (e["host"]["host_id"], round(datetime.fromisoformat(e["ts"]).timestamp() * 1000))
        for e in events
    ) == [("big-1:9100", now_ms + 10_000), ("web-1:9100", now_ms), ("web-1:9100", now_ms + 10_000)]


def test_sysmetrics_status_shows_a_running_receiver(tansu_settings: Settings) -> None:
    """`sysmetrics status` lists a running receiver from its status file (no HTTP, no token):
    requests taken and refused, events, samples assembling, the spool; nothing once it has
    stopped. Before, status did not mention ingest at all."""
    ingest = Ingest(tansu_settings, tansu_settings.data_dir, wait_s=0.5)
    ingest.start()
    rw = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
    now_ms = int(time.time() * 1000)

    try:
        for n in range(2):
            body = write_request(
                [({"__name__": "node_load1", "instance": "web-1:9100"}, 1.0)], now_ms + n * 10_000
            )
            assert post(f"{ingest.url}/api/v1/write", body, rw) == 204
        assert post(f"{ingest.url}/api/v1/write", b"\xff" * 64, rw) == 400
        wait_for(
            lambda: (
                "2 requests taken, 1 refused (4xx), 0 answered 5xx" in _status(tansu_settings)
                and "2 events, 0 hosts retired, 0 samples assembling" in _status(tansu_settings)
            ),
            30,
            "status to show the receiver's requests and events",
        )
    finally:
        ingest.stop()
    assert "ingest " not in _status(tansu_settings), "a stopped receiver's file is removed"


def test_a_receiver_started_while_kafka_is_down_takes_requests_at_once(tmp_path: Path) -> None:
    """Kafka not there at the start: the receiver listens and spools at once (it listened only
    once its topic check gave up, 17 s), says Kafka cannot be reached, and when Kafka comes
    the topic is created with its partitions and the spooled events reach it."""
    broker = TansuBroker(tmp_path / "broker")  # started later
    settings = load_settings(
        bootstrap_servers=broker.bootstrap,
        topic=f"machine_metrics_{os.getpid()}",
        data_dir=tmp_path / "data",
    )
    ingest = Ingest(settings, settings.data_dir, wait_s=0.5)
    log = settings.data_dir / "ingest.log"
    rw = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
    now_ms = int(time.time() * 1000)
    ingest.start()
    try:
        assert "cannot reach Kafka" not in log.read_text(), "it listened before the check ended"
        for n in range(2):
            body = write_request(
                [({"__name__": "node_load1", "instance": "web-1:9100"}, 1.0)], now_ms + n * 10_000
            )
            assert post(f"{ingest.url}/api/v1/write", body, rw) == 204
        wait_for(lambda: "cannot reach Kafka" in log.read_text(), 30, "the receiver's warning")
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        wait_for(lambda: settings.topic in admin.list_topics(timeout=5).topics, 60, "the topic")
        topic = admin.list_topics(settings.topic, timeout=5).topics[settings.topic]
        assert len(topic.partitions) == settings.topic_partitions
        events = [json.loads(m.value()) for m in read_topic(settings, 2)]
        stamps = sorted(round(datetime.fromisoformat(e["ts"]).timestamp() * 1000) for e in events)
        assert stamps == [now_ms, now_ms + 10_000]
    finally:
        ingest.stop()
        broker.stop()
