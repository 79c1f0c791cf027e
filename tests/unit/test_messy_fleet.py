"""One odd host never stops the fleet's hour: the hourly job on messy fleets, real DuckDB."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import Settings
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.fleets import Fleet, FleetBuilder, assert_fleet_hour, the_messy_fleet, write_lake
from tests.support.lakes import HOUR14


def run_fleet(settings: Settings, fleet: Fleet) -> tuple[DuckDBWarehouse, Any]:
    write_lake(Path(settings.lake_url), fleet)
    wh = DuckDBWarehouse(settings.warehouse_url)
    result = run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14)
    return wh, result


def test_a_messy_fleet_hour_succeeds_and_flags_each_odd_host(settings: Settings) -> None:
    fleet = the_messy_fleet()
    wh, result = run_fleet(settings, fleet)
    try:
        assert result.rows == len(fleet.events)
        assert_fleet_hour(wh, fleet)
        values = {
            (f["host_id"], f["anomaly"]): f["value"]
            for f in wh.rows("SELECT host_id, anomaly, value FROM {quality}")
        }
        assert values[("golden-image", "duplicate_host_id")] == 2
        assert values[("every-5s", "sampling_interval")] == 5
        assert values[("ahead-10m", "clock_skew")] == pytest.approx(600, abs=5)
        assert values[("backwards", "counter_backwards")] == 1
        fast = wh.rows(
            "SELECT samples, completeness_pct, interval_s FROM {hourly} WHERE host_id = 'every-5s'"
        )
        assert fast == [{"samples": 720, "completeness_pct": 100.0, "interval_s": 5.0}]
    finally:
        wh.close()


def test_rerunning_the_messy_hour_gives_identical_tables(settings: Settings) -> None:
    fleet = the_messy_fleet(seed=11)
    wh, _ = run_fleet(settings, fleet)
    try:

        def snapshot() -> list[list[dict[str, Any]]]:
            return [
                wh.native_query(f"SELECT * EXCLUDE (run_at) FROM {t} ORDER BY ALL")
                if t == "batch_runs"
                else wh.native_query(f"SELECT * FROM {t} ORDER BY ALL")
                for t in ("hourly_host_metrics", "host_data_quality", "alerts")
            ]

        before = snapshot()
        run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14)
        assert snapshot() == before
    finally:
        wh.close()


@st.composite
def messy_fleets(draw: st.DrawFn) -> Fleet:
    build = FleetBuilder(HOUR14, random.Random(draw(st.integers(0, 2**32 - 1))))
    for i in range(draw(st.integers(1, 4))):
        build.healthy(f"ok-{i}", partial=draw(st.booleans()))
    for i in range(draw(st.integers(0, 2))):
        build.clones(f"clone-{i}", same_hostname=draw(st.booleans()))
    for i in range(draw(st.integers(0, 2))):
        build.fast(f"fast-{i}", declared=draw(st.booleans()))
    for i in range(draw(st.integers(0, 1))):
        build.clock_ahead(f"ahead-{i}", seconds=draw(st.sampled_from([120.0, 600.0, 1800.0])))
    for i in range(draw(st.integers(0, 2))):
        build.counters_backwards(f"back-{i}")
    return build.fleet


@hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fleet=messy_fleets())
def test_any_messy_fleet_completes_and_healthy_hosts_match(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings, fleet: Fleet
) -> None:
    root = tmp_path_factory.mktemp("fleet")
    run_settings = settings.model_copy(
        update={"lake_url": str(root / "lake"), "warehouse_url": str(root / "wh.duckdb")}
    )
    wh, _ = run_fleet(run_settings, fleet)
    try:
        assert_fleet_hour(wh, fleet)
    finally:
        wh.close()
