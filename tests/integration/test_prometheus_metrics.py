"""Watching the pipeline the way the rest of the infrastructure is watched: a real Prometheus
(Debian's `prometheus`) scrapes the lake writer's and the alert evaluator's /metrics while
they work through a stream with 1,000 poison messages in it, and PromQL returns what they
counted: every event, every quarantined message, and an evaluator still running."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sysmetrics.config import Settings
from tests.support.events import as_messages, simulated
from tests.support.kafka_io import SYSMETRICS, produce
from tests.support.lake import data_files, read_lines
from tests.support.ports import free_port
from tests.support.waiting import wait_for

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="Prometheus missing: run scripts/install-system-deps.sh (apt install prometheus)",
)
POISON = 1_000


def poison_messages(rng: random.Random) -> list[tuple[bytes | None, bytes | None]]:
    """What a broken or hostile producer sends: not JSON, JSON that is not an event, wrong
    types, binary noise, empty and oversized values."""
    kinds = [
        lambda: b"not json",
        lambda: b'{"schema_version": 1}',
        lambda: json.dumps({"schema_version": 1, "ts": "yesterday", "host": 7}).encode(),
        lambda: rng.randbytes(64),
        lambda: b"",
        lambda: b"[" * 5000,
        lambda: json.dumps({"schema_version": 99, "event_id": "x"}).encode(),
    ]
    return [(b"evil", rng.choice(kinds)()) for _ in range(POISON)]


def query(url: str, promql: str) -> float | None:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=5
    ) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_writer_and_evaluator_through_1000_poison_messages(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(5)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    events = as_messages(simulated(20, start, 300.0))
    messages = events + poison_messages(rng)
    rng.shuffle(messages)
    produce(tansu_settings, messages)

    writer_port, evaluator_port, prometheus_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "SYSMETRICS_BOOTSTRAP_SERVERS": tansu_settings.bootstrap_servers,
        "SYSMETRICS_TOPIC": tansu_settings.topic,
        "SYSMETRICS_CONSUMER_GROUP": tansu_settings.consumer_group,
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_LAKE_URL": tansu_settings.lake_url,
        "SYSMETRICS_FLUSH_SECONDS": "2",
        "SYSMETRICS_ALERT_STATE_TOPIC": f"{tansu_settings.topic}-state",
        "SYSMETRICS_ALERT_CONSUMER_GROUP": f"{tansu_settings.topic}-alerts",
    }
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: lake-writer
    static_configs: [{{targets: ["127.0.0.1:{writer_port}"]}}]
  - job_name: alert-evaluator
    static_configs: [{{targets: ["127.0.0.1:{evaluator_port}"]}}]
"""
    )
    processes = [
        subprocess.Popen(
            [SYSMETRICS, "consume", "--metrics-port", str(writer_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [SYSMETRICS, "alert", "--metrics-port", str(evaluator_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    prometheus = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{prometheus_port}"
    counted = {
        "sysmetrics_lake_records_total - sysmetrics_lake_quarantined_total": len(events),
        'sysmetrics_lake_quarantined_total{job="lake-writer"}': POISON,
        'sysmetrics_alert_events_total{job="alert-evaluator"}': len(events),
        'sysmetrics_alert_skipped_total{job="alert-evaluator"}': POISON,
    }

    seen: dict[str, float | None] = {}

    def scraped() -> bool:
        try:
            seen.update({q: query(url, q) for q in counted})
        except OSError:
            return False
        return all(seen[q] == n for q, n in counted.items())

    try:
        try:
            wait_for(scraped, 120, "Prometheus to scrape every event and poison message")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: expected {counted}, last seen {seen}") from None
        # The evaluator and the writer are still up, and Prometheus sees both targets healthy.
        assert all(p.poll() is None for p in processes)
        assert query(url, "sum(up)") == 2
        assert query(url, 'sysmetrics_alerts{state="firing"}') is not None
    finally:
        for process in [*processes, prometheus]:
            process.terminate()
        for process in [*processes, prometheus]:
            process.wait(30)
    # What Prometheus reports is what is in the lake.
    lines = [
        line for path in data_files(Path(tansu_settings.lake_url)) for line in read_lines(path)
    ]
    assert len(lines) == len(events)
