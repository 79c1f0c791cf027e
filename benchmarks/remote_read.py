"""Prometheus remote read at fleet scale: the real `sysmetrics dashboard` process serving
`/api/v1/read` over a 10,000-host DuckDB warehouse (24 h of raw samples at 10 s = 86.4 M rows,
30 days of hourly aggregates = 7.2 M rows), and Debian's Prometheus 2.42 reading it with
`remote_read`. Timed, median of --rounds:

  (a) the remote-read request itself (what Prometheus sends for the selector),
  (b) the PromQL query through that Prometheus (HTTP API, client side),

for one host over 24 h at raw resolution (`sysmetrics_cpu_utilization_percent`, and every raw
family of the host) and over 30 days from the hourly aggregates (`…_avg_1h`). Baseline in the
same run: the same PromQL against a Prometheus holding the same samples in its own TSDB
(`promtool tsdb create-blocks-from openmetrics`, the queried host plus --tsdb-hosts others).

The warehouse is generated in SQL with the real tables (`ensure_tables`), hour by hour as the
hourly job leaves them (complete hours stored by host and time, the last hour's hosts
interleaved as flushes append them); values are synthetic (waves and ramps), event ids empty:
no query here reads them.

    .venv/bin/python benchmarks/remote_read.py [--hosts 10000] [--rounds 5]
        (goal: each request and each PromQL query <= 1 s on this machine)
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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cramjam
import duckdb

from sysmetrics import prompb
from sysmetrics.stream.broker import stop_pid
from sysmetrics.timeutil import hour_floor
from sysmetrics.warehouse.duckdb import DuckDBWarehouse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.agents import PROMETHEUS, Prometheus
from tests.support.ports import free_port
from tests.support.waiting import wait_for

PROMTOOL = shutil.which("promtool")
HOST = "bench-00042"
"""The queried host (the fleet's 43rd of at least 43)."""
RAW_CPU = f'sysmetrics_cpu_utilization_percent{{host_id="{HOST}"}}'
RAW_ALL = f'{{__name__=~"sysmetrics_.*", __name__!~".*_1h", host_id="{HOST}"}}'
HOURLY_CPU = f'sysmetrics_cpu_utilization_percent_avg_1h{{host_id="{HOST}"}}'

RAW_ROWS = """
INSERT INTO raw_metrics (event_id, ts, hour, host_id, hostname, os, arch, cpu_pct, load_1m,
  logical_cores, mem_used_pct, mem_used_bytes, mem_total_bytes, swap_used_pct, disk_used_pct,
  disk_used_bytes, disk_total_bytes, disk_read_bytes, disk_write_bytes, net_bytes_sent,
  net_bytes_recv, temp_max_celsius, gpu_count, interval_s, disks_json, gpus_json)
SELECT '', ts, $hour, host_id, 'host-' || lpad(h::VARCHAR, 5, '0'),
  CASE WHEN h % 10 = 0 THEN 'windows' ELSE 'linux' END, 'x86_64',
  round(50 + 40 * sin(k / 60.0 + h), 2), round(1 + sin(k / 90.0), 2), 8,
  round(60 + 20 * cos(k / 120.0 + h), 2), 8000000000 + k * 1000, 16000000000, 2.5,
  round(40 + h % 40 + k / 100000.0, 2), 400000000000, 1000000000000,
  h * 1000000 + k * 4096, h * 1000000 + k * 8192, h * 1000000 + k * 12345,
  h * 1000000 + k * 54321, round(55 + 10 * sin(k / 30.0), 1), 0, 10.0,
  '[{"mountpoint": "/", "used_pct": ' || round(40 + h % 40, 2) || '}]', '[]'
FROM (
  SELECT s, h, $hour + to_seconds(s * 10) AS ts, $k0 + s AS k,
    'bench-' || lpad(h::VARCHAR, 5, '0') AS host_id
  FROM range(360) AS a(s), range($hosts) AS b(h)
)
ORDER BY {order}
"""
HOURLY_ROWS = """
INSERT INTO hourly_host_metrics (host_id, hour, hostname, samples, completeness_pct, cpu_avg,
  cpu_min, cpu_max, cpu_p95, mem_avg, mem_max, os)
SELECT 'bench-' || lpad(h::VARCHAR, 5, '0'), $first + to_hours(n),
  'host-' || lpad(h::VARCHAR, 5, '0'),
  360, 100.0, round(50 + 30 * sin(n / 12.0 + h), 6), 5.0, 99.0, 90.0,
  round(60 + 10 * cos(n / 24.0), 6), 95.0, 'linux'
FROM range($hours) AS a(n), range($hosts) AS b(h)
ORDER BY n, h
"""


def build(path: Path, hosts: int, end: datetime, raw_hours: int, hourly_days: int) -> None:
    wh = DuckDBWarehouse(str(path))
    wh.ensure_tables()
    wh.close()
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    began = time.perf_counter()
    for n in range(raw_hours):
        hour = end - timedelta(hours=raw_hours - n)
        # As the hourly job leaves them: complete hours by host, the live hour as it came.
        order = "s, h" if n == raw_hours - 1 else "h, s"
        con.execute(
            RAW_ROWS.replace("{order}", order), {"hour": hour, "k0": n * 360, "hosts": hosts}
        )
        print(f"  raw hour {n + 1}/{raw_hours} ({time.perf_counter() - began:.0f} s)", flush=True)
    first = end - timedelta(days=hourly_days)
    con.execute(HOURLY_ROWS, {"first": first, "hours": hourly_days * 24, "hosts": hosts})
    raw = con.execute("SELECT COUNT(*) FROM raw_metrics").fetchone()
    hourly = con.execute("SELECT COUNT(*) FROM hourly_host_metrics").fetchone()
    con.close()
    size = path.stat().st_size / 2**30
    print(
        f"warehouse: {raw[0]:,} raw rows, {hourly[0]:,} hourly rows, {size:.1f} GiB, "
        f"{time.perf_counter() - began:.0f} s to build"
    )


def openmetrics(path: Path, hosts: list[str], start: datetime, end: datetime) -> Path:
    """The same samples as OpenMetrics text for promtool: raw and hourly CPU of these hosts,
    every raw family of the queried host."""
    from sysmetrics.remote_read.series import RAW

    con = duckdb.connect(str(path), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    out = path.parent / "same-data.om"
    with out.open("w") as f:
        for series in RAW:
            rows = con.execute(
                f"SELECT host_id, hostname, os, epoch(ts), {series.column} FROM raw_metrics "
                "WHERE host_id IN (SELECT UNNEST($hosts)) AND ts >= $start AND ts <= $end "
                f"AND {series.column} IS NOT NULL ORDER BY host_id, ts",
                {
                    "hosts": hosts if series.column == "cpu_pct" else [HOST],
                    "start": start,
                    "end": end,
                },
            ).fetchall()
            kind = "counter" if series.kind == "counter" else "gauge"
            name = series.name.removesuffix("_total") if kind == "counter" else series.name
            f.write(f"# TYPE {name} {kind}\n")
            for host_id, hostname, os_, t, v in rows:
                labels = f'host_id="{host_id}",hostname="{hostname}",os="{os_}"'
                f.write(f"{series.name}{{{labels}}} {float(v)} {t:.3f}\n")
        f.write("# TYPE sysmetrics_filesystem_used_percent gauge\n")
        for hostname, os_, t, disks in con.execute(
            "SELECT hostname, os, epoch(ts), disks_json FROM raw_metrics WHERE host_id = $host "
            "AND ts >= $start AND ts <= $end ORDER BY ts",
            {"host": HOST, "start": start, "end": end},
        ).fetchall():
            for disk in json.loads(disks):
                labels = f'host_id="{HOST}",hostname="{hostname}",mountpoint="{disk["mountpoint"]}"'
                labels += f',os="{os_}"'
                f.write(
                    f"sysmetrics_filesystem_used_percent{{{labels}}} {disk['used_pct']} {t:.3f}\n"
                )
        rows = con.execute(
            "SELECT host_id, hostname, os, epoch(hour) + 3600, cpu_avg FROM hourly_host_metrics "
            "WHERE host_id IN (SELECT UNNEST($hosts)) ORDER BY host_id, hour",
            {"hosts": hosts},
        ).fetchall()
        f.write("# TYPE sysmetrics_cpu_utilization_percent_avg_1h gauge\n")
        for host_id, hostname, os_, t, v in rows:
            labels = f'host_id="{host_id}",hostname="{hostname}",os="{os_}"'
            f.write(f"sysmetrics_cpu_utilization_percent_avg_1h{{{labels}}} {v} {t:.3f}\n")
        f.write("# EOF\n")
    con.close()
    return out


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(rounds):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def remote_read(
    url: str,
    token: str,
    selector_matchers: list[tuple[int, str, str]],
    start: datetime,
    end: datetime,
) -> int:
    request = prompb.ReadRequest()
    query = request.queries.add(
        start_timestamp_ms=int(start.timestamp() * 1000),
        end_timestamp_ms=int(end.timestamp() * 1000),
    )
    for kind, name, value in selector_matchers:
        query.matchers.add(type=kind, name=name, value=value)
    body = bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
    http = urllib.request.Request(
        f"{url}/api/v1/read",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Encoding": "snappy"},
    )
    with urllib.request.urlopen(http, timeout=120) as response:
        answer = prompb.ReadResponse.FromString(
            bytes(cramjam.snappy.decompress_raw(response.read()))
        )
    return sum(len(ts.samples) for ts in answer.results[0].timeseries)


def promql(base: str, query: str, start: datetime, end: datetime, step: int) -> int:
    params = urllib.parse.urlencode(
        {"query": query, "start": start.timestamp(), "end": end.timestamp(), "step": step}
    )
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=120) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return sum(len(r["values"]) for r in body["data"]["result"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--raw-hours", type=int, default=24)
    parser.add_argument("--hourly-days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tsdb-hosts", type=int, default=100)
    parser.add_argument(
        "--keep", type=Path, help="build the warehouse here once and reuse it in later runs"
    )
    args = parser.parse_args()
    assert PROMETHEUS and PROMTOOL, "Prometheus missing: run scripts/install-system-deps.sh"
    root = Path(tempfile.mkdtemp(prefix="sysmetrics-remote-read-"))
    end = hour_floor(datetime.now(UTC))
    day, month = end - timedelta(hours=args.raw_hours), end - timedelta(days=args.hourly_days)
    warehouse = (args.keep or root) / "warehouse.duckdb"
    if warehouse.exists():
        con = duckdb.connect(str(warehouse), read_only=True)
        end = con.execute("SELECT MAX(hour) + INTERVAL 1 HOUR FROM raw_metrics").fetchone()[0]
        con.close()
        day, month = end - timedelta(hours=args.raw_hours), end - timedelta(days=args.hourly_days)
    else:
        warehouse.parent.mkdir(parents=True, exist_ok=True)
        build(warehouse, args.hosts, end, args.raw_hours, args.hourly_days)

    token, port = "bench-token", free_port()
    env = {
        **os.environ,
        "SYSMETRICS_WAREHOUSE_URL": str(warehouse),
        "SYSMETRICS_LAKE_URL": str(root / "lake"),
        "SYSMETRICS_DATA_DIR": str(root / "data"),
        "SYSMETRICS_DASHBOARD_TOKEN": token,
        "SYSMETRICS_DASHBOARD_PORT": str(port),
    }
    sysmetrics = Path(sys.executable).parent / "sysmetrics"
    dashboard = subprocess.Popen([str(sysmetrics), "dashboard"], env=env)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(f"{url}/healthz"), 60, "dashboard")
    (root / "token").write_text(token)
    ours = Prometheus(
        root / "prometheus-remote-read",
        f"""remote_read:
  - url: {url}/api/v1/read
    read_recent: true
    authorization: {{credentials_file: {root / "token"}}}
""",
    )
    hosts = sorted({HOST} | {f"bench-{n:05d}" for n in range(args.tsdb_hosts)})
    om = openmetrics(warehouse, hosts, day, end)
    tsdb = root / "prometheus-tsdb" / "tsdb"
    tsdb.mkdir(parents=True)
    began, paths = time.perf_counter(), (str(om), str(tsdb))
    subprocess.run(
        # One pass per block: blocks of 31 days, not 360 passes of 2 h for 30 days.
        [
            PROMTOOL,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration=744h",
            *paths,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"baseline TSDB: {len(hosts)} hosts, promtool took {time.perf_counter() - began:.0f} s")
    baseline = Prometheus(
        root / "prometheus-tsdb",
        "global: {scrape_interval: 1m}\n",
        flags=("--storage.tsdb.retention.time=10y",),
    )
    try:
        lines = []
        cases = [
            (
                "one host, 24 h raw, CPU",
                [(0, "__name__", "sysmetrics_cpu_utilization_percent"), (0, "host_id", HOST)],
                RAW_CPU,
                day,
                60,
            ),
            (
                "one host, 24 h raw, every raw family",
                [(2, "__name__", "sysmetrics_.*"), (3, "__name__", ".*_1h"), (0, "host_id", HOST)],
                RAW_ALL,
                day,
                60,
            ),
            (
                "one host, 30 days hourly",
                [
                    (0, "__name__", "sysmetrics_cpu_utilization_percent_avg_1h"),
                    (0, "host_id", HOST),
                ],
                HOURLY_CPU,
                month,
                3600,
            ),
        ]
        for title, matchers, query, start, step in cases:
            read_s, samples = timed(
                lambda m=matchers, s=start: remote_read(url, token, m, s, end), args.rounds
            )
            ours_s, points = timed(
                lambda q=query, s=start, st=step: promql(ours.url, q, s, end, st), args.rounds
            )
            base_s, base_points = timed(
                lambda q=query, s=start, st=step: promql(baseline.url, q, s, end, st), args.rounds
            )
            assert samples > 0 and points == base_points > 0, (title, points, base_points)
            lines.append(
                f"{title}: remote-read request {read_s * 1000:.0f} ms ({samples:,} samples); "
                f"PromQL through Prometheus {ours_s * 1000:.0f} ms ({points:,} points) vs the "
                f"same query on Prometheus' own TSDB {base_s * 1000:.0f} ms "
                f"(**{ours_s / base_s:.1f}x**)"
            )
        print(f"\n{args.hosts:,} hosts, median of {args.rounds}:")
        for line in lines:
            print("  " + line)
    finally:
        ours.stop()
        baseline.stop()
        stop_pid(dashboard.pid, timeout_s=30)
        shutil.rmtree(root, ignore_errors=True)


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
