"""Whatever valid readings one host sends, the hourly job runs and every other host's values
stay exact: Hypothesis draws samples whose every reading sits at an edge of the schema."""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import load_settings
from sysmetrics.lake.store import LakeStore
from sysmetrics.schema import INT64_MAX, MetricsEvent, decode, encode
from sysmetrics.stream.simulator import generate
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.lakes import HOUR14, LakeBuilder, event

FULLEST = max((e for _, e in generate(40, HOUR14, 60)), key=lambda e: len(encode(e)))
"""A simulated sample with every group filled (GPUs, disks, interfaces, sensors)."""

IDENTITY = {"schema_version", "event_id", "ts", "received_at", "host_id", "os", "arch", "source"}
COUNTS = st.sampled_from([0, 1, 2**44 - 1, 2**44, 2**53, 2**62, INT64_MAX - 1, INT64_MAX])
READINGS = st.sampled_from([0.0, 5e-324, 1.0, 999_999.9, 1e6, 1e15, 1e308, 1.7976931348623157e308])
PCTS = st.sampled_from([0.0, 5e-324, 99.999999, 100.0])
CELSIUS = st.sampled_from([-273.15, 0.0, 1000.0])
INTERVALS = st.sampled_from([5e-324, 0.0004, 0.0006, 1.0, 86_400.0])


def at_edges(doc: Any, draw: Any) -> None:
    """Each reading of an event (as JSON) replaced by a value the schema admits at its edges."""
    for key, value in list(doc.items() if isinstance(doc, dict) else enumerate(doc)):
        name = str(key)
        if isinstance(value, dict | list):
            at_edges(value, draw)
        elif value is None or isinstance(value, bool) or name in IDENTITY or name == "index":
            continue
        elif name.endswith("_pct") or name == "percent":
            doc[key] = draw(PCTS)
        elif "celsius" in name:
            doc[key] = draw(CELSIUS)
        elif name == "interval_s":
            doc[key] = draw(INTERVALS)
        elif isinstance(value, int):
            doc[key] = draw(COUNTS)
        elif isinstance(value, float):
            doc[key] = draw(READINGS)


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_one_hosts_extreme_readings_never_stop_the_hour_for_the_others(data: st.DataObject) -> None:
    samples: list[MetricsEvent] = []
    for i in range(data.draw(st.integers(2, 8))):
        doc = json.loads(encode(FULLEST))
        at_edges(doc, data.draw)
        doc["ts"] = (HOUR14 + timedelta(seconds=10 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        doc["host"]["host_id"] = "extreme"
        doc["event_id"] = f"0192f0f0-0000-7000-8000-{i:012d}"
        samples.append(decode(json.dumps(doc).encode()))  # valid: the schema admits it
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = load_settings(
            data_dir=root / "data", lake_url=str(root / "lake"), warehouse_url=str(root / "wh")
        )
        lake = LakeBuilder(root / "lake")
        lake.add_batch(samples)
        lake.add_batch(
            [
                event("calm", HOUR14 + timedelta(seconds=10 * i), 20.0, sent=1000 * i, seq=i)
                for i in range(3)
            ]
        )
        wh = DuckDBWarehouse(settings.warehouse_url)
        try:
            run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14)
            rows = wh.rows(
                "SELECT host_id, samples, cpu_avg, net_sent_bytes FROM {hourly} ORDER BY host_id"
            )
        finally:
            wh.close()
    assert [(r["host_id"], r["samples"]) for r in rows] == [("calm", 3), ("extreme", len(samples))]
    assert (rows[0]["cpu_avg"], rows[0]["net_sent_bytes"]) == (20.0, 2000)
