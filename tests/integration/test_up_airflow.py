"""`sysmetrics up --airflow`: Airflow 3 standalone runs our DAG; SIGINT stops all of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sysmetrics.stream.broker import pid_alive, process_group_alive
from tests.support.kafka_io import SYSMETRICS
from tests.support.lakes import HOUR14, LakeBuilder, steady_host
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytest.importorskip("airflow", reason="install the 'airflow' extra")
pytestmark = pytest.mark.slow
DAG = "machine_metrics_hourly"


def api(port: int, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v2{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def test_up_with_airflow_runs_the_dag_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    LakeBuilder(data / "lake").add_batch(steady_host("web-1", HOUR14, cpu=30.0, samples=200))
    port = free_port()
    env = {
        **os.environ,
        "SYSMETRICS_DATA_DIR": str(data),
        "SYSMETRICS_BROKER_PORT": (broker_port := str(free_port())),
        "SYSMETRICS_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
        "SYSMETRICS_AIRFLOW_PORT": str(port),
        "SYSMETRICS_WATERMARK_WAIT_S": "0",  # no writer publishes watermarks here
        "SYSMETRICS_DAG_RETRIES": "0",
    }
    up = subprocess.Popen(
        [SYSMETRICS, "up", "--airflow", "--no-collect", "--no-dashboard"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: (
                (api(port, "/monitor/health") or {}).get("scheduler", {}).get("status") == "healthy"
            ),
            180,
            "Airflow standalone to be healthy",
        )
        wait_for(
            lambda: (api(port, f"/dags/{DAG}") or {}).get("is_paused") is False,
            120,
            "the DAG to be parsed and unpaused",
        )
        state = json.loads((data / "up.json").read_text())
        logical = HOUR14 + timedelta(hours=1)

        def the_run() -> dict[str, Any] | None:
            """Triggered here; a trigger whose answer timed out (5 s, under CI's load) may
            still have made the run, and a second trigger then conflicts: look it up."""
            listed = (api(port, f"/dags/{DAG}/dagRuns") or {}).get("dag_runs", [])
            made = [
                r
                for r in listed
                if datetime.fromisoformat(r["logical_date"].replace("Z", "+00:00")) == logical
            ]
            return (
                made[0]
                if made
                else api(port, f"/dags/{DAG}/dagRuns", {"logical_date": logical.isoformat()})
            )

        wait_for(lambda: the_run() is not None, 120, "the 14:00 run to be triggered")
        run = the_run()
        assert run is not None and run["data_interval_start"].startswith("2026-11-27T14:00")
        run_id = urllib.request.quote(run["dag_run_id"], safe="")
        wait_for(
            lambda: (
                (api(port, f"/dags/{DAG}/dagRuns/{run_id}") or {}).get("state")
                in ("success", "failed")
            ),
            240,
            "the DAG run to finish",
        )
        assert api(port, f"/dags/{DAG}/dagRuns/{run_id}")["state"] == "success"
        query = subprocess.run(
            [
                SYSMETRICS,
                "query",
                "--json",
                "SELECT host_id, samples FROM hourly_host_metrics "
                "WHERE hour = '2026-11-27 14:00:00+00'",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(query.stdout.splitlines()[0]) == {"host_id": "web-1", "samples": 200}
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=180)[0].decode()
    assert up.returncode == 0, output[-3000:]
    airflow_pid = state["components"]["airflow"]
    time.sleep(1)
    assert not pid_alive(airflow_pid)
    assert not process_group_alive(airflow_pid), "Airflow processes left behind"
