"""The fleet page scales: server-side search, filters, sort by any column and paging, with the
state in the URL (no JavaScript needed)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import duckdb
import msgspec
import pytest
from starlette.testclient import TestClient

from sysmetrics.batch.hourly import record_retirements, run_hour
from sysmetrics.config import Settings
from sysmetrics.dashboard.app import ALERT_HOURS_MAX, create_app
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.lakes import HOUR14, LakeBuilder, steady_host


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    root = tmp_path_factory.mktemp("fleet")
    settings = Settings(lake_url=str(root / "lake"), warehouse_url=str(root / "wh.duckdb"))
    lake = LakeBuilder(Path(settings.lake_url))
    for i in range(60):  # the last five run hot (> 90 % CPU: an alert each)
        cpu = float(i) if i < 55 else 36.0 + i
        lake.add_batch(steady_host(f"node-{i:02d}", HOUR14, cpu=cpu))
    # A host that went silent five hours ago: older than the raw window the page reads, so
    # its row comes from its last hourly aggregate.
    lake.add_batch(steady_host("zz-quiet", HOUR14 - timedelta(hours=5), cpu=12.5, temp=44.0))
    wh = DuckDBWarehouse(settings.warehouse_url)
    run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14 - timedelta(hours=5))
    run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14)
    wh.close()
    return TestClient(create_app(settings, now=lambda: HOUR14 + timedelta(minutes=59, seconds=55)))


def test_a_host_silent_for_hours_is_listed_from_its_hourly_aggregate(web: TestClient) -> None:
    page = web.get("/?silent=1").text
    assert hosts(page) == ["zz-quiet"] and "12.5" in page and "44" in page
    assert "<b>60</b> reporting" in web.get("/").text


def hosts(html: str) -> list[str]:
    return re.findall(r'<div class="sub">([^<]+)</div>', html)


def test_paging_keeps_every_host_once(web: TestClient) -> None:
    first = web.get("/?per=25").text
    assert hosts(first) == [f"node-{i:02d}" for i in range(25)]
    assert "page 1 of 3" in first and "61 matching" in first
    assert 'href="/?sort=host&amp;dir=asc&amp;per=25&amp;page=2"' in first
    seen = [h for p in (1, 2, 3) for h in hosts(web.get(f"/?per=25&page={p}").text)]
    assert sorted(seen) == [f"node-{i:02d}" for i in range(60)] + ["zz-quiet"]


def test_sort_by_any_column_across_pages(web: TestClient) -> None:
    top = hosts(web.get("/?sort=cpu&dir=desc&per=25").text)
    assert top[:3] == ["node-59", "node-58", "node-57"]
    bottom = hosts(web.get("/?sort=cpu&dir=asc&per=25&page=3").text)
    assert bottom[-1] == "node-59"
    assert hosts(web.get("/?sort=nonsense; DROP TABLE raw_metrics").text)[0] == "node-00"


def test_search_and_filters(web: TestClient) -> None:
    assert hosts(web.get("/?q=NODE-1").text) == [f"node-1{i}" for i in range(10)]
    empty = web.get("/?os=windows").text
    assert hosts(empty) == [] and "No host matches" in empty
    # The hot five, and the host that went silent (alerted in the last 24 h).
    with_alerts = hosts(web.get("/?alerts=1").text)
    assert with_alerts == [f"node-{i}" for i in range(55, 60)] + ["zz-quiet"]
    assert hosts(web.get("/?alerts=1&q=node-57").text) == ["node-57"]
    assert "1 matching" in web.get("/?silent=1").text


def test_summary_counts_and_worst_hosts(web: TestClient) -> None:
    summary = web.get("/").text.split('id="summary"')[1].split("</section>")[0]
    assert "<b>60</b> reporting" in summary and "<b>1</b> silent" in summary
    assert summary.index("node-59") < summary.index("node-58")  # highest CPU first


def test_a_host_retired_after_its_last_sample_is_not_counted_silent(tmp_path: Path) -> None:
    """Three hosts stop at 13:59:50: one retired after its last sample (a target Prometheus
    dropped) is shown retired, not silent; one retired before it and one never retired are
    silent."""
    settings = Settings(lake_url=str(tmp_path / "lake"), warehouse_url=str(tmp_path / "wh.duckdb"))
    lake = LakeBuilder(Path(settings.lake_url))
    for host in ("scaled-down", "dead", "early"):
        lake.add_batch(steady_host(host, HOUR14 - timedelta(hours=1), cpu=10.0))
    lake.add_batch(steady_host("web", HOUR14, cpu=10.0))
    wh = DuckDBWarehouse(settings.warehouse_url)
    run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14 - timedelta(hours=1))
    run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14)
    last_ms = int(HOUR14.timestamp() * 1000) - 10_000
    record_retirements(wh, [("scaled-down", last_ms + 21_000), ("early", last_ms - 1000)])
    wh.close()
    web = TestClient(create_app(settings, now=lambda: HOUR14 + timedelta(minutes=59, seconds=55)))
    page = web.get("/").text
    summary = page.split('id="summary"')[1].split("</section>")[0]
    assert "<b>1</b> reporting" in summary and "<b>2</b> silent" in summary
    assert "<b>1</b> retired" in summary
    assert hosts(web.get("/?silent=1").text) == ["dead", "early"]
    row = page.split('<div class="sub">scaled-down</div>')[1].split("</tr>")[0]
    assert 'class="retired">retired<' in row


def test_a_dashboard_upgraded_before_the_hourly_job_reads_a_table_it_adds_as_empty(
    tmp_path: Path,
) -> None:
    """A warehouse an older hourly job wrote has no ``retired_hosts``: the fleet page shows its
    hosts (none retired), and the retirement once the new hourly job has created the table."""
    settings = Settings(lake_url=str(tmp_path / "lake"), warehouse_url=str(tmp_path / "wh.duckdb"))
    lake = LakeBuilder(Path(settings.lake_url))
    lake.add_batch(steady_host("scaled-down", HOUR14 - timedelta(hours=1), cpu=10.0))
    lake.add_batch(steady_host("web", HOUR14, cpu=10.0))
    wh = DuckDBWarehouse(settings.warehouse_url)
    run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14 - timedelta(hours=1))
    run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14)
    wh.execute("DROP TABLE {retired}")
    wh.close()
    web = TestClient(create_app(settings, now=lambda: HOUR14 + timedelta(minutes=59, seconds=55)))
    page = web.get("/")
    assert page.status_code == 200
    summary = page.text.split('id="summary"')[1].split("</section>")[0]
    assert "<b>1</b> reporting" in summary and "<b>1</b> silent" in summary
    assert "retired" not in summary
    assert hosts(web.get("/?silent=1").text) == ["scaled-down"]

    wh = DuckDBWarehouse(settings.warehouse_url)
    wh.ensure_tables()  # the new hourly job's first run
    last_ms = int(HOUR14.timestamp() * 1000) - 10_000
    record_retirements(wh, [("scaled-down", last_ms + 21_000)])
    wh.close()
    summary = web.get("/").text.split('id="summary"')[1].split("</section>")[0]
    assert "<b>1</b> retired" in summary and "<b>0</b> silent" in summary


def test_hosts_are_shown_and_filtered_by_what_sends_them_even_before_the_hourly_job_upgrades(
    tmp_path: Path,
) -> None:
    settings = Settings(lake_url=str(tmp_path / "lake"), warehouse_url=str(tmp_path / "wh.duckdb"))
    lake = LakeBuilder(Path(settings.lake_url))
    lake.add_batch(steady_host("agent-1", HOUR14, cpu=10.0))
    scraped = steady_host("node-1", HOUR14, cpu=20.0)
    lake.add_batch(
        [msgspec.structs.replace(e, source="node_exporter", sender="prom-a") for e in scraped]
    )
    wh = DuckDBWarehouse(settings.warehouse_url)
    run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14)
    wh.close()
    web = TestClient(create_app(settings, now=lambda: HOUR14 + timedelta(minutes=59, seconds=55)))
    page = web.get("/").text
    assert '<option value="node_exporter" >node_exporter</option>' in page
    assert hosts(web.get("/?source=node_exporter").text) == ["node-1"]
    assert hosts(web.get("/?source=sysmetrics").text) == ["agent-1"]
    assert hosts(web.get("/?sort=source&dir=desc").text) == ["agent-1", "node-1"]
    assert "Sent by node_exporter via prom-a" in web.get("/host?id=node-1").text

    # The tables as an older hourly job made them (no source or sender): the pages read the
    # columns as empty until the new job adds them.
    con = duckdb.connect(settings.warehouse_url)
    for table in ("raw_metrics", "hourly_host_metrics"):
        for column in ("source", "sender"):
            con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    con.close()
    page = web.get("/")
    assert page.status_code == 200 and hosts(page.text) == ["agent-1", "node-1"]
    assert hosts(web.get("/?source=node_exporter").text) == []
    host = web.get("/host?id=node-1")
    assert host.status_code == 200 and "Sent by" not in host.text


def test_the_alerts_page_pages_and_keeps_its_filters(tmp_path: Path) -> None:
    settings = Settings(lake_url=str(tmp_path / "lake"), warehouse_url=str(tmp_path / "wh.duckdb"))
    wh = DuckDBWarehouse(settings.warehouse_url)
    wh.ensure_tables()
    for n in range(60):  # 60 hours of one warning on one host, and a critical one beside
        hour = HOUR14 - timedelta(hours=n)
        for host, severity in (("disk-1", "warning"), ("hot-1", "critical")):
            wh.execute(
                "INSERT INTO {alerts} (hour, host_id, hostname, rule, severity, value, threshold) "
                "VALUES (@hour, @host, @host, 'disk_full', @severity, 95.0, 90.0)",
                hour=hour,
                host=host,
                severity=severity,
            )
    wh.close()
    web = TestClient(create_app(settings, now=lambda: HOUR14 + timedelta(minutes=30)))

    def shown(html: str) -> list[str]:
        return re.findall(r'<tr class="sev-(\w+)"><td>([^<]+)</td>', html)

    first = web.get("/alerts?severity=warning&per=25").text
    assert "60 in the last 168 h" in first and "page 1 of 3" in first
    assert 'href="/alerts?severity=warning&amp;hours=168&amp;per=25&amp;page=2"' in first
    pages = [shown(web.get(f"/alerts?severity=warning&per=25&page={p}").text) for p in (1, 2, 3)]
    assert [len(p) for p in pages] == [25, 25, 10]
    rows = [row for p in pages for row in p]
    assert {severity for severity, _ in rows} == {"warning"} and len(set(rows)) == 60
    assert rows[0][1] == f"{HOUR14:%Y-%m-%d %H}:00"  # newest first
    assert "120 in the last 168 h" in web.get("/alerts").text


def test_before_the_first_hourly_run_an_empty_state_and_an_unreadable_warehouse_a_503(
    settings: Settings,
) -> None:
    client = TestClient(create_app(settings))
    empty = client.get("/")
    assert empty.status_code == 200 and "Nothing to show yet" in empty.text
    assert "hourly job has not run" in empty.text
    Path(settings.warehouse_url).write_bytes(b"not a DuckDB file " * 512)  # a damaged file
    for path, params in (("/", {}), ("/host", {"id": "web"})):
        page = client.get(path, params=params)
        assert page.status_code == 503, page.text
        assert "The warehouse cannot be read" in page.text and "Nothing to show" not in page.text


def test_a_fleet_silent_for_a_day_and_odd_numbers_in_the_url_get_pages_not_500s(
    tmp_path: Path,
) -> None:
    """A fleet no host of which was heard for a day (a lab shut down over a long weekend):
    the fleet page counts none reporting; DuckDB's COUNTIF and ARRAY_AGG of no rows are NULL
    (BigQuery's 0 and an empty array), which was a 500. So were numbers in the URL Python's
    ``int`` refuses though ``str.isdigit`` takes them ("²"), and a look-back past any date."""
    settings = Settings(lake_url=str(tmp_path / "lake"), warehouse_url=str(tmp_path / "wh.duckdb"))
    LakeBuilder(Path(settings.lake_url)).add_batch(steady_host("web-1", HOUR14, cpu=99.0))
    wh = DuckDBWarehouse(settings.warehouse_url)
    run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14)
    wh.close()
    client = TestClient(create_app(settings, now=lambda: HOUR14 + timedelta(days=3)))
    fleet = client.get("/")
    assert fleet.status_code == 200, fleet.text
    assert "<b>0</b> reporting" in fleet.text and hosts(fleet.text) == []
    for path in ("/?page=²", "/?per=²", "/?page=99999999999999999999999", "/alerts?per=²"):
        assert client.get(path).status_code == 200, path
    century = client.get("/alerts?hours=99999999999")
    assert century.status_code == 200 and f"in the last {ALERT_HOURS_MAX} h" in century.text
