"""`sysmetrics alert` end to end: samples through a real broker, the evaluator, Debian's real
Alertmanager, and a webhook receiver behind it (the way an administrator gets paged)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from sysmetrics.alerts.service import AlertService
from sysmetrics.config import Settings
from sysmetrics.dashboard.app import create_app
from sysmetrics.stream.broker import free_port
from tests.support.events import as_messages
from tests.support.kafka_io import SYSMETRICS, produce
from tests.support.lakes import event
from tests.support.waiting import wait_for

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = pytest.mark.skipif(
    ALERTMANAGER is None,
    reason="Alertmanager missing: run scripts/install-system-deps.sh "
    "(apt install prometheus-alertmanager)",
)


class Receiver(HTTPServer):
    """Alertmanager's webhook receiver: keeps every notification it gets."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        super().__init__(("127.0.0.1", free_port()), Handler)

    def statuses(self, alertname: str) -> list[str]:
        return [
            a["status"]
            for n in self.notifications
            for a in n["alerts"]
            if a["labels"]["alertname"] == alertname
        ]


@pytest.fixture
def paging(tmp_path: Path) -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        f"""
route:
  receiver: pager
  group_by: [alertname, host_id]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: pager
    webhook_configs:
      - url: http://127.0.0.1:{receiver.server_port}/
        send_resolved: true
"""
    )
    port = free_port()
    process = subprocess.Popen(
        [
            str(ALERTMANAGER),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(ready, 30, "Alertmanager to start")
        yield url, receiver
    finally:
        process.terminate()
        process.wait(10)
        receiver.shutdown()


def test_cpu_above_90_for_6_minutes_pages_once_and_resolves_once(
    tansu_settings: Settings, paging: tuple[str, Receiver]
) -> None:
    url, receiver = paging
    settings = tansu_settings.model_copy(
        update={
            "alertmanager_url": url,
            "alert_state_topic": f"{tansu_settings.topic}-alert-state",
            "alert_consumer_group": f"{tansu_settings.consumer_group}-alerts",
        }
    )
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    hot = [event("db-1", start + timedelta(seconds=10 * i), 96.0, seq=i) for i in range(37)]
    cool = [event("db-1", start + timedelta(seconds=10 * i), 20.0, seq=i) for i in range(37, 49)]
    poison = [(b"db-1", b"not json"), (b"db-1", b'{"schema_version": 1}')]
    produce(settings, [*poison, *as_messages(hot)])
    service = AlertService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        # 6 minutes of event time above 90 % (the rule's `for` is 5 m): one page...
        wait_for(lambda: "firing" in receiver.statuses("HighCpu"), 60, "the firing page")
        # The dashboard's "firing now" view shows it, seconds old, linked to its host.
        web = TestClient(create_app(settings))
        wait_for(lambda: "HighCpu" in web.get("/alerts").text, 10, "the live view")
        live = web.get("/alerts").text
        assert 'href="/host?id=db-1"' in live and "CPU at 96 %" in live
        # ...and when the CPU drops, one resolved notification.
        produce(settings, as_messages(cool))
        wait_for(lambda: "resolved" in receiver.statuses("HighCpu"), 60, "the resolve")
    finally:
        service.stop.set()
        thread.join(30)
    assert receiver.statuses("HighCpu") == ["firing", "resolved"]
    assert service.stats.skipped == 2 and service.stats.events == len(hot) + len(cool)
    first = next(n for n in receiver.notifications if n["status"] == "firing")
    alert = first["alerts"][0]
    assert alert["labels"]["host_id"] == "db-1" and alert["labels"]["severity"] == "warning"
    assert "CPU at 96 % on db-1.example" in alert["annotations"]["summary"]
    # Firing from the sample where it had held for 5 minutes (event time), as Prometheus.
    assert alert["startsAt"].startswith((start + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M"))


def test_kill_9_while_firing_loses_no_resolve(
    tansu_settings: Settings, paging: tuple[str, Receiver], tmp_path: Path
) -> None:
    """The evaluator is killed while an alert fires; the next one reads the state topic and
    sends the resolve when the CPU drops (without it, Alertmanager would only time the alert
    out minutes later)."""
    url, receiver = paging
    env = {
        **os.environ,
        "SYSMETRICS_BOOTSTRAP_SERVERS": tansu_settings.bootstrap_servers,
        "SYSMETRICS_TOPIC": tansu_settings.topic,
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_ALERTMANAGER_URL": url,
        "SYSMETRICS_ALERT_STATE_TOPIC": f"{tansu_settings.topic}-state",
        "SYSMETRICS_ALERT_CONSUMER_GROUP": f"{tansu_settings.topic}-alerts",
    }
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    hot = [event("web-7", start + timedelta(seconds=10 * i), 97.0, seq=i) for i in range(40)]
    produce(tansu_settings, as_messages(hot))
    first = subprocess.Popen([SYSMETRICS, "alert"], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "firing" in receiver.statuses("HighCpu"), 60, "the firing page")
        time.sleep(2)  # past a commit: the state is in the topic
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    cool = [event("web-7", start + timedelta(seconds=10 * i), 15.0, seq=i) for i in range(40, 46)]
    produce(tansu_settings, as_messages(cool))
    second = subprocess.Popen([SYSMETRICS, "alert"], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "resolved" in receiver.statuses("HighCpu"), 40, "the resolve")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert receiver.statuses("HighCpu") == ["firing", "resolved"]
