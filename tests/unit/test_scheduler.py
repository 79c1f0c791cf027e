"""The built-in hourly scheduler (`up` without Airflow) on a real lake and a real DuckDB."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sysmetrics.timeutil import hour_floor
from tests.support.lakes import write_simulated_fleet

RUN_LIMITED = """
import json, logging, resource, sys, threading
from sysmetrics.config import load_settings
from sysmetrics.orchestration.scheduler import HourlyScheduler

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
root, file_size, memory = sys.argv[1:]
settings = load_settings(
    data_dir=f"{root}/data",
    lake_url=f"{root}/lake",
    warehouse_url=f"{root}/wh.duckdb",
    duckdb_memory_limit=memory,
)
stop = threading.Event()
scheduler = HourlyScheduler(settings, stop, refresh_s=0.2)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(file_size), resource.RLIM_INFINITY))
threading.Timer(3.0, stop.set).start()
scheduler.run()
print(json.dumps({"failures": scheduler.failures, "last_error": scheduler.last_error}))
"""


@pytest.mark.parametrize(
    ("file_size", "memory", "said"),
    [
        (1 << 20, "1GB", "File too large in the temporary folder"),
        (resource.RLIM_INFINITY, "1MB", "Out of Memory Error"),
    ],
)
def test_a_machine_limit_is_one_line_a_run_and_the_scheduler_goes_on(
    tmp_path: Path, file_size: int, memory: str, said: str
) -> None:
    """The disk has no room (a real RLIMIT_FSIZE on the process: staging the hour's raw files
    meets it first), or DuckDB's memory limit is too small: each run logs one line saying which,
    `status` gets the same, and the scheduler tries again; it logged a traceback every minute."""
    write_simulated_fleet(tmp_path / "lake", 20, hour_floor(datetime.now(UTC)), 1)
    result = subprocess.run(
        [sys.executable, "-c", RUN_LIMITED, str(tmp_path), str(file_size), memory],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["failures"] >= 2, result.stderr  # it went on trying
    assert state["last_error"].startswith(said)
    assert "Traceback" not in result.stderr
    assert result.stderr.count(f"hourly run failed: {said}") == state["failures"]
