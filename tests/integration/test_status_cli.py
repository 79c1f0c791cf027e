"""`sysmetrics status` tells the administrator which host ids are shared by several machines."""

from __future__ import annotations

import os
import random
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import Settings
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.fleets import FleetBuilder, write_lake
from tests.support.kafka_io import SYSMETRICS


def test_status_lists_host_ids_shared_by_several_machines(settings: Settings) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    build = FleetBuilder(hour, random.Random(3))
    build.healthy("web-1")
    build.clones("golden-image")
    build.clock_ahead("ahead")
    write_lake(Path(settings.lake_url), build.fleet)
    wh = DuckDBWarehouse(settings.warehouse_url)
    try:
        run_hour(settings, wh, LakeStore(settings.lake_url), hour)
    finally:
        wh.close()
    env = dict(
        os.environ,
        SYSMETRICS_WAREHOUSE_URL=settings.warehouse_url,
        SYSMETRICS_DATA_DIR=str(settings.data_dir),
        SYSMETRICS_BROKER_PORT="1",
    )
    result = subprocess.run(
        [SYSMETRICS, "status"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert "duplicate id 'golden-image': about 2 machines" in result.stdout
    assert "1 clock_skew" in result.stdout
    assert "web-1" not in result.stdout
