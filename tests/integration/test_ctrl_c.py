"""Ctrl-C stops a command in the middle of a long DuckDB statement at once, with click's
"Aborted!": `sysmetrics query` ran on after it (DuckDB's Python client does not notice a SIGINT
sent to the process while a statement runs), and `batch backfill` ended in a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import duckdb

from tests.support.kafka_io import SYSMETRICS
from tests.support.terminal import as_from_a_terminal

LONG_STATEMENT = "SELECT count(*) FROM range(100000000000) AS t(x) WHERE x % 7 = 3"
"""Minutes of work on any machine."""


def test_ctrl_c_stops_a_long_query_at_once(tmp_path: Path) -> None:
    warehouse = tmp_path / "data" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    duckdb.connect(str(warehouse)).close()
    env = {
        **os.environ,
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_WAREHOUSE_URL": str(warehouse),
    }
    query = subprocess.Popen(
        [SYSMETRICS, "query", LONG_STATEMENT],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    time.sleep(4)  # started and inside the statement (imports take ~1 s)
    assert query.poll() is None, query.communicate()[1][-2000:]
    query.send_signal(signal.SIGINT)
    try:
        _, stderr = query.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        query.kill()
        query.communicate()
        raise AssertionError("sysmetrics query ran on after SIGINT") from None
    assert query.returncode == 1, stderr[-2000:]
    assert stderr.strip().endswith("Aborted!"), stderr[-2000:]
    assert "Traceback" not in stderr
