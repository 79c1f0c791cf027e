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
from sysmetrics.stream.broker import pid_alive
from tests.support.kafka_io import SYSMETRICS
from tests.support.ports import free_port
from tests.support.remote_write import write_request
from tests.support.terminal import as_from_a_terminal
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
        # The broker moved off 9092 and nothing else said: every component follows it.
        "SYSMETRICS_BROKER_PORT": str(free_port()),
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


def up_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_BROKER_PORT": (port := str(free_port())),
        "SYSMETRICS_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "SYSMETRICS_METRICS_PORT": "0",
        **extra,
    }


def test_a_component_that_dies_is_restarted_and_up_says_why(tmp_path: Path) -> None:
    """The dashboard is killed (-9) twice: `up` starts it again each time, with a growing delay,
    and each restart line carries the component's last log line, not only the log's path."""
    dashboard_port = free_port()
    up = subprocess.Popen(
        [SYSMETRICS, "up", "--no-collect", "--no-airflow"],
        env=up_env(tmp_path, SYSMETRICS_DASHBOARD_PORT=str(dashboard_port)),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    state_file = tmp_path / "data" / "up.json"

    def dashboard_pid() -> int | None:
        if not state_file.exists():
            return None
        pid = json.loads(state_file.read_text())["components"]["dashboard"]
        return int(pid) if pid else None

    killed = []
    try:
        for _ in range(2):
            wait_for(
                lambda: (
                    dashboard_pid() not in (None, *killed)
                    and bool(fetch(f"http://127.0.0.1:{dashboard_port}/healthz"))
                ),
                120,
                "the dashboard serving (again)",
            )
            pid = dashboard_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        wait_for(lambda: dashboard_pid() not in (None, *killed), 60, "the second restart")
    finally:
        up.send_signal(signal.SIGINT)
        stderr = up.communicate(timeout=120)[1]
    assert up.returncode == 0, stderr[-3000:]
    restarts = [line for line in stderr.splitlines() if "dashboard exited with -9" in line]
    assert len(restarts) == 2, stderr[-3000:]
    log_file = tmp_path / "data" / "logs" / "dashboard.log"
    last = [line for line in log_file.read_text().splitlines() if line.strip()]
    assert all("): restarting (see" in line and str(log_file) in line for line in restarts)
    # The reason in each line is the log's last line before that death (not "no output").
    assert all("(no output)" not in line for line in restarts), restarts
    assert any(line.strip()[:60] in restarts[-1] for line in last), (restarts, last[-5:])


@pytest.mark.parametrize("refusal", ["taken port", "taken broker port", "dashboard exposed"])
def test_what_would_stop_a_component_at_every_start_stops_up_before_it_starts_anything(
    tmp_path: Path, refusal: str
) -> None:
    """A port another process holds, or the dashboard on a non-loopback address without a
    token: that component would exit at every start, restarted for ever. `up` says what to
    change and starts nothing (no broker, no state file)."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        if refusal == "taken port":
            env = up_env(tmp_path, SYSMETRICS_INGEST_PORT=str(taken))
            # The holder is named: here this test's process.
            said = [
                f"port {taken} on 127.0.0.1 is in use by pid {os.getpid()} (",
                "(SYSMETRICS_INGEST_PORT)",
            ]
        elif refusal == "taken broker port":
            # As when another `up`, in another folder, runs its embedded broker: this was a
            # traceback (the stop after a failed start joined a thread never started).
            env = up_env(
                tmp_path,
                SYSMETRICS_BROKER_PORT=str(taken),
                SYSMETRICS_BOOTSTRAP_SERVERS=f"127.0.0.1:{taken}",
            )
            said = [f"port {taken} on 127.0.0.1 is in use", "SYSMETRICS_BROKER_PORT"]
        else:
            env = up_env(tmp_path, SYSMETRICS_DASHBOARD_HOST="0.0.0.0")
            env.pop("SYSMETRICS_DASHBOARD_TOKEN", None)
            said = ["the dashboard on 0.0.0.0 would serve", "SYSMETRICS_DASHBOARD_TOKEN"]
        up = subprocess.run(
            [SYSMETRICS, "up", "--for", "30", "--no-collect", "--no-airflow", "--ingest"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert up.returncode == 1, up.stderr[-3000:]
    assert all(text in up.stderr for text in said), up.stderr[-3000:]
    assert "Traceback" not in up.stderr, up.stderr[-3000:]
    assert not (tmp_path / "data" / "up.json").exists()
    assert not list((tmp_path / "data").rglob("*.pid")), "a broker was started"


def _run(
    tmp_path: Path, env: dict[str, str], args: list[str], timeout_s: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSMETRICS, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _start_up(
    tmp_path: Path, env: dict[str, str], dashboard_port: int, prefix: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    up = subprocess.Popen(
        [*prefix, SYSMETRICS, "up", "--no-collect", "--no-airflow"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,  # a `nohup` prefix ignores SIGHUP again
    )
    wait_for(
        lambda: (
            (tmp_path / "data" / "up.json").exists()
            and bool(fetch(f"http://127.0.0.1:{dashboard_port}/healthz"))
        ),
        120,
        "up serving its dashboard",
    )
    return up


def _state(tmp_path: Path) -> dict[str, object]:
    state = json.loads((tmp_path / "data" / "up.json").read_text())
    assert isinstance(state, dict)
    return state


def _pids(state: dict[str, object]) -> list[int]:
    components = state["components"]
    assert isinstance(components, dict)
    return [pid for pid in components.values() if isinstance(pid, int)]


@pytest.mark.parametrize("next_up", ["runs", "is refused"])
def test_an_up_killed_leaves_components_the_next_up_stops_and_takes_over_its_broker(
    tmp_path: Path, next_up: str
) -> None:
    """`kill -9` of `up` leaves its components running, unsupervised, holding their ports:
    the next `up` in that folder refused to start ("port … in use"). Now it stops them (the
    lake writer flushing), says which, runs, and also stops the broker the killed one owned;
    refused for another reason after that (a port something else holds), it stops that broker
    too rather than leave it running with no `up` to own it."""
    dashboard_port = free_port()
    env = up_env(tmp_path, SYSMETRICS_DASHBOARD_PORT=str(dashboard_port))
    first = _start_up(tmp_path, env, dashboard_port)
    state = _state(tmp_path)
    leftovers = _pids(state)
    broker_pid = state["broker_pid"]
    assert isinstance(broker_pid, int) and state["own_broker"] is True
    first.kill()
    first.communicate(timeout=30)
    assert all(pid_alive(pid) for pid in leftovers), "kill -9 of up leaves its components"
    status = _run(tmp_path, env, ["status"], 60)
    components = state["components"]
    assert isinstance(components, dict)
    assert f"up           not running (pid {first.pid} ended without stopping" in status.stdout
    assert f"dashboard {components['dashboard']}" in status.stdout, status.stdout

    if next_up == "runs":
        second = _run(tmp_path, env, ["up", "--no-collect", "--no-airflow", "--for", "10"], 240)
        assert second.returncode == 0, second.stderr[-3000:]
    else:
        import socket

        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            env["SYSMETRICS_INGEST_PORT"] = str(holder.getsockname()[1])
            second = _run(tmp_path, env, ["up", "--no-collect", "--no-airflow", "--ingest"], 240)
        assert second.returncode == 1, second.stderr[-3000:]
        assert "is in use by pid" in second.stderr, second.stderr[-3000:]
    assert "ended without stopping its components; stopped them" in second.stderr
    assert all(f"(pid {pid})" in second.stderr for pid in leftovers), second.stderr[-3000:]
    assert not any(pid_alive(pid) for pid in leftovers)
    assert not pid_alive(broker_pid), "the broker the killed up started is stopped with the rest"
    assert not (tmp_path / "data" / "up.json").exists()


def test_a_second_up_is_refused_and_a_lost_terminal_stops_everything(tmp_path: Path) -> None:
    """A second `up` for the same folder says the first runs (it said a port was taken);
    SIGHUP (the terminal went away) stops every component as Ctrl-C does: it ended `up` at
    once and left them all running."""
    dashboard_port = free_port()
    env = up_env(tmp_path, SYSMETRICS_DASHBOARD_PORT=str(dashboard_port))
    first = _start_up(tmp_path, env, dashboard_port)
    try:
        second = _run(tmp_path, env, ["up", "--no-collect", "--no-airflow", "--for", "5"], 60)
        assert second.returncode == 1, second.stderr[-3000:]
        assert f"`sysmetrics up` already runs for {tmp_path / 'data'} (pid {first.pid})" in (
            second.stderr
        ), second.stderr[-3000:]
        state = _state(tmp_path)
        components = _pids(state)
        assert all(pid_alive(pid) for pid in components), "the refused up touched nothing"
        status = _run(tmp_path, env, ["status"], 60)
        assert f"up           running pid {first.pid}: lake writer" in status.stdout, status.stdout
    finally:
        first.send_signal(signal.SIGHUP)
        stderr = first.communicate(timeout=120)[1]
    assert first.returncode == 0, stderr[-3000:]
    assert not any(pid_alive(pid) for pid in components)
    assert isinstance(state["broker_pid"], int) and not pid_alive(state["broker_pid"])


def test_up_under_nohup_runs_on_after_a_hangup(tmp_path: Path) -> None:
    """`nohup sysmetrics up &` keeps running when the terminal goes (SIGHUP ignored), while a
    plain `up` stops everything on SIGHUP (above)."""
    dashboard_port = free_port()
    env = up_env(tmp_path, SYSMETRICS_DASHBOARD_PORT=str(dashboard_port))
    up = _start_up(tmp_path, env, dashboard_port, prefix=("nohup",))
    try:
        up.send_signal(signal.SIGHUP)
        time.sleep(3)  # a heeded SIGHUP stops `up` within a second (its loop's tick)
        assert up.poll() is None, up.communicate()[1][-3000:]
        assert fetch(f"http://127.0.0.1:{dashboard_port}/healthz")
    finally:
        up.send_signal(signal.SIGINT)
        stderr = up.communicate(timeout=120)[1]
    assert up.returncode == 0, stderr[-3000:]
