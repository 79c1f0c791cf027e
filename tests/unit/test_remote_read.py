"""Remote read's pieces on their own: Prometheus' matcher semantics, which series a query
selects, what reaches the SQL, the size check before reading, and the timeout."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from sysmetrics import prompb
from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import Settings
from sysmetrics.lake.store import LakeStore
from sysmetrics.remote_read import series as catalog
from sysmetrics.remote_read.query import (
    LATEST_MS,
    Deadline,
    Limits,
    Matcher,
    RemoteReadError,
    pushdown,
    read,
    select,
)
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.lakes import HOUR14, LakeBuilder, event, steady_host, write_simulated_fleet


def matcher(kind: int, name: str, value: str) -> Matcher:
    return Matcher.of(prompb.LabelMatcher(type=kind, name=name, value=value))


def test_matchers_follow_prometheus_semantics() -> None:
    anchored = matcher(prompb.MATCH_REGEX, "hostname", "web-.")
    assert anchored.matches("web-1") and not anchored.matches("web-10")  # fully anchored
    assert not anchored.matches("xweb-1")
    assert matcher(prompb.MATCH_NOT_REGEX, "os", "linux|darwin").matches("windows")
    assert matcher(prompb.MATCH_NOT_EQUAL, "gpu", "0").matches("")  # a missing label is ""
    assert matcher(prompb.MATCH_EQUAL, "mountpoint", "").matches("")
    with pytest.raises(RemoteReadError, match="bad regex"):
        matcher(prompb.MATCH_REGEX, "hostname", "(")


def test_regex_matchers_are_re2_as_in_prometheus() -> None:
    """Prometheus (and DuckDB and BigQuery, which run the host labels' regexes pushed down)
    compile matchers with RE2: its syntax, and time linear in the value. Python's ``re`` took
    ~2 s to reject a 24-character name with the pattern below (doubling per character: the
    catalog's names run to 51), and a request could not interrupt it."""
    assert matcher(prompb.MATCH_REGEX, "hostname", "web-[[:digit:]]+").matches("web-12")
    with pytest.raises(RemoteReadError, match=r"bad regex.*invalid perl operator"):
        matcher(prompb.MATCH_REGEX, "hostname", "web-(?=1)")  # a lookahead: no RE2
    backtracking = matcher(prompb.MATCH_REGEX, "__name__", "(.*)+_total")
    names = [*catalog.ALL_NAMES, "x" * 4096, "y" * 4096 + "_total"]
    assert [n for n in names if backtracking.matches(n)] == [
        n for n in names if n.endswith("_total")
    ]


def test_name_matchers_pick_catalog_series() -> None:
    chosen = select([matcher(prompb.MATCH_REGEX, "__name__", "sysmetrics_cpu_.*")])
    assert [s.name for s in chosen.raw] == [
        "sysmetrics_cpu_utilization_percent",
        "sysmetrics_cpu_logical_cores",
    ]
    assert {s.name for s in chosen.hourly} == {
        f"sysmetrics_cpu_utilization_percent_{agg}_1h" for agg in ("avg", "min", "max", "p95")
    }
    assert not chosen.devices
    none = select([matcher(prompb.MATCH_EQUAL, "__name__", "node_load1")])
    assert not none.raw and not none.devices and not none.hourly
    names = list(catalog.ALL_NAMES)
    assert len(names) == len(set(names))  # every series named once


def test_only_host_labels_reach_the_sql_and_values_only_as_parameters() -> None:
    hostile = "x'; DROP TABLE raw_metrics; --"
    where, params = pushdown(
        [
            matcher(prompb.MATCH_EQUAL, "host_id", hostile),
            matcher(prompb.MATCH_REGEX, "hostname", "web-.*"),
            matcher(prompb.MATCH_EQUAL, "__name__", "sysmetrics_load1"),
            matcher(prompb.MATCH_EQUAL, "mountpoint", "/"),
        ]
    )
    assert where == "host_id = @m0 AND REGEXP_CONTAINS(hostname, @m1)"
    assert params == {"m0": hostile, "m1": "^(?:web-.*)$"}
    assert hostile not in where


def request(start_ms: int, end_ms: int, name: str) -> bytes:
    body = prompb.ReadRequest()
    query = body.queries.add(start_timestamp_ms=start_ms, end_timestamp_ms=end_ms)
    query.matchers.add(type=prompb.MATCH_REGEX, name="__name__", value=name)
    return bytes(body.SerializeToString())


def test_a_query_is_sized_from_its_range_before_anything_is_read() -> None:
    wh = DuckDBWarehouse(":memory:")
    wh.ensure_tables()
    year_ms = 365 * 86_400_000
    # An empty warehouse: the range alone decides (1 host assumed, 10-s samples).
    raw_year = request(0, year_ms, "sysmetrics_cpu_utilization_percent")
    assert read(wh, None, "t", raw_year, Limits(max_samples=4_000_000)) is not None
    with pytest.raises(RemoteReadError, match="over the limit") as refused:
        read(wh, None, "t", raw_year, Limits(max_samples=3_000_000))
    assert refused.value.status == 422
    hourly_year = request(0, year_ms, "sysmetrics_cpu_utilization_percent_avg_1h")
    assert read(wh, None, "t", hourly_year, Limits(max_samples=10_000)) is not None
    with pytest.raises(RemoteReadError, match="only the sampled response type"):
        streamed = prompb.ReadRequest(accepted_response_types=[prompb.RESPONSE_STREAMED_XOR_CHUNKS])
        read(wh, None, "t", streamed.SerializeToString(), Limits())
    wh.close()


def test_a_range_past_what_a_date_holds_is_cut_to_the_dates_there_are() -> None:
    """Prometheus asks from its MinTime to its MaxTime (years -292 million to +292 million)
    when its series API is called without a range: sized as the years there are (refused as
    too long for raw samples, 422), never a 500; a range that ends past the year 9999 is
    answered up to it."""
    wh = DuckDBWarehouse(":memory:")
    wh.ensure_tables()
    prometheus_min, prometheus_max = -9_223_309_901_257_974_000, 9_223_309_901_257_974_000
    for name in ("sysmetrics_cpu_utilization_percent", "sysmetrics_cpu_utilization_percent_avg_1h"):
        with pytest.raises(RemoteReadError, match="over the limit") as refused:
            read(wh, None, "t", request(prometheus_min, prometheus_max, name), Limits())
        assert refused.value.status == 422
    last_hour = LATEST_MS - 3_599_999
    for name in ("sysmetrics_cpu_utilization_percent", "sysmetrics_cpu_utilization_percent_avg_1h"):
        answer = read(wh, None, "t", request(last_hour, prometheus_max, name), Limits())
        assert prompb.ReadResponse.FromString(answer).results[0].timeseries == []
    wh.close()


def test_a_statement_past_the_timeout_is_interrupted() -> None:
    wh = DuckDBWarehouse(":memory:")
    began = time.monotonic()
    with pytest.raises(duckdb.InterruptException), Deadline([wh], 0.5) as deadline:
        wh.rows("SELECT COUNT(*) FROM range(1000000000000)")
    assert deadline.expired and time.monotonic() - began < 30
    wh.close()


def test_a_query_returning_more_series_than_the_limit_is_refused() -> None:
    wh = DuckDBWarehouse(":memory:")
    wh.ensure_tables()
    for host in ("a", "b", "c"):
        wh.execute(
            "INSERT INTO {hourly} (host_id, hour, hostname, os, cpu_avg) "
            "VALUES (@host, TIMESTAMP '2026-11-27 10:00:00+00', @host, 'linux', 10.0)",
            host=host,
        )
    day_ms = 1_795_737_600_000  # 2026-11-27T00:00Z
    hourly = request(day_ms, day_ms + 86_400_000, "sysmetrics_cpu_utilization_percent_avg_1h")
    answer = prompb.ReadResponse.FromString(read(wh, None, "t", hourly, Limits(max_series=3)))
    assert len(answer.results[0].timeseries) == 3
    with pytest.raises(RemoteReadError, match="more than 2 series") as refused:
        read(wh, None, "t", hourly, Limits(max_series=2))
    assert refused.value.status == 422
    wh.close()


def series_labels(answer: bytes) -> dict[tuple[tuple[str, str], ...], int]:
    """Each series' labels and how many samples it carries."""
    timeseries = prompb.ReadResponse.FromString(answer).results[0].timeseries
    return {tuple((la.name, la.value) for la in ts.labels): len(ts.samples) for ts in timeseries}


def test_the_series_hint_lists_the_series_a_read_would_give_without_their_samples(
    tmp_path: Path,
) -> None:
    """Prometheus' series and label-values APIs (Grafana's ``label_values(metric, label)``)
    ask with the hint ``func: series``: the same series as a sampled read of the range, from
    the warehouse and from lake hours it does not hold, with no sample and no samples' limit."""
    lake = tmp_path / "lake"
    write_simulated_fleet(lake, 4, HOUR14, 1, seed=71)  # GPU servers, laptops, data volumes
    LakeBuilder(lake).add_batch(steady_host("lake-only", HOUR14 + timedelta(hours=1), 5.0))
    store = LakeStore(str(lake))
    settings = Settings(lake_url=str(lake), warehouse_url=str(tmp_path / "w.duckdb"))
    wh = DuckDBWarehouse(settings.warehouse_url)
    run_hour(settings, wh, store, HOUR14)  # the next hour is in the lake alone
    start = int(HOUR14.timestamp() * 1000)
    end = start + 2 * 3_600_000
    body = prompb.ReadRequest()
    query = body.queries.add(start_timestamp_ms=start, end_timestamp_ms=end)
    query.matchers.add(type=prompb.MATCH_REGEX, name="__name__", value="sysmetrics_.*")
    query.matchers.add(type=prompb.MATCH_NOT_EQUAL, name="host_id", value="sim-71-00001")
    sampled = series_labels(read(wh, store, "machine_metrics", body.SerializeToString(), Limits()))
    query.hints.func = "series"
    hinted = series_labels(
        read(wh, store, "machine_metrics", body.SerializeToString(), Limits(max_samples=10))
    )
    wh.close()
    assert set(hinted) == set(sampled) and set(hinted.values()) == {0}
    names = {dict(labels)["__name__"] for labels in hinted}
    assert {"sysmetrics_gpu_power_watts", "sysmetrics_filesystem_used_percent"} <= names
    assert "sysmetrics_cpu_utilization_percent_avg_1h" in names
    hosts = {dict(labels)["host_id"] for labels in hinted}
    assert "lake-only" in hosts and "sim-71-00001" not in hosts and len(hosts) == 4


def test_a_counter_total_that_steps_down_without_a_reboot_is_served_as_no_reset(
    tmp_path: Path,
) -> None:
    """Prometheus takes a counter's every decrease for a reset and adds the new value to
    ``rate()``: a host's total that steps down because an interface went away (a container's
    veth) drew the host's whole total since boot in one step. Served carried over, such a step is
    no decrease, across the warehouse's hour and the next hour read from the lake alone; a
    reboot (a later boot time) is still a reset."""
    lake = tmp_path / "lake"
    boot = HOUR14 - timedelta(hours=100)
    totals = [5000, 6000, 4000, 4500, 5500, 3000, 3100, 200, 300, 400]  # per minute from 14:55
    events = []
    for host_id in ("k8s-node", "rebooted"):
        for i, sent in enumerate(totals):
            rebooted = host_id == "rebooted" and i >= 7  # counters from zero at 15:02
            events.append(
                event(
                    host_id,
                    HOUR14 + timedelta(minutes=55 + i),
                    20.0,
                    sent=sent,
                    seq=i,
                    boot_time=HOUR14 + timedelta(minutes=61) if rebooted else boot,
                )
            )
    LakeBuilder(lake).add_batch(events)
    store = LakeStore(str(lake))
    settings = Settings(lake_url=str(lake), warehouse_url=str(tmp_path / "w.duckdb"))
    wh = DuckDBWarehouse(settings.warehouse_url)
    run_hour(settings, wh, store, HOUR14)  # 15:00-15:04 are in the lake alone
    start = int(HOUR14.timestamp() * 1000)
    body = prompb.ReadRequest()
    query = body.queries.add(start_timestamp_ms=start, end_timestamp_ms=start + 7_200_000)
    query.matchers.add(
        type=prompb.MATCH_EQUAL, name="__name__", value="sysmetrics_network_transmit_bytes_total"
    )
    answer = prompb.ReadResponse.FromString(
        read(wh, store, "machine_metrics", body.SerializeToString(), Limits())
    )
    wh.close()
    served = {
        {la.name: la.value for la in ts.labels}["host_id"]: [s.value for s in ts.samples]
        for ts in answer.results[0].timeseries
    }
    # 1000 up, 2000 gone (carried), +500, +1000, 2500 gone, +100, 2900 gone, +100, +100
    assert served["k8s-node"] == [5000, 6000, 6000, 6500, 7500, 7500, 7600, 7600, 7700, 7800]
    # the same until the reboot, which stays a reset (its counters count from zero)
    assert served["rebooted"] == [5000, 6000, 6000, 6500, 7500, 7500, 7600, 200, 300, 400]
