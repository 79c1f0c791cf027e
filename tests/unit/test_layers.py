"""Lower stages never pull in higher ones: an Airflow task importing the batch library does not
load the Kafka client, and the collector does not load the lake, warehouse or dashboard."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("sysmetrics.batch.hourly", ["confluent_kafka", "sysmetrics.lake.writer"]),
        ("sysmetrics.collect.loop", ["duckdb", "fsspec", "starlette", "sysmetrics.lake"]),
        ("sysmetrics.collect.service", ["confluent_kafka", "duckdb", "fsspec"]),
        ("sysmetrics.alerts.service", ["duckdb", "fsspec", "starlette", "sysmetrics.lake"]),
        ("sysmetrics.alerts.evaluator", ["confluent_kafka", "duckdb"]),
        (
            "sysmetrics.ingest.server",
            ["duckdb", "fsspec", "starlette", "sysmetrics.lake", "sysmetrics.dashboard"],
        ),
    ],
)
def test_module_does_not_import(module: str, absent: list[str]) -> None:
    code = f"import sys, {module}; print([m for m in {absent!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
