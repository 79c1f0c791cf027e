"""Lower stages never pull in higher ones: an Airflow task importing the batch library does not
load the Kafka client, and the collector does not load the lake, warehouse or dashboard."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


SRC = Path(__file__).parents[2] / "src" / "sysmetrics"
SQL = re.compile(r"\b(SELECT|INSERT INTO|DELETE FROM|CREATE (OR REPLACE )?TABLE|UPDATE \w+ SET)\b")


def modules_outside(*rooms: str) -> list[Path]:
    return [
        path for path in sorted(SRC.rglob("*.py")) if path.relative_to(SRC).parts[0] not in rooms
    ]


def test_sql_lives_in_the_warehouse() -> None:
    """Warehouse SQL only in warehouse/ (the compaction's own DuckDB statements in lake/)."""
    found = [
        f"{path.relative_to(SRC)}:{n}"
        for path in modules_outside("warehouse", "lake")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if SQL.search(line)
    ]
    assert not found, found


def test_only_the_lake_knows_its_file_layout() -> None:
    """The lake's paths and bookkeeping files are read through lake/ (catalog, compaction,
    status), never parsed by another room."""
    found = [
        str(path.relative_to(SRC))
        for path in modules_outside("lake")
        if re.search(r"lake(\.| import )layout\b", path.read_text())
    ]
    assert not found, found
