"""Alerts in seconds: sample → Alertmanager latency, and the evaluator's cost per event.

    .venv/bin/python benchmarks/alert_latency.py [alerts (0: skip a)] [backlog events]

Everything real and at default settings: the embedded broker (Tansu), `sysmetrics alert` with
the shipped rule pack, Debian's Alertmanager, and a simulated fleet of 1,000 hosts producing in
real time on the same topic as background load.

(a) Latency: for each of N hosts (default 40), 4 min 50 s of CPU > 90 % samples (event time,
    backdated) are produced; a moment later the sample that completes HighCpu's `for: 5m` is
    produced and the clock starts; it stops when Alertmanager's API lists the alert. p50, p99.
(b) Cost: the same backlog of events (default 100,000) consumed by `sysmetrics alert` and by
    `sysmetrics consume` one after the other, each process's CPU seconds from its first counted
    event to its last (read from their /metrics): events per CPU-second, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from sysmetrics.config import Settings, load_settings
from sysmetrics.schema import encode
from sysmetrics.stream.admin import ensure_topic
from sysmetrics.stream.broker import EmbeddedBroker
from sysmetrics.stream.simulator import generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.kafka_io import SYSMETRICS, produce
from tests.support.lakes import event
from tests.support.ports import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def env_for(settings: Settings, root: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SYSMETRICS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "SYSMETRICS_TOPIC": settings.topic,
        "SYSMETRICS_DATA_DIR": str(root / "data"),
        "SYSMETRICS_LAKE_URL": str(root / "lake"),
        **extra,
    }


def metric(port: int, name: str) -> float:
    """One unlabelled sample of a process's /metrics (0 until it is served)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def firing_in_alertmanager(url: str, host: str) -> bool:
    query = urllib.parse.urlencode({"filter": f'host_id="{host}"'})
    with urllib.request.urlopen(f"{url}/api/v2/alerts?{query}", timeout=2) as response:
        return any(a["labels"].get("alertname") == "HighCpu" for a in json.load(response))


def latency(settings: Settings, root: Path, alerts: int) -> list[float]:
    assert ALERTMANAGER, "Alertmanager missing: run scripts/install-system-deps.sh"
    am_port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    (root / "am.yml").write_text("route: {receiver: none}\nreceivers: [{name: none}]\n")
    manager = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={root / 'am.yml'}",
            f"--storage.path={root / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{am_port}"
    env = env_for(settings, root, SYSMETRICS_ALERTMANAGER_URL=url, SYSMETRICS_METRICS_PORT="0")
    fleet = subprocess.Popen(
        [SYSMETRICS, "simulate", "--hosts", "1000", "--speedup", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    evaluator = subprocess.Popen(
        [SYSMETRICS, "alert"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    out = []
    try:
        wait_http(f"{url}/-/ready")
        time.sleep(15)  # the evaluator joins its group and reads its state
        for n in range(-1, alerts):  # alert -1 warms the path up and is not counted
            host = f"bench-hot-{n}"
            now = datetime.now(UTC)
            first = now - timedelta(minutes=5)
            warmup = [
                event(host, first + timedelta(seconds=10 * i), 97.0, seq=i) for i in range(30)
            ]
            produce(settings, [(host.encode(), encode(e)) for e in warmup])
            time.sleep(1.0)
            trigger = event(host, first + timedelta(minutes=5), 97.0, seq=30)
            began = time.perf_counter()
            produce(settings, [(host.encode(), encode(trigger))])
            while not firing_in_alertmanager(url, host):
                if time.perf_counter() - began > 120:
                    raise RuntimeError(f"{host}: no alert after 120 s")
                time.sleep(0.05)
            if n >= 0:
                out.append(time.perf_counter() - began)
                print(f"  alert {n + 1:3}/{alerts}: {out[-1]:.2f} s", flush=True)
    finally:
        for process in (evaluator, fleet, manager):
            process.terminate()
            process.wait(30)
    return out


def events_per_cpu_second(
    command: list[str], env: dict[str, str], port: int, counter: str, total: int
) -> float:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ps = psutil.Process(process.pid)
    try:
        while (first := metric(port, counter)) == 0:
            time.sleep(0.05)
        cpu_first = sum(ps.cpu_times()[:2])
        while (count := metric(port, counter)) < total:
            time.sleep(0.05)
        cpu_last = sum(ps.cpu_times()[:2])
    finally:
        process.terminate()
        process.wait(60)
    return (count - first) / max(cpu_last - cpu_first, 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("alerts", nargs="?", type=int, default=40, help="0: the cost part only")
    parser.add_argument("backlog", nargs="?", type=int, default=100_000, help="events of load")
    args = parser.parse_args()
    alerts, backlog = args.alerts, args.backlog
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = EmbeddedBroker(root / "broker", free_port())
        broker.start()
        try:
            settings = load_settings(bootstrap_servers=broker.bootstrap, topic="bench")
            ensure_topic(settings)
            if alerts:  # 0: the cost part only
                print(f"(a) sample -> Alertmanager, {alerts} alerts, 1,000 hosts of load")
                times = latency(settings, root / "latency", alerts)
                cut = statistics.quantiles(times, n=100, method="inclusive")
                print(
                    f"    p50 {statistics.median(times):.2f} s   p99 {cut[98]:.2f} s   "
                    f"max {max(times):.2f} s   (goal p99 <= 15 s)"
                )

            cost = load_settings(bootstrap_servers=broker.bootstrap, topic="bench-backlog")
            ensure_topic(cost)
            start = datetime.now(UTC) - timedelta(hours=2)
            hosts = backlog // 360 + 1
            events = [e for _, e in generate(hosts, start, 3600, 10, 5)][:backlog]
            produce(cost, [(e.host.host_id.encode(), encode(e)) for e in events])
            print(f"(b) {backlog:,} events, one process each, CPU seconds from their /metrics")
            port = free_port()
            env = env_for(cost, root / "cost", SYSMETRICS_METRICS_PORT=str(port))
            evaluator = events_per_cpu_second(
                [SYSMETRICS, "alert"], env, port, "sysmetrics_alert_events_total", backlog
            )
            writer = events_per_cpu_second(
                [SYSMETRICS, "consume"], env, port, "sysmetrics_lake_records_total", backlog
            )
            print(f"    alert evaluator {evaluator:>10,.0f} events per CPU-second")
            print(f"    lake writer     {writer:>10,.0f} events per CPU-second")
            print(f"    evaluator / writer: {evaluator / writer:.2f}x")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
