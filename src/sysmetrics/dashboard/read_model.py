"""What the dashboard's pages read: the warehouse (opened per request, timed for the
Server-Timing header) through the named statements of ``warehouse/sql.py``, and the firing
alerts of the evaluators. No HTML here; the routes in ``app.py`` render what this returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool

from sysmetrics.alerts.live import StateTopicView, read_firing, unheard_note
from sysmetrics.config import Settings
from sysmetrics.warehouse import open_warehouse, sql
from sysmetrics.warehouse.base import Warehouse

warehouse_s: ContextVar[float] = ContextVar("warehouse_s", default=0.0)
"""Seconds this request spent in warehouse queries (each request runs in its own context)."""

RECENT = timedelta(hours=2)
"""How far back the fleet page reads raw samples; older hosts come from the hourly table."""
FLEET_SORTS = {
    "host": "hostname",
    "os": "os",
    "source": "source",
    "last_seen": "last_seen",
    "cpu": "cpu",
    "mem": "mem",
    "disk": "disk",
    "temp": "temp",
    "alerts": "alerts",
}
"""The fleet table's sortable columns: URL key -> SQL column (never the user's text)."""
HOST_RANGES: dict[str, tuple[timedelta, int | None]] = {
    "6h": (timedelta(hours=6), 60),
    "24h": (timedelta(hours=24), 300),
    "7d": (timedelta(days=7), None),
    "30d": (timedelta(days=30), None),
}
"""Host page ranges: (span, bucket seconds of raw samples) or None for the hourly aggregates."""
DEFAULT_HOST_RANGE = "24h"
HOST_PAGE_ALERTS = 200


class WarehouseReader:
    """Runs a read on the warehouse in a worker thread (a wait for the lock blocks no other
    request) and adds its time to the request's ``warehouse_s``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _read(self, fn: Callable[[Warehouse], Any]) -> Any:
        # Open per request and close again: the hourly job in another process needs the
        # DuckDB file's write lock between our reads.
        wh = open_warehouse(self.settings, read_only=True)  # waits out the hourly job's write
        try:
            return fn(wh)
        finally:
            wh.close()

    async def __call__(self, fn: Callable[[Warehouse], Any]) -> Any:
        began = time.perf_counter()
        try:
            return await run_in_threadpool(self._read, fn)
        finally:
            warehouse_s.set(warehouse_s.get() + time.perf_counter() - began)


@dataclass(frozen=True)
class FleetQuery:
    """The fleet page's filters, sort and page, already checked against what is allowed."""

    q: str
    os: str
    source: str
    alerts: bool
    silent: bool
    sort: str
    descending: bool
    per: int
    page: int


def read_fleet(wh: Warehouse, now: datetime, query: FleetQuery) -> dict[str, Any]:
    """One page of the fleet table, the fleet summary, the worst hosts, alert counts and
    duplicated host ids, over the last 24 h."""
    since = now - timedelta(hours=24)
    recent = now - RECENT
    stale = now - timedelta(minutes=5)
    order = f"{FLEET_SORTS[query.sort]} {'DESC' if query.descending else 'ASC'} NULLS LAST"
    rows = wh.rows(
        sql.FLEET_PAGE.replace("{latest}", sql.DASHBOARD_LATEST).replace("{order}", order),
        since=since,
        recent=recent,
        stale=stale,
        q=query.q,
        os=query.os,
        source=query.source,
        with_alerts=query.alerts,
        only_silent=query.silent,
        limit=query.per,
        offset=(query.page - 1) * query.per,
    )
    summary = wh.rows(
        sql.FLEET_SUMMARY.replace("{latest}", sql.DASHBOARD_LATEST),
        since=since,
        recent=recent,
        stale=stale,
    )
    worst = {
        name: wh.rows(
            sql.WORST.replace("{latest}", sql.DASHBOARD_LATEST).replace("{column}", name),
            since=since,
            recent=recent,
        )
        for name in ("cpu", "disk", "temp")
    }
    return {
        "hosts": rows,
        "matching": rows[0]["matching"] if rows else 0,
        # No host seen for a day: DuckDB's ARRAY_AGG of nothing is NULL (BigQuery's results
        # turn it into an empty array).
        "summary": {
            **summary[0],
            "systems": summary[0]["systems"] or [],
            "sources": summary[0]["sources"] or [],
        },
        "worst": worst,
        "severities": {r["severity"]: r["n"] for r in wh.rows(sql.SEVERITY_COUNTS, since=since)},
        "duplicates": wh.rows(sql.FLAGGED_HOSTS, since=since, anomaly="duplicate_host_id", host=""),
    }


@dataclass
class HostData:
    hourly: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    """Raw samples in buckets (raw ranges only)."""
    devices: list[dict[str, Any]]
    """Raw rows' per-mount and per-GPU JSON (raw ranges only)."""
    alerts: list[dict[str, Any]]
    quality: list[dict[str, Any]]


def read_host(wh: Warehouse, host_id: str, now: datetime, range_name: str) -> HostData:
    """A host's hourly rows (at least 2 days, for the latest hour), its raw samples when the
    range is a raw one, and its alerts and data-quality flags of the last 48 h."""
    span, bucket_s = HOST_RANGES[range_name]
    since = now - timedelta(hours=48)
    hourly = wh.rows(sql.HOST_HOURLY, host=host_id, since=now - max(span, timedelta(2)))
    samples, devices = [], []
    if bucket_s:
        samples = wh.rows(sql.HOST_SAMPLES, host=host_id, since=now - span, bucket_s=bucket_s)
        devices = wh.rows(sql.HOST_DEVICES, host=host_id, since=now - span)
    alerts = wh.rows(
        sql.DASHBOARD_ALERTS,
        since=since,
        severity="",
        rule="",
        host=host_id,
        limit=HOST_PAGE_ALERTS,
        offset=0,
    )
    quality = wh.rows(sql.FLAGGED_HOSTS, since=since, anomaly="", host=host_id)
    return HostData(hourly, samples, devices, alerts, quality)


def read_alerts(
    wh: Warehouse, since: datetime, filters: dict[str, str], per: int, page: int
) -> list[dict[str, Any]]:
    """One page of the hourly job's alerts since ``since`` (each row carries ``matching``)."""
    return wh.rows(sql.DASHBOARD_ALERTS, since=since, limit=per, offset=(page - 1) * per, **filters)


class FiringNow:
    """The alerts firing now: the file of an evaluator on this machine, else the evaluators'
    state topic (read from the first visit on, so any dashboard sees them)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._view: StateTopicView | None = None

    def read(self) -> tuple[list[dict[str, Any]] | None, float | None, str]:
        """(firing alerts or None, seconds old or None, where they come from or, when they are
        live, what holds the evaluator back)."""
        local = read_firing(self.settings)
        if local is not None:
            now = datetime.now(UTC)
            unheard = unheard_note(local, now)
            note = "" if unheard is None else f"the alert evaluator {unheard}"
            return local.firing, (now - local.updated_at).total_seconds(), note
        if self._view is None:
            self._view = StateTopicView(self.settings)
        topic = self.settings.alert_state_topic
        if self._view.error is not None:
            return None, None, f"no alert evaluator on this machine, and {self._view.error}"
        if not self._view.caught_up:
            return None, None, f"reading the state topic {topic}…"
        return self._view.firing(), None, f"from the state topic {topic}"

    def close(self) -> None:
        if self._view is not None:
            self._view.close()
