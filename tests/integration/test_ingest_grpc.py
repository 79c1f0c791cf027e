"""OTLP over gRPC into `sysmetrics ingest`: a real OTel Collector's `otlp` exporter (the one
most Collector configurations use) → Kafka → lake, and what a refused request is answered."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from sysmetrics.config import Settings
from sysmetrics.ingest.server import OTLP_GRPC_METHOD
from tests.conftest import settings_for
from tests.integration.test_ingest import drain_to_lake
from tests.support.agents import (
    Ingest,
    OtelCollector,
    hostmetrics_to_each,
    otelcol_binary,
    self_signed_certificate,
    spool_resent,
)
from tests.support.brokers import TestBroker
from tests.support.kafka_io import SYSMETRICS
from tests.support.lake import assert_each_sample_once
from tests.support.waiting import wait_for

TOKEN = "s3cret"
RECORDED_EXPORT = (
    Path(__file__).resolve().parents[1] / "fixtures" / "ingest" / ("otelcol_hostmetrics_export.pb")
)


def _export(
    port: int, body: bytes, token: str | None, ca_file: Path | None = None
) -> grpc.StatusCode:
    """One Export call with a Python gRPC client (over TLS checking the receiver's certificate
    against ``ca_file`` when given); the code it is answered with."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    target = f"127.0.0.1:{port}"
    with (
        grpc.insecure_channel(target)
        if ca_file is None
        else grpc.secure_channel(target, grpc.ssl_channel_credentials(ca_file.read_bytes()))
    ) as channel:
        try:
            channel.unary_unary(OTLP_GRPC_METHOD)(body, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_otel_collector_over_grpc_reaches_the_lake_and_refusals_get_grpc_codes(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """A real Collector exports over gRPC, gzipped (its default) and uncompressed, each its own
    host: every host's events reach the lake, named by its metadata. Beside it, a request
    without the token is UNAUTHENTICATED and one that is no OTLP is INVALID_ARGUMENT (both
    dropped by a sender, not retried), counted, nothing of them kept. Before, the receiver read
    OTLP over HTTP only: a Collector with the `otlp` exporter could not deliver."""
    binary = otelcol_binary()
    if binary is None:
        pytest.skip("Go missing: the OTel Collector cannot be built")
    ingest = Ingest(
        tansu_settings, tansu_settings.data_dir, grpc=True, SYSMETRICS_INGEST_TOKEN=TOKEN
    )
    ingest.start()
    grpc_port = ingest.grpc_port
    kinds = {"gzip": "compression: gzip  # its default", "none": "compression: none"}
    config = tmp_path / "otelcol.yaml"
    config.write_text(
        hostmetrics_to_each(
            {
                f"otlp/{kind}": f"endpoint: 127.0.0.1:{grpc_port}\ntls: {{insecure: true}}\n"
                f"{compression}\nheaders: {{authorization: Bearer {TOKEN}, "
                "x-sysmetrics-sender: otelcol-grpc}"
                for kind, compression in kinds.items()
            }
        )
    )
    collector = OtelCollector(binary, config)
    try:
        try:
            assert _export(grpc_port, b"", None) == grpc.StatusCode.UNAUTHENTICATED
            assert _export(grpc_port, b"\xff\xff\xff", TOKEN) == grpc.StatusCode.INVALID_ARGUMENT
            assert _export(grpc_port, ExportMetricsServiceRequest().SerializeToString(), TOKEN) == (
                grpc.StatusCode.OK
            ), "an empty export is taken (it makes no event)"
            wait_for(lambda: ingest.metric("sysmetrics_ingest_events_total") >= 6, 90, "6 events")
        finally:
            collector_log = collector.stop()
        rejected = ingest.metric("sysmetrics_ingest_rejected_total")
        answered = ingest.metric(
            f'sysmetrics_ingest_requests_total{{code="401",endpoint="{OTLP_GRPC_METHOD}"}}'
        )
        wait_for(lambda: ingest.metric("sysmetrics_ingest_pending_samples") == 0, 30, "assembly")
    finally:
        ingest.stop()
    assert (rejected, answered) == (1, 1), "the poison request and the unauthenticated one"
    events = drain_to_lake(tansu_settings)
    mem_total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    for kind in kinds:
        mine = [e for e in events if e["host"]["host_id"] == f"{kind}-host"]
        assert len(mine) >= 2, (kind, collector_log[-3000:])
        assert {(e["source"], e["sender"]) for e in mine} == {("otel", "otelcol-grpc")}
        assert all(e["memory"]["total_bytes"] == mem_total for e in mine), kind
    assert len(events) == len({e["event_id"] for e in events})


def test_a_grpc_port_in_use_is_refused_with_what_to_do(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """The gRPC port is taken: the receiver does not start half-way (HTTP up, gRPC senders
    refused), it exits non-zero naming the port and the setting."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ingest = Ingest(tansu_settings, tmp_path / "data", SYSMETRICS_INGEST_GRPC_PORT=str(port))
        result = subprocess.run(
            [SYSMETRICS, "ingest"], env=ingest.env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode != 0
    assert f"cannot listen for OTLP/gRPC on 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "SYSMETRICS_INGEST_GRPC_PORT" in result.stderr


def test_over_tls_grpc_is_served_only_encrypted(tansu_settings: Settings, tmp_path: Path) -> None:
    """With SYSMETRICS_INGEST_TLS_CERT/_KEY the gRPC port serves TLS, as the HTTP one does: a
    client that checks the certificate is taken (and still needs the token); a plaintext one
    gets no answer."""
    cert, key = self_signed_certificate(tmp_path)
    ingest = Ingest(
        tansu_settings,
        tansu_settings.data_dir,
        grpc=True,
        SYSMETRICS_INGEST_TOKEN=TOKEN,
        SYSMETRICS_INGEST_TLS_CERT=str(cert),
        SYSMETRICS_INGEST_TLS_KEY=str(key),
    )
    ingest.start()
    grpc_port, empty = ingest.grpc_port, ExportMetricsServiceRequest().SerializeToString()
    try:
        assert _export(grpc_port, empty, TOKEN, ca_file=cert) == grpc.StatusCode.OK
        assert _export(grpc_port, empty, None, ca_file=cert) == grpc.StatusCode.UNAUTHENTICATED
        assert _export(grpc_port, empty, TOKEN) == grpc.StatusCode.UNAVAILABLE
    finally:
        ingest.stop()


def test_a_full_disk_answers_unavailable_and_the_export_sent_again_is_kept_once(
    tansu_settings: Settings,
) -> None:
    """The receiver's files may not grow (a real RLIMIT_FSIZE on its process, as on a full
    disk): a recorded Collector export is answered UNAVAILABLE, which the Collector retries,
    and nothing of it is acknowledged; with room again the same export is taken, and its
    host's sample is in the lake once."""
    ingest = Ingest(tansu_settings, tansu_settings.data_dir, wait_s=1.0, grpc=True)
    grpc_port = ingest.grpc_port
    ingest.start()
    assert ingest.process is not None
    body = RECORDED_EXPORT.read_bytes()
    journal = tansu_settings.data_dir / "ingest" / "journal.jsonl"
    room = (journal.stat().st_size if journal.exists() else 0) + 100  # less than the record
    try:
        resource.prlimit(ingest.process.pid, resource.RLIMIT_FSIZE, (room, resource.RLIM_INFINITY))
        assert _export(grpc_port, body, None) == grpc.StatusCode.UNAVAILABLE
        resource.prlimit(
            ingest.process.pid,
            resource.RLIMIT_FSIZE,
            (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
        )
        assert _export(grpc_port, body, None) == grpc.StatusCode.OK
        wait_for(lambda: ingest.metric("sysmetrics_ingest_events_total") >= 1, 30, "the event")
        unavailable = ingest.metric(
            f'sysmetrics_ingest_requests_total{{code="503",endpoint="{OTLP_GRPC_METHOD}"}}'
        )
    finally:
        ingest.stop()
    assert unavailable == 1
    events = drain_to_lake(tansu_settings)
    # One host, one sample time (its scrapers' resources are one collection): one event.
    assert [e["host"]["host_id"] for e in events] == ["otel-fixture-host"], events


def _collection_times(exported: Path) -> list[float]:
    """The times (s) of the collections a Collector's `file` exporter wrote: each its points'
    earliest time, its scrapers stamping them milliseconds apart (2 s between collections)."""
    stamps = sorted(
        int(point["timeUnixNano"]) / 1e9
        for line in exported.read_text().splitlines()
        for resource_metrics in json.loads(line)["resourceMetrics"]
        for scope in resource_metrics["scopeMetrics"]
        for metric in scope["metrics"]
        for kind in ("gauge", "sum")
        for point in metric.get(kind, {}).get("dataPoints", [])
    )
    return [t for i, t in enumerate(stamps) if i == 0 or t - stamps[i - 1] > 1.0]


def _last_failed_export(log: Path) -> float:
    """When (Unix s) the Collector last logged an export that failed (0: never)."""
    lines = log.read_text().splitlines()
    failed = [line.split("\t", 1)[0] for line in lines if "Exporting failed" in line]
    return datetime.fromisoformat(failed[-1]).timestamp() if failed else 0.0


def _collector_over_grpc(
    binary: Path, ingest: Ingest, host: str, work: Path
) -> tuple[OtelCollector, Path]:
    """A real Collector exporting its `hostmetrics` (every 2 s, as ``host``) to ``ingest``
    over gRPC, retrying every 1-2 s for as long as it takes, and, in the same pipeline, to a
    file: what it collected (the file's path is returned with it)."""
    exported, config = work / "exported.jsonl", work / "otelcol.yaml"
    config.write_text(
        f"""receivers:
  hostmetrics:
    collection_interval: 2s
    scrapers: {{cpu: {{}}, memory: {{}}}}
processors:
  resource:
    attributes: [{{key: host.name, value: {host}, action: upsert}}]
exporters:
  otlp:
    endpoint: 127.0.0.1:{ingest.grpc_port}
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 1s, max_interval: 2s, max_elapsed_time: 0s}}
  file:
    path: {exported}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [hostmetrics], processors: [resource], exporters: [otlp, file]}}
"""
    )
    return OtelCollector(binary, config), exported


def _stop_once_delivered(collector: OtelCollector, ingest: Ingest) -> str:
    """Stop the Collector once it holds nothing unsent, then wait until the receiver has
    assembled and sent everything; the Collector's log. Stopped while it still retries, the
    Collector drops what it holds ("interrupted due to shutdown"): it retries every 2 s at
    most, so 5 s without a failed export mean it holds nothing unsent."""
    try:
        wait_for(lambda: _last_failed_export(collector.log) < time.time() - 5, 90, "retries")
    finally:
        collector_log = collector.stop()
    wait_for(lambda: ingest.metric("sysmetrics_ingest_pending_samples") == 0, 30, "assembly")
    wait_for(lambda: ingest.metric("sysmetrics_ingest_producer_spool_depth") == 0, 120, "spool")
    return collector_log


def _assert_each_collection_once_in_the_lake(
    settings: Settings, host: str, exported: Path, resent: int, collector_log: str
) -> None:
    """Every collection in the Collector's file is one event of ``host`` in the lake, and no
    other; twice, as the same event, only what a killed receiver's spool resent."""
    collected = _collection_times(exported)
    assert len(collected) >= 9, collector_log[-3000:]
    events = [e for e in drain_to_lake(settings) if e["host"]["host_id"] == host]
    assert_each_sample_once(events, [round(t * 1000) for t in collected], resent, within_ms=999)


@pytest.mark.slow
def test_the_receiver_killed_twice_mid_stream_loses_and_duplicates_nothing(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """A real Collector exports its `hostmetrics` over gRPC and to a file. The receiver is
    killed (-9) twice mid-stream, with exports in flight and samples being assembled, and
    restarted on the same ports: the Collector retries what went unanswered (UNAVAILABLE, or
    the connection gone) and every collection in its file is one event in the lake."""
    binary = otelcol_binary()
    if binary is None:
        pytest.skip("Go missing: the OTel Collector cannot be built")
    ingest = Ingest(tansu_settings, tansu_settings.data_dir, grpc=True)
    ingest.start()
    collector, exported = _collector_over_grpc(binary, ingest, "killed-host", tmp_path)
    try:
        try:
            for kill in (1, 2):
                wait_for(
                    lambda: ingest.metric("sysmetrics_ingest_events_total") >= 3,
                    90,
                    f"3 events before kill {kill}",
                )
                ingest.kill()  # mid-stream: samples pending, exports unanswered
                time.sleep(3)  # the Collector's retries meet a closed port meanwhile
                ingest.start()
            wait_for(
                lambda: ingest.metric("sysmetrics_ingest_events_total") >= 3, 90, "events again"
            )
        finally:
            collector_log = _stop_once_delivered(collector, ingest)
    finally:
        log = ingest.stop()
    _assert_each_collection_once_in_the_lake(
        tansu_settings, "killed-host", exported, spool_resent(log), collector_log
    )


@pytest.mark.slow
@pytest.mark.parametrize("restartable_broker", ["durable-tansu"], indirect=True)
def test_kafka_down_30s_under_grpc_and_the_receiver_killed_lose_and_duplicate_nothing(
    restartable_broker: TestBroker, tmp_path: Path
) -> None:
    """Kafka down for 30 s while a Collector exports over gRPC, the receiver killed (-9) in
    the middle of it: exports are answered OK once spooled (fsynced), the restarted receiver
    takes its spool and journal back, and once Kafka returns every collection in the
    Collector's file is one event in the lake (remote-write's twin: test_ingest's
    ``kafka_down_and_receiver_killed``)."""
    binary = otelcol_binary()
    if binary is None:
        pytest.skip("Go missing: the OTel Collector cannot be built")
    settings = settings_for(restartable_broker, tmp_path)
    ingest = Ingest(settings, settings.data_dir, grpc=True)
    ingest.start()
    collector, exported = _collector_over_grpc(binary, ingest, "outage-host", tmp_path)
    try:
        try:
            wait_for(lambda: ingest.metric("sysmetrics_ingest_events_total") >= 3, 90, "events")
            restartable_broker.stop()
            time.sleep(12)
            spooled = ingest.metric("sysmetrics_ingest_producer_spool_depth")
            ingest.kill()  # with events in its spool and samples being assembled
            time.sleep(3)
            ingest.start()
            time.sleep(15)
            restartable_broker.start()
            wait_for(
                lambda: ingest.metric("sysmetrics_ingest_producer_spool_depth") == 0, 120, "drain"
            )
        finally:
            collector_log = _stop_once_delivered(collector, ingest)
    finally:
        log = ingest.stop()
    assert spooled >= 3, "the outage's events wait in the spool"
    _assert_each_collection_once_in_the_lake(
        settings, "outage-host", exported, spool_resent(log), collector_log
    )
