"""The built-in hourly scheduler (`up` without Airflow) on a real lake and a real DuckDB."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sysmetrics.timeutil import hour_floor
from tests.support.lakes import write_simulated_fleet

RUN_WITHOUT_ROOM = """
import json, logging, resource, sys, threading
from sysmetrics.config import load_settings
from sysmetrics.orchestration.scheduler import HourlyScheduler

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
root = sys.argv[1]
settings = load_settings(
    data_dir=f"{root}/data", lake_url=f"{root}/lake", warehouse_url=f"{root}/wh.duckdb"
)
stop = threading.Event()
scheduler = HourlyScheduler(settings, stop, refresh_s=0.2)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
threading.Timer(3.0, stop.set).start()
scheduler.run()
print(json.dumps({"failures": scheduler.failures, "last_error": scheduler.last_error}))
"""


def test_no_room_is_one_line_a_run_and_the_scheduler_goes_on(tmp_path: Path) -> None:
    """The disk has no room (a real RLIMIT_FSIZE on the process: staging the hour's raw files
    meets it first): each run logs one line saying where, `status` gets the same, and the
    scheduler tries again; it logged a traceback every minute."""
    write_simulated_fleet(tmp_path / "lake", 20, hour_floor(datetime.now(UTC)), 1)
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_ROOM, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["failures"] >= 2, result.stderr  # it went on trying
    assert state["last_error"].startswith("File too large in the temporary folder")
    assert "Traceback" not in result.stderr
    assert result.stderr.count("hourly run failed: File too large") == state["failures"]
