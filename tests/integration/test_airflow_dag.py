"""The real Airflow 3 DAG, run with ``dag.test()`` against a generated lake and DuckDB."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sysmetrics.lake.compaction import current_manifest
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.fleets import assert_fleet_hour, the_messy_fleet, write_lake
from tests.support.lakes import HOUR14, LakeBuilder, event, steady_host

pytest.importorskip("airflow", reason="install the 'airflow' extra to test the DAG")
DAGS = Path(__file__).resolve().parents[2] / "src" / "sysmetrics" / "orchestration" / "dags"


@pytest.fixture(scope="module")
def airflow_home() -> Iterator[Path]:
    home = Path(os.environ["AIRFLOW_HOME"])  # this test process's own (tests/conftest.py)
    saved = dict(os.environ)
    os.environ.update(
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="True",
    )
    from airflow import settings
    from airflow.utils import db

    assert str(home) in str(settings.SQL_ALCHEMY_CONN), (
        f"Airflow's database is {settings.SQL_ALCHEMY_CONN}, not this test process's own"
    )
    db.resetdb()
    yield home
    os.environ.clear()
    os.environ.update(saved)


def hourly_dag() -> Any:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)  # dag.test() runs the serialized DAG
    return bag.dags["machine_metrics_hourly"]


def use_lake_and_warehouse(monkeypatch: pytest.MonkeyPatch, lake: Path, warehouse: Path) -> None:
    monkeypatch.setenv("SYSMETRICS_LAKE_URL", str(lake))
    monkeypatch.setenv("SYSMETRICS_WAREHOUSE_URL", str(warehouse))
    monkeypatch.setenv("SYSMETRICS_WATERMARK_GRACE_S", "0")
    monkeypatch.setenv("SYSMETRICS_DAG_RETRIES", "0")  # fail fast in tests


def mark_lake_complete(lake: Path) -> None:
    """The writers' watermark says the lake is complete well past the hour."""
    marks = lake / "_watermarks" / "machine_metrics"
    marks.mkdir(parents=True)
    (marks / "p0000.json").write_text(
        '{"partition": 0, "committed_offset": 720, '
        f'"complete_before": "{(HOUR14 + timedelta(hours=2)).isoformat()}"}}'
    )


def test_dag_imports_with_the_expected_tasks(airflow_home: Path) -> None:
    dag = hourly_dag()
    assert set(dag.task_ids) == {
        "wait_for_lake",
        "load",
        "check_raw",
        "aggregate",
        "host_quality",
        "trends",
        "alerts",
        "finish",
        "curate",
    }
    assert dag.get_task("aggregate").retries == 3


