"""Prometheus reads sysmetrics' history: Debian's Prometheus 2.42, with no data of its own and
the shipped deploy/prometheus/prometheus.yml (remote_read at the dashboard, with its token),
answers PromQL over a simulated 24-h fleet loaded by the real hourly job; the first hours were
dropped from the warehouse and live only in the curated lake. Every number is checked against
the warehouse's own SQL."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cramjam
import pytest
import uvicorn
from pydantic import SecretStr

from sysmetrics import prompb
from sysmetrics.batch.hourly import prune_raw_rows, run_hour
from sysmetrics.config import Settings
from sysmetrics.dashboard.app import create_app
from sysmetrics.lake.compaction import compact_hour
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.agents import PROMETHEUS, Prometheus
from tests.support.lakes import HOUR14, write_simulated_fleet
from tests.support.ports import free_port

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="Prometheus missing: run scripts/install-system-deps.sh"
)
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
HOURS = 24
START = HOUR14 - timedelta(hours=HOURS - 1)
END = START + timedelta(hours=HOURS)
LAKE_ONLY = 3
"""The first hours: compacted into curated Parquet, then dropped from the warehouse's raw table."""
TOKEN = "remote-read-test-token"


@dataclass
class Served:
    settings: Settings
    url: str
    prometheus: Prometheus
    expected_cpu: dict[str, list[tuple[int, float]]]
    """Every host's raw CPU samples as the warehouse held them before the drop."""

    def warehouse(self) -> DuckDBWarehouse:
        return DuckDBWarehouse(self.settings.warehouse_url, read_only=True)

    def promql(self, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step}
        data = self.prometheus_api("query_range", params)
        return list(data["result"])

    def prometheus_api(self, path: str, params: dict[str, Any]) -> Any:
        url = f"{self.prometheus.url}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(url, timeout=120) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("remote-read")
    settings = Settings(
        data_dir=root / "data",
        lake_url=str(root / "lake"),
        warehouse_url=str(root / "wh.duckdb"),
        dashboard_token=SecretStr(TOKEN),
    )
    # The simulator's fleet (seed 71: Linux, a macOS laptop, a Windows GPU host, a reboot, a
    # host offline for hours that comes back with its samples late), as the writer lays it out.
    write_simulated_fleet(root / "lake", hosts=6, start=START, hours=HOURS, seed=71)
    store = LakeStore(settings.lake_url)
    wh = DuckDBWarehouse(settings.warehouse_url)
    for n in range(HOURS):
        run_hour(settings, wh, store, START + timedelta(hours=n))
    expected_cpu: dict[str, list[tuple[int, float]]] = {}
    for row in wh.rows("SELECT host_id, UNIX_MILLIS(ts) AS t, cpu_pct FROM {raw} ORDER BY ts"):
        expected_cpu.setdefault(row["host_id"], []).append((row["t"], row["cpu_pct"]))
    for n in range(LAKE_ONLY):
        assert compact_hour(store, settings.topic, START + timedelta(hours=n)).version == 1
    # Warehouse retention of 1 day, a day after them: those hours leave the raw table.
    retention = settings.model_copy(update={"warehouse_raw_retention_days": 1})
    now = START + timedelta(hours=LAKE_ONLY + 24)
    assert prune_raw_rows(retention, wh, now) == START + timedelta(hours=LAKE_ONLY - 1)
    held = wh.scalar("SELECT MIN(hour) FROM {raw}")
    wh.close()
    assert held == START + timedelta(hours=LAKE_ONLY)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    (root / "token").write_text(TOKEN)
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    config = config.replace("http://dashboard:8050", url)
    config = config.replace("/run/secrets/dashboard_token", str(root / "token"))
    prometheus = Prometheus(root / "prometheus", config)
    yield Served(settings, url, prometheus, expected_cpu)
    prometheus.stop()
    server.should_exit = True
    thread.join(10)


