"""Stage 3: the warehouse (DuckDB by default, BigQuery in the cloud) behind one interface."""

from __future__ import annotations

import time

from sysmetrics.config import Settings
from sysmetrics.warehouse.base import Warehouse


def open_warehouse(settings: Settings, read_only: bool = False) -> Warehouse:
    """The warehouse ``settings.warehouse_url`` names: a DuckDB file or bigquery://project/ds."""
    url = settings.warehouse_url
    if url.startswith("bigquery://"):
        from sysmetrics.warehouse.bigquery import BigQueryWarehouse

        project, _, dataset = url.removeprefix("bigquery://").partition("/")
        if not project or not dataset:
            raise ValueError(f"SYSMETRICS_WAREHOUSE_URL={url}: use bigquery://PROJECT/DATASET")
        return BigQueryWarehouse(
            project, dataset, settings.bigquery_endpoint, settings.bigquery_timeout_s, read_only
        )
    from sysmetrics.warehouse.duckdb import DuckDBWarehouse, WarehouseBusyError

    # DuckDB lets one process write a file, or several read it, at a time: a reader waits out
    # the hourly job's write (seconds for an incremental refresh), the hourly job waits out a
    # dashboard's read (sub-second), then either says who to blame.
    deadline = time.monotonic() + settings.warehouse_busy_wait_s
    while True:
        try:
            return DuckDBWarehouse(
                url, read_only=read_only, memory_limit=settings.duckdb_memory_limit
            )
        except WarehouseBusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
