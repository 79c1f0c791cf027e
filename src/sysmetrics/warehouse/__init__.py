"""Stage 3: the warehouse (DuckDB by default, BigQuery in the cloud) behind one interface."""

from __future__ import annotations

import time
from pathlib import Path

from sysmetrics.config import Settings
from sysmetrics.warehouse.base import Warehouse


class NoWarehouseYet(LookupError):
    """A reader's local warehouse file that is not there; the message says what makes it."""


def open_warehouse(settings: Settings, read_only: bool = False) -> Warehouse:
    """The warehouse ``settings.warehouse_url`` names: a DuckDB file or bigquery://project/ds.
    A reader (``read_only``) of a DuckDB file that is not there gets NoWarehouseYet."""
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

    if read_only and not Path(url).exists():
        raise NoWarehouseYet(
            f"no warehouse yet at {url}: the hourly job has not run; it creates it ('sysmetrics "
            "batch run --hour ...', 'batch backfill', or 'up', which runs it every minute); "
            "SYSMETRICS_WAREHOUSE_URL names another"
        )

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