def by_host(result: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    return {
        r["metric"]["host_id"]: [(round(float(t) * 1000), float(v)) for t, v in r["values"]]
        for r in result
    }


def test_hourly_averages_and_maxima_equal_the_hourly_table(served: Served) -> None:
    # At the last millisecond of each hour [1h] covers exactly that hour's samples
    # (Prometheus 2.x ranges include both ends).
    first, last = START + timedelta(hours=1), END
    window = (first.timestamp() - 0.001, last.timestamp() - 0.001, 3600)
    avg = by_host(served.promql("avg_over_time(sysmetrics_cpu_utilization_percent[1h])", *window))
    top = by_host(served.promql("max_over_time(sysmetrics_cpu_utilization_percent[1h])", *window))
    wh = served.warehouse()
    rows = wh.rows("SELECT host_id, UNIX_MILLIS(hour) AS h, cpu_avg, cpu_max FROM {hourly}")
    wh.close()
    assert len(rows) == 6 * HOURS
    assert set(avg) == set(top) == {r["host_id"] for r in rows}
    for r in rows:
        at = r["h"] + 3_600_000 - 1
        got_avg = dict(avg[r["host_id"]])[at]
        got_max = dict(top[r["host_id"]])[at]
        assert got_avg == pytest.approx(r["cpu_avg"], abs=1e-6), (r, got_avg)
        assert got_max == r["cpu_max"], (r, got_max)


def warehouse_rates(served: Served, column: str, at: list[int], width_ms: int) -> dict[Any, float]:
    """Per host and evaluation time: increase / elapsed over the sample intervals inside
    [t - width, t], each interval's increase as the hourly job computes it (the simulated
    fleet's counters decrease only at a reboot: the new value is the increase)."""
    wh = served.warehouse()
    rows = wh.rows(
        f"""
        SELECT host_id, UNIX_MILLIS(ts) AS t, UNIX_MILLIS(LAG(ts) OVER w) AS prev_t,
          IF({column} < LAG({column}) OVER w, {column}, {column} - LAG({column}) OVER w) AS inc
        FROM {{raw}} WINDOW w AS (PARTITION BY host_id ORDER BY ts)"""
    )
    wh.close()
    rates = {}
    for t in at:
        sums: dict[str, list[float]] = {}
        for r in rows:
            if r["prev_t"] is not None and r["prev_t"] >= t - width_ms and r["t"] <= t:
                inc_dt = sums.setdefault(r["host_id"], [0.0, 0.0])
                inc_dt[0] += r["inc"]
                inc_dt[1] += (r["t"] - r["prev_t"]) / 1000
        for host, (inc, dt) in sums.items():
            rates[host, t] = inc / dt
    return rates


def test_network_rate_equals_the_warehouse_rate_over_the_same_window(served: Served) -> None:
    # Evaluated on sample times: the 5-minute window starts and ends on a sample, so
    # Prometheus does not extrapolate and its rate is increase / 300 s, as the warehouse's.
    # (Off the sample grid Prometheus extrapolates to the window's edges: the same rate for a
    # steady counter, a different one when the counter's slope changes near an edge.)
    first = START + timedelta(hours=LAKE_ONLY + 1)
    points = [_ms(first) + n * 1_800_000 for n in range(2 * (HOURS - LAKE_ONLY - 1))]
    result = by_host(
        served.promql(
            "rate(sysmetrics_network_receive_bytes_total[5m])",
            points[0] / 1000,
            points[-1] / 1000,
            1800,
        )
    )
    expected = warehouse_rates(served, "net_bytes_recv", points, 300_000)
    compared = 0
    for host, samples in result.items():
        for t, value in samples:
            assert value == pytest.approx(expected[host, t], rel=1e-9), (host, t)
            compared += 1
    assert compared == len(expected) >= 6 * len(points) - 6  # an offline host may miss points


def test_a_host_dropped_from_the_warehouse_is_answered_from_the_curated_lake(
    served: Served,
) -> None:
    host = sorted(served.expected_cpu)[0]
    end = START + timedelta(hours=LAKE_ONLY + 1)
    result = by_host(
        served.promql(
            f'sysmetrics_cpu_utilization_percent{{host_id="{host}"}}',
            START.timestamp(),
            end.timestamp() - 10,
            10,
        )
    )
    expected = [s for s in served.expected_cpu[host] if s[0] < _ms(end)]
    assert len(expected) == 360 * (LAKE_ONLY + 1)
    assert result == {host: expected}  # lake hours and the warehouse's hour, sample for sample


def series_of(served: Served, match: str) -> set[tuple[str, str, str]]:
    params = {"match[]": match, "start": START.timestamp(), "end": END.timestamp()}
    found = served.prometheus_api("series", params)
    return {(s["__name__"], s["host_id"], s.get("mountpoint", "")) for s in found}


def test_matchers_select_exactly_the_series_the_warehouse_has(served: Served) -> None:
    wh = served.warehouse()
    hosts = wh.rows("SELECT DISTINCT host_id, hostname, os FROM {hourly}")
    mounts = {
        (r["host_id"], disk["mountpoint"])
        for r in wh.rows("SELECT DISTINCT host_id, disks_json FROM {raw}")
        for disk in json.loads(r["disks_json"])
    }
    wh.close()
    assert len(hosts) == 6 and len({h["os"] for h in hosts}) == 3

    regex = series_of(served, '{__name__="sysmetrics_load1", hostname=~"sim-host-0000[0-2]"}')
    assert regex == {
        ("sysmetrics_load1", h["host_id"], "")
        for h in hosts
        if re.fullmatch("sim-host-0000[0-2]", h["hostname"])
    }
    assert len(regex) == 3

    negative = series_of(served, '{__name__="sysmetrics_memory_used_percent", os!="linux"}')
    assert negative == {
        ("sysmetrics_memory_used_percent", h["host_id"], "") for h in hosts if h["os"] != "linux"
    }
    assert len(negative) == 2

    families = series_of(
        served, '{__name__=~"sysmetrics_(cpu_utilization|filesystem_used)_percent"}'
    )
    assert families == {("sysmetrics_cpu_utilization_percent", h["host_id"], "") for h in hosts} | {
        ("sysmetrics_filesystem_used_percent", host, mount) for host, mount in mounts
    }
    assert len(mounts) > len(hosts)  # some hosts have a data volume


def post_read(served: Served, body: bytes, token: str = TOKEN) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{served.url}/api/v1/read",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Encoding": "snappy"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def read_request(start: datetime, end: datetime, **matchers: str) -> bytes:
    request = prompb.ReadRequest()
    query = request.queries.add(start_timestamp_ms=_ms(start), end_timestamp_ms=_ms(end))
    for name, value in matchers.items():
        query.matchers.add(type=prompb.MATCH_REGEX, name=name, value=value)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(served: Served) -> None:
    status, body = post_read(served, b"plain text, not snappy")
    assert status == 400 and b"not snappy" in body, body
    status, body = post_read(served, bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff garbage")))
    assert status == 400 and b"not a protobuf ReadRequest" in body, body
    ten_years = read_request(END - timedelta(days=3650), END, __name__="sysmetrics_.*")
    status, body = post_read(served, ten_years)
    assert status == 422, body
    assert b"over the limit" in body and b"_1h series" in body, body
    status, body = post_read(served, read_request(START, END), token="wrong")
    assert status == 401

    status, body = post_read(
        served, read_request(END - timedelta(hours=1), END, __name__="sysmetrics_load1")
    )
    assert status == 200
    response = prompb.ReadResponse.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    assert len(response.results[0].timeseries) == 6
    assert all(len(ts.samples) == 360 for ts in response.results[0].timeseries)


def test_every_grafana_panel_returns_data(served: Served) -> None:
    dashboard = json.loads(
        (DEPLOY / "grafana" / "dashboards" / "sysmetrics-fleet.json").read_text()
    )
    variable = dashboard["templating"]["list"][0]
    # query_result(): an instant query over the dashboard's range, as Grafana runs it.
    query = re.fullmatch(r"query_result\((.*)\)", variable["query"]["query"])
    assert query is not None
    found = served.prometheus_api(
        "query", {"query": query[1].replace("$__range", "24h"), "time": END.timestamp()}
    )["result"]
    pattern = re.compile(variable["regex"].strip("/"))
    lines = ["{" + ",".join(f'{k}="{v}"' for k, v in r["metric"].items()) + "}" for r in found]
    values = [m[1] for line in lines if (m := pattern.search(line))]
    wh = served.warehouse()
    hostnames = sorted(r["hostname"] for r in wh.rows("SELECT DISTINCT hostname FROM {hourly}"))
    wh.close()
    assert sorted(values) == hostnames

    targets = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] == "timeseries"
        for target in panel["targets"]
    ]
    shown = " ".join(expr for _, expr in targets)
    from sysmetrics.remote_read.series import DEVICES, RAW

    # Every family the events carry has a panel.
    assert [s.name for s in (*RAW, *DEVICES) if s.name not in shown] == [
        "sysmetrics_cpu_logical_cores",
        "sysmetrics_gpu_count",
        "sysmetrics_battery_plugged",
    ]
    for title, expr in targets:
        expr = expr.replace("$__rate_interval", "1m")
        # A host panel shows data for the hosts that have the family (GPUs, a battery).
        found = any(
            served.promql(expr.replace("$host", host), START.timestamp(), END.timestamp(), 600)
            for host in (hostnames if "$host" in expr else [""])
        )
        assert found, (title, expr)