def test_dag_run_builds_the_hour_and_is_idempotent(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    warehouse = tmp_path / "warehouse.duckdb"
    use_lake_and_warehouse(monkeypatch, lake, warehouse)
    builder = LakeBuilder(lake)
    builder.add_batch(steady_host("web-1", HOUR14, cpu=25.0, samples=300))
    builder.add_batch(steady_host("gpu-9", HOUR14, cpu=96.0, temp=92.0))
    mark_lake_complete(lake)
    dag = hourly_dag()
    # CronTriggerTimetable(interval=1h): the run triggered at 15:00 covers [14:00, 15:00).
    run = dag.test(logical_date=HOUR14 + timedelta(hours=1))
    assert run.state == "success"

    def tables() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        wh = DuckDBWarehouse(str(warehouse), read_only=True)
        try:
            hourly = [
                tuple(r.values())
                for r in wh.native_query(
                    "SELECT host_id, hour, samples, cpu_avg, cpu_p95 FROM hourly_host_metrics "
                    "ORDER BY host_id"
                )
            ]
            alerts = [
                tuple(r.values())
                for r in wh.native_query("SELECT host_id, rule FROM alerts ORDER BY host_id, rule")
            ]
        finally:
            wh.close()
        return hourly, alerts

    hourly, alerts = tables()
    assert [(h[0], h[1], h[2], h[3]) for h in hourly] == [
        ("gpu-9", datetime(2026, 11, 27, 14, tzinfo=UTC), 360, 96.0),
        ("web-1", datetime(2026, 11, 27, 14, tzinfo=UTC), 300, 25.0),
    ]
    assert alerts == [("gpu-9", "cpu_p95_high"), ("gpu-9", "temperature_high")]
    store = LakeStore(str(lake))
    curated = current_manifest(store, "machine_metrics", HOUR14)
    assert curated is not None and (curated.version, curated.rows) == (1, 660)

    # A late file for hour 14, then the same DAG run again: the incremental path reads only
    # that file, and the hour is recomputed, not appended to.
    builder.add_batch([event("web-1", HOUR14 + timedelta(seconds=5), 25.0, seq=999)])
    rerun = dag.test(logical_date=HOUR14 + timedelta(hours=1))
    assert rerun.state == "success"
    hourly_again, alerts_again = tables()
    assert hourly_again[1][2] == 301 and hourly_again[0] == hourly[0]
    assert alerts_again == alerts
    assert len(hourly_again) == len(hourly)
    wh = DuckDBWarehouse(str(warehouse), read_only=True)
    try:
        runs = wh.native_query("SELECT files_read, rows_added FROM batch_runs ORDER BY run_at")
    finally:
        wh.close()
    assert [(r["files_read"], r["rows_added"]) for r in runs] == [(2, 660), (1, 1)]
    # The curate task compacted the hour again with the late file: a new version.
    curated = current_manifest(store, "machine_metrics", HOUR14)
    assert curated is not None and (curated.version, curated.rows) == (2, 661)


def test_the_last_task_stores_a_complete_hour_in_order_and_deletes_raw_rows_past_retention(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DAG ends as `batch run` does (``hourly.finish``): an hour loaded in pieces while the
    lake was still writing it is stored by host and time once the lake says it is complete,
    and raw rows past SYSMETRICS_WAREHOUSE_RAW_RETENTION_DAYS leave the warehouse."""
    lake, warehouse = tmp_path / "lake", tmp_path / "warehouse.duckdb"
    use_lake_and_warehouse(monkeypatch, lake, warehouse)
    monkeypatch.setenv("SYSMETRICS_WATERMARK_WAIT_S", "0")
    builder = LakeBuilder(lake)
    dag = hourly_dag()

    def run() -> None:
        assert dag.test(logical_date=HOUR14 + timedelta(hours=1)).state == "success"

    def query(statement: str) -> list[tuple[Any, ...]]:
        wh = DuckDBWarehouse(str(warehouse), read_only=True)
        try:
            return [tuple(r.values()) for r in wh.native_query(statement)]
        finally:
            wh.close()

    hosts = [steady_host(f"h{n}", HOUR14, cpu=10.0 + n, samples=120) for n in range(4)]
    for i in range(0, 120, 30):  # four flushes, each with every host, each followed by a run
        builder.add_batch([e for host in hosts for e in host[i : i + 30]])
        run()
    stored = "SELECT host_id, ts FROM raw_metrics ORDER BY rowid"
    before = query(stored)
    assert len(before) == 480 and before != sorted(before)  # appended as the files came
    mark_lake_complete(lake)
    run()
    assert query(stored) == sorted(before)

    monkeypatch.setenv("SYSMETRICS_WAREHOUSE_RAW_RETENTION_DAYS", "1")  # the hour is days old
    run()
    assert query("SELECT COUNT(*) FROM raw_metrics") == [(0,)]
    assert query("SELECT host_id, samples FROM hourly_host_metrics ORDER BY host_id") == [
        (f"h{n}", 120) for n in range(4)
    ]


def test_dag_run_of_a_messy_fleet_succeeds_and_flags_the_odd_hosts(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, warehouse = tmp_path / "lake", tmp_path / "warehouse.duckdb"
    use_lake_and_warehouse(monkeypatch, lake, warehouse)
    fleet = the_messy_fleet()
    write_lake(lake, fleet)
    mark_lake_complete(lake)
    run = hourly_dag().test(logical_date=HOUR14 + timedelta(hours=1))
    assert run.state == "success"
    wh = DuckDBWarehouse(str(warehouse), read_only=True)
    try:
        assert_fleet_hour(wh, fleet)
    finally:
        wh.close()
