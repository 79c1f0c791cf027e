"""Debian's real Alertmanager with a webhook receiver behind it: the way an administrator gets
paged, for tests of the alert evaluator."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.waiting import wait_for

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
MISSING = (
    "Alertmanager missing: run scripts/install-system-deps.sh (apt install prometheus-alertmanager)"
)


class Receiver(HTTPServer):
    """Alertmanager's webhook receiver: keeps every notification it gets. With ``listening``
    false its port is bound but refuses connections, as a receiver that is down, until
    :meth:`server_activate`: nothing else can take the port in between."""

    def __init__(self, listening: bool = True) -> None:
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

        super().__init__(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server_bind()
        if listening:
            self.server_activate()

    def statuses(self, alertname: str) -> list[str]:
        return [
            a["status"]
            for n in self.notifications
            for a in n["alerts"]
            if a["labels"]["alertname"] == alertname
        ]


@contextmanager
def alertmanager(
    tmp_path: Path, group_by: str = "[alertname, host_id]", group_wait_s: int = 1
) -> Iterator[tuple[str, Receiver]]:
    """Alertmanager routing every alert to a webhook :class:`Receiver`, one notification per
    group of ``group_by``; yields (its URL, the receiver)."""
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        f"""
route:
  receiver: pager
  group_by: {group_by}
  group_wait: {group_wait_s}s
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
