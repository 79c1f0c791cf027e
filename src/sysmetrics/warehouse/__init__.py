"""Stage 3: the warehouse (DuckDB by default, BigQuery in the cloud) behind one interface."""

from __future__ import annotations

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
        return BigQueryWarehouse(project, dataset, settings.bigquery_endpoint)
    from sysmetrics.warehouse.duckdb import DuckDBWarehouse

    return DuckDBWarehouse(url, read_only=read_only, memory_limit=settings.duckdb_memory_limit)