def test_prometheus_series_api_without_a_range_lists_every_host(
    served: Served,
) -> None:
    """Prometheus' series API called without a range asks remote read from its MinTime to its
    MaxTime with the hint ``func: series``: a 500 and a traceback in the dashboard's log before
    2026-12-05 ("year -292273086 is out of range"), then a 422 the same day (sized as samples:
    "narrow the range"); now the series, from counts of the values each host holds."""
    wh = served.warehouse()
    hosts = wh.rows("SELECT DISTINCT host_id, hostname FROM {hourly}")
    wh.close()
    url = f"{served.prometheus.url}/api/v1/series?" + urllib.parse.urlencode(
        {"match[]": "sysmetrics_load1"}
    )
    with urllib.request.urlopen(url, timeout=120) as response:
        body = json.loads(response.read())
    assert body["status"] == "success" and not body.get("warnings"), body
    assert {s["host_id"] for s in body["data"]} == {h["host_id"] for h in hosts}
    # Per device too, and a week of the fleet's series is counts, not 360,000 samples a host.
    mounts = served.prometheus_api(
        "series",
        {
            "match[]": "sysmetrics_filesystem_used_percent",
            "start": (END - timedelta(days=7)).timestamp(),
            "end": END.timestamp(),
        },
    )
    assert {m["hostname"] for m in mounts} == {h["hostname"] for h in hosts}
    assert all(m["mountpoint"] for m in mounts) and len(mounts) > len(hosts)
