"""`sysmetrics up` brings the whole pipeline up, a simulated fleet with its past included and an
agent's remote-write through `--ingest`, and SIGINT takes all of it down."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from sysmetrics.collect.host import read_host
from sysmetrics.stream.broker import free_port, pid_alive
from tests.support.kafka_io import SYSMETRICS
from tests.support.remote_write import write_request
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def post_ok(request: urllib.request.Request) -> bool:
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 204)
    except OSError:
        return False


def hourly_points(html: str) -> int:
    match = re.search(r'aria-label="CPU %[^"]*hourly"[^>]*data-points="(\d+)"', html)
    return int(match.group(1)) if match else 0


def test_up_shows_this_machine_and_sigint_leaves_nothing_behind(tmp_path: Path) -> None:
    dashboard_port = free_port()
    env = {
        **os.environ,
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_LAKE_URL": str(tmp_path / "data" / "lake"),
        "SYSMETRICS_WAREHOUSE_URL": str(tmp_path / "data" / "warehouse.duckdb"),
        "SYSMETRICS_BROKER_PORT": (port := str(free_port())),
        "SYSMETRICS_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "SYSMETRICS_DASHBOARD_PORT": str(dashboard_port),
        "SYSMETRICS_INGEST_PORT": (ingest_port := str(free_port())),
        "SYSMETRICS_INGEST_ASSEMBLY_WAIT_S": "2",
    }
    up = subprocess.Popen(
        [SYSMETRICS, "up", "--demo", "--simulate", "5", "--no-airflow", "--ingest"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    began = time.monotonic()
    state_file = tmp_path / "data" / "up.json"
    try:
        wait_for(state_file.exists, 60, "up to start its components")
        state = json.loads(state_file.read_text())
        hostname = read_host().hostname
        wait_for(
            lambda: any((tmp_path / "data" / "lake" / "raw").rglob("*.jsonl")),
            120,
            "raw files in the lake",
        )
        wait_for(
            lambda: hostname in fetch(f"http://127.0.0.1:{dashboard_port}/"),
            150,
            "this machine on the dashboard",
        )
        assert "sim-host-00000" in fetch(f"http://127.0.0.1:{dashboard_port}/")
        # A machine that runs node_exporter behind a Prometheus joins through `up --ingest`.
        now_ms = int(time.time() * 1000)
        for i, busy in enumerate((100.0, 105.0)):
            series = [({"__name__": "node_cpu_seconds_total", "cpu": "0", "mode": "user"}, busy)]
            body = write_request(series, now_ms - 10_000 * (1 - i), {"instance": "prom-7:9100"})
            request = urllib.request.Request(
                f"http://127.0.0.1:{ingest_port}/api/v1/write",
                data=body,
                headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"},
            )
            wait_for(lambda r=request: post_ok(r), 60, "the ingest receiver to accept")
        wait_for(
            lambda: "prom-7" in fetch(f"http://127.0.0.1:{dashboard_port}/"),
            150,
            "the ingested host on the dashboard",
        )
        # The demo has a past: the simulated fleet's last 24 h went through the broker, the
        # lake writer and the hourly job, so the hourly charts have >= 24 points at once.
        host_page = f"http://127.0.0.1:{dashboard_port}/host?id=sim-42-00000&range=7d"
        wait_for(
            lambda: hourly_points(fetch(host_page)) >= 24,
            240,
            "24 hourly points on a simulated host's page",
        )
        print(f"24 hourly points after {time.monotonic() - began:.0f} s")
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=120)[0].decode()
    assert up.returncode == 0, output[-3000:]
    assert "all components stopped" in output
    assert re.search(r"\d+ firing", output), output[-3000:]  # the evaluator's row says
    # The ingest row, from the receiver's status file (the table wraps it over lines).
    cells = " ".join(re.sub(r"[│┃║|]", " ", output).split())
    assert re.search(r"[1-9]\d* requests taken, [1-9]\d* events", cells), output[-3000:]
    pids = [state["pid"], state["broker_pid"], *state["components"].values()]
    # up, broker, collector, simulator, ingest, writer, evaluator, dashboard
    assert len([p for p in pids if p]) == 8
    assert not [p for p in pids if p and pid_alive(p)], "processes left behind"
    assert not state_file.exists()


def test_a_component_that_keeps_exiting_is_restarted_and_up_says_why(tmp_path: Path) -> None:
    """The dashboard's port is taken: `up` restarts it with a growing delay and each restart
    line carries the reason from the component's log, not only the log's path."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env = {
            **os.environ,
            "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
            "SYSMETRICS_BROKER_PORT": (port := str(free_port())),
            "SYSMETRICS_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "SYSMETRICS_DASHBOARD_PORT": str(holder.getsockname()[1]),
            "SYSMETRICS_METRICS_PORT": "0",
        }
        up = subprocess.run(
            [SYSMETRICS, "up", "--for", "15", "--no-collect", "--no-airflow"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert up.returncode == 0, up.stderr[-3000:]
    restarts = [line for line in up.stderr.splitlines() if "dashboard exited with" in line]
    assert len(restarts) >= 2, up.stderr[-3000:]
    reason = (
        "is in use: stop what holds it, or choose another (--port or SYSMETRICS_DASHBOARD_PORT)"
    )
    assert all(f"{reason}): restarting (see" in line for line in restarts), restarts
