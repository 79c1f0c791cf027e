"""The dashboard web app (Starlette): reads the warehouse, renders HTML with inline SVG charts."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from sysmetrics.alerts.live import StateTopicView, read_firing
from sysmetrics.config import Settings
from sysmetrics.dashboard.charts import Series, line_chart
from sysmetrics.http_auth import carries_token, is_loopback
from sysmetrics.warehouse import open_warehouse, sql
from sysmetrics.warehouse.base import Warehouse

log = logging.getLogger(__name__)
_templates = Environment(
    loader=PackageLoader("sysmetrics.dashboard"), autoescape=select_autoescape()
)

_warehouse_s: ContextVar[float] = ContextVar("warehouse_s", default=0.0)
"""Seconds this request spent in warehouse queries (each request runs in its own context)."""

RECENT = timedelta(hours=2)
"""How far back the fleet page reads raw samples; older hosts come from the hourly table."""
FLEET_SORTS = {
    "host": "hostname",
    "os": "os",
    "last_seen": "last_seen",
    "cpu": "cpu",
    "mem": "mem",
    "disk": "disk",
    "temp": "temp",
    "alerts": "alerts",
}
"""The fleet table's sortable columns: URL key -> SQL column (never the user's text)."""
PAGE_SIZES = (25, 50, 100, 200)
MOUNTS_SHOWN = 6
"""Per-mount chart: the fullest mounts (a host with dozens of container mounts stays legible)."""
HOST_RANGES: dict[str, tuple[timedelta, int | None]] = {
    "6h": (timedelta(hours=6), 60),
    "24h": (timedelta(hours=24), 300),
    "7d": (timedelta(days=7), None),
    "30d": (timedelta(days=30), None),
}
"""Host page ranges: (span, bucket seconds of raw samples) or None for the hourly aggregates."""
DEFAULT_HOST_RANGE = "24h"
COUNTER_RATES = (
    ("net_recv_counter", "net_recv_rate_avg"),
    ("net_sent_counter", "net_sent_rate_avg"),
    ("disk_read_counter", "disk_read_rate_avg"),
    ("disk_write_counter", "disk_write_rate_avg"),
)
"""Raw cumulative counters and the per-bucket rate (bytes/s) the host page draws from them."""


def with_counter_rates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bytes/s between consecutive buckets of the raw counters; a counter that went back (a
    reboot) or a missing value leaves that bucket's rate unknown, never negative."""
    previous: dict[str, Any] | None = None
    for row in rows:
        for counter, rate in COUNTER_RATES:
            value, before = row[counter], previous[counter] if previous else None
            seconds = (row["ts"] - previous["ts"]).total_seconds() if previous else 0
            ok = value is not None and before is not None and value >= before and seconds > 0
            row[rate] = (value - before) / seconds if ok else None
        previous = row
    return rows


def with_hourly_rates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        for total, rate in (
            ("disk_read_bytes", "disk_read_rate_avg"),
            ("disk_write_bytes", "disk_write_rate_avg"),
        ):
            row[rate] = row[total] / 3600 if row[total] is not None else None
    return rows


HOST_CHARTS: tuple[tuple[str, str, float | None, tuple[tuple[str, str], ...]], ...] = (
    ("CPU %", "%", 100, (("cpu_avg", "average"), ("cpu_p95", "p95"), ("cpu_max", "max"))),
    ("Load (1 min)", "", None, (("load_avg", "average"),)),
    (
        "Memory and swap %",
        "%",
        100,
        (("mem_avg", "memory avg"), ("mem_max", "memory max"), ("swap_avg", "swap avg")),
    ),
    ("Disk used % (fullest mount)", "%", 100, (("disk_used_max", "max"),)),
    (
        "Disk I/O bytes/s",
        "",
        None,
        (("disk_read_rate_avg", "read"), ("disk_write_rate_avg", "write")),
    ),
    (
        "Network bytes/s",
        "",
        None,
        (("net_recv_rate_avg", "received"), ("net_sent_rate_avg", "sent")),
    ),
    ("Temperature °C (hottest sensor)", "°", None, (("temp_avg", "average"), ("temp_max", "max"))),
    (
        "GPU utilization % (mean of GPUs)",
        "%",
        100,
        (("gpu_util_avg", "average"), ("gpu_util_max", "max")),
    ),
    ("GPU memory used bytes (all GPUs)", "", None, (("gpu_mem_used_max", "max"),)),
    ("GPU temperature °C", "°", None, (("gpu_temp_max", "hottest GPU"),)),
    ("GPU power W (all GPUs)", "", None, (("gpu_power_avg", "average"), ("gpu_power_max", "max"))),
    (
        "Battery %",
        "%",
        100,
        (("battery_min_pct", "charge (lowest)"), ("battery_health_pct", "health")),
    ),
)
"""The host page's chart families: (title, unit, y max, ((column, legend), ...)). Hourly and
raw-bucket rows carry the same column names; a series a view lacks (p95 of a bucket) is empty."""
OPTIONAL_FAMILIES = ("GPU", "Battery")
"""Chart families drawn only for hosts that have the hardware."""


def device_series(rows: list[dict[str, Any]], bucket_s: int) -> dict[str, list[Series]]:
    """Each mount's and each GPU's own lines from the raw rows' JSON columns, in ``bucket_s``
    buckets: the fullest mount at its maximum, each GPU's mean utilization and hottest reading."""
    mounts: dict[str, dict[datetime, float]] = defaultdict(dict)
    util: dict[int, dict[datetime, list[float]]] = defaultdict(lambda: defaultdict(list))
    temp: dict[int, dict[datetime, float]] = defaultdict(dict)
    stamps: list[datetime] = []
    for row in rows:
        epoch = int(row["ts"].timestamp()) // bucket_s * bucket_s
        stamp = datetime.fromtimestamp(epoch, UTC)
        if not stamps or stamps[-1] != stamp:
            stamps.append(stamp)
        for disk in json.loads(row["disks_json"] or "[]"):
            if disk.get("used_pct") is not None:
                seen = mounts[disk["mountpoint"]]
                seen[stamp] = max(seen.get(stamp, 0.0), disk["used_pct"])
        for gpu in json.loads(row["gpus_json"] or "[]"):
            if gpu.get("utilization_pct") is not None:
                util[gpu["index"]][stamp].append(gpu["utilization_pct"])
            if gpu.get("temperature_celsius") is not None:
                hottest = temp[gpu["index"]]
                hottest[stamp] = max(hottest.get(stamp, -273.0), gpu["temperature_celsius"])
    fullest = sorted(mounts, key=lambda m: -max(mounts[m].values()))[:MOUNTS_SHOWN]
    return {
        "Disk used %": [
            Series(m, [(t, mounts[m].get(t)) for t in stamps]) for m in sorted(fullest)
        ],
        "GPU utilization %": [
            Series(
                f"GPU {i}",
                [(t, sum(v) / len(v) if (v := util[i].get(t)) else None) for t in stamps],
            )
            for i in sorted(util)
        ],
        "GPU temperature °C": [
            Series(f"GPU {i}", [(t, temp[i].get(t)) for t in stamps]) for i in sorted(temp)
        ],
    }


PER_DEVICE_TITLES = {
    "Disk used %": "Disk used % per mount",
    "GPU utilization %": "GPU utilization % per GPU",
    "GPU temperature °C": "GPU temperature °C per GPU",
}


def host_charts(
    rows: list[dict[str, Any]],
    time_key: str,
    period: str,
    per_device: dict[str, list[Series]] | None = None,
) -> list[str]:
    """The host page's charts; ``per_device`` (raw ranges) replaces a family's summary lines
    with one line per mount or GPU."""
    charts = []
    for family_title, unit, y_max, columns in HOST_CHARTS:
        title = family_title
        series = [
            Series(label, [(r[time_key], r.get(column)) for r in rows]) for column, label in columns
        ]
        for prefix, replacement in (per_device or {}).items():
            if family_title.startswith(prefix) and replacement:
                title, series = PER_DEVICE_TITLES[prefix], replacement
        has_values = any(v is not None for s in series for _, v in s.points)
        if family_title.startswith(OPTIONAL_FAMILIES) and not has_values:
            continue
        charts.append(line_chart(f"{title} {period}", series, unit, y_max))
    return charts


class DashboardAuthError(RuntimeError):
    """The dashboard would be reachable from other machines without any authentication."""


OPEN_PATHS = ("/healthz", "/static/")
"""Paths without fleet data: a load balancer's health check and the CSS need no login."""


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve on a non-loopback address unless requests must authenticate."""
    if is_loopback(host) or settings.dashboard_token or settings.dashboard_trusted_user_header:
        return
    raise DashboardAuthError(
        f"the dashboard on {host} would serve the fleet's data to anyone: set "
        "SYSMETRICS_DASHBOARD_TOKEN (or SYSMETRICS_DASHBOARD_TOKEN_FILE), or "
        "SYSMETRICS_DASHBOARD_TRUSTED_USER_HEADER behind an authenticating reverse proxy"
    )


def _authenticated(settings: Settings, request: Request) -> bool:
    header = settings.dashboard_trusted_user_header
    if header is not None and request.headers.get(header):
        return True
    if settings.dashboard_token is None:
        return header is None
    token = settings.dashboard_token.get_secret_value().encode()
    return carries_token(request.headers.get("authorization", "").encode(), token)


class AuthMiddleware(BaseHTTPMiddleware):
    """Every page but the open paths needs the token (HTTP Basic with any user name, or a
    bearer token) or the trusted proxy's user header, when either is configured."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(app)
        self.settings = settings

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path.startswith(OPEN_PATHS) or _authenticated(self.settings, request):
            return await call_next(request)
        headers = {"WWW-Authenticate": 'Basic realm="sysmetrics"'}
        if self.settings.dashboard_token is None:
            headers = {}  # only the proxy can let a user in
        return PlainTextResponse("authentication required\n", status_code=401, headers=headers)


def create_app(
    settings: Settings, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> Starlette:
    def with_warehouse(fn: Callable[[Warehouse], Any]) -> Any:
        # Open per request and close again: the hourly job in another process needs the
        # DuckDB file's write lock between our reads.
        if (
            not settings.warehouse_url.startswith("bigquery://")
            and not Path(settings.warehouse_url).exists()
        ):
            raise LookupError(
                "no warehouse yet: the hourly job has not run (sysmetrics up runs it every "
                "minute; or run 'sysmetrics batch run --hour ...')"
            )
        wh = open_warehouse(settings, read_only=True)  # waits out the hourly job's write
        try:
            return fn(wh)
        finally:
            wh.close()

    async def query_warehouse(fn: Callable[[Warehouse], Any]) -> Any:
        """``fn`` on the warehouse in a worker thread (a wait for the lock blocks no other
        request), its time added to the request's Server-Timing."""
        began = time.perf_counter()
        try:
            return await run_in_threadpool(with_warehouse, fn)
        finally:
            _warehouse_s.set(_warehouse_s.get() + time.perf_counter() - began)

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = _templates.get_template(name).render(now=now(), **context)
        # The warehouse's share of the response time, visible in the browser's dev tools and
        # in the Navigation Timing API (benchmarks/dashboard.py reads it from there).
        timing = f'warehouse;dur={_warehouse_s.get() * 1000:.1f};desc="warehouse queries"'
        return HTMLResponse(html, status_code=status, headers={"Server-Timing": timing})

    async def fleet(request: Request) -> Response:
        since = now() - timedelta(hours=24)
        stale = now() - timedelta(minutes=5)
        q = request.query_params
        sort = q.get("sort", "host") if q.get("sort") in FLEET_SORTS else "host"
        descending = q.get("dir") == "desc"
        per = int(q["per"]) if q.get("per", "").isdigit() and int(q["per"]) in PAGE_SIZES else 50
        page_no = max(1, int(q["page"])) if q.get("page", "").isdigit() else 1
        state = {
            "q": q.get("q", "").strip()[:200],
            "os": q.get("os", "")[:50],
            "alerts": q.get("alerts") == "1",
            "silent": q.get("silent") == "1",
            "sort": sort,
            "dir": "desc" if descending else "asc",
            "per": per,
        }
        order = f"{FLEET_SORTS[sort]} {'DESC' if descending else 'ASC'} NULLS LAST"

        recent = now() - RECENT

        def read(wh: Warehouse) -> dict[str, Any]:
            rows = wh.rows(
                sql.FLEET_PAGE.replace("{latest}", sql.DASHBOARD_LATEST).replace("{order}", order),
                since=since,
                recent=recent,
                stale=stale,
                q=state["q"],
                os=state["os"],
                with_alerts=state["alerts"],
                only_silent=state["silent"],
                limit=per,
                offset=(page_no - 1) * per,
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
            severities = {r["severity"]: r["n"] for r in wh.rows(sql.SEVERITY_COUNTS, since=since)}
            duplicates = wh.rows(
                sql.FLAGGED_HOSTS, since=since, anomaly="duplicate_host_id", host=""
            )
            return {
                "hosts": rows,
                "matching": rows[0]["matching"] if rows else 0,
                "summary": summary[0] if summary else {"hosts": 0, "silent": 0, "systems": []},
                "worst": worst,
                "severities": severities,
                "duplicates": duplicates,
            }

        try:
            data = await query_warehouse(read)
        except Exception as exc:
            return page("error.html", message=str(exc))

        def link(**change: Any) -> str:
            params = {**state, "page": page_no, **change}
            kept = {
                k: ("1" if v is True else v)
                for k, v in params.items()
                if v not in ("", False, None) and not (k == "page" and v == 1)
            }
            return "/?" + urlencode(kept)

        pages = max(1, -(-data["matching"] // per))
        return page(
            "fleet.html",
            stale=stale,
            state=state,
            per=per,
            page_no=page_no,
            pages=pages,
            link=link,
            **data,
        )

    async def host(request: Request) -> Response:
        host_id = request.query_params.get("id", "")
        chosen = request.query_params.get("range", DEFAULT_HOST_RANGE)
        chosen = chosen if chosen in HOST_RANGES else DEFAULT_HOST_RANGE
        span, bucket_s = HOST_RANGES[chosen]
        since = now() - timedelta(hours=48)

        def read(wh: Warehouse) -> tuple[list[dict[str, Any]], ...]:
            hourly = wh.rows(sql.HOST_HOURLY, host=host_id, since=now() - max(span, timedelta(2)))
            samples, devices = [], []
            if bucket_s:
                samples = wh.rows(
                    sql.HOST_SAMPLES, host=host_id, since=now() - span, bucket_s=bucket_s
                )
                devices = wh.rows(sql.HOST_DEVICES, host=host_id, since=now() - span)
            alerts = wh.rows(
                sql.DASHBOARD_ALERTS,
                since=since,
                severity="",
                rule="",
                host=host_id,
                limit=200,
                offset=0,
            )
            quality = wh.rows(sql.FLAGGED_HOSTS, since=since, anomaly="", host=host_id)
            return hourly, samples, devices, alerts, quality

        try:
            hourly, samples, devices, alerts, quality = await query_warehouse(read)
        except Exception as exc:
            return page("error.html", message=str(exc))
        if not hourly and not samples:
            return page("error.html", message=f"no data for host {host_id}", status=404)
        if bucket_s:
            charts = host_charts(
                with_counter_rates(samples),
                "ts",
                f"· {bucket_s // 60} min averages",
                device_series(devices, bucket_s),
            )
        else:
            in_range = [r for r in hourly if r["hour"] >= now() - span]
            charts = host_charts(with_hourly_rates(in_range), "hour", "· hourly")
        latest = hourly[-1] if hourly else None
        return page(
            "host.html",
            host_id=host_id,
            charts=charts,
            alerts=alerts,
            latest=latest,
            in_progress=latest is not None and latest["hour"] + timedelta(hours=1) > now(),
            quality=quality,
            ranges=list(HOST_RANGES),
            chosen=chosen,
            range_link=lambda r: "/host?" + urlencode({"id": host_id, "range": r}),
        )

    async def alerts(request: Request) -> Response:
        q = request.query_params
        filters = {
            "severity": q.get("severity", ""),
            "rule": q.get("rule", ""),
            "host": q.get("host", ""),
        }
        hours = int(q.get("hours", "168")) if q.get("hours", "168").isdigit() else 168
        per = int(q["per"]) if q.get("per", "").isdigit() and int(q["per"]) in PAGE_SIZES else 50
        page_no = max(1, int(q["page"])) if q.get("page", "").isdigit() else 1
        hourly_error = None
        try:
            rows = await query_warehouse(
                lambda wh: wh.rows(
                    sql.DASHBOARD_ALERTS,
                    since=now() - timedelta(hours=hours),
                    limit=per,
                    offset=(page_no - 1) * per,
                    **filters,
                ),
            )
        except Exception as exc:  # the live view still shows without a warehouse
            rows, hourly_error = [], str(exc)
        live, live_age_s, live_note = await run_in_threadpool(firing_now)
        matching = rows[0]["matching"] if rows else 0

        def link(**change: Any) -> str:
            params = {**filters, "hours": hours, "per": per, "page": page_no, **change}
            kept = {k: v for k, v in params.items() if v not in ("", None)}
            return "/alerts?" + urlencode(kept)

        return page(
            "alerts.html",
            alerts=rows,
            matching=matching,
            page_no=page_no,
            pages=max(1, -(-matching // per)),
            per=per,
            link=link,
            hourly_error=hourly_error,
            filters=filters,
            hours=hours,
            live=live,
            live_age_s=live_age_s,
            live_note=live_note,
        )

    state_view: list[StateTopicView] = []

    def firing_now() -> tuple[list[dict[str, Any]] | None, float | None, str]:
        """(firing alerts or None, seconds old or None, where from): the file of an evaluator on
        this machine, else the evaluators' state topic (read from the first visit on)."""
        local = read_firing(settings)
        if local is not None:
            return local[1], (datetime.now(UTC) - local[0]).total_seconds(), "live"
        if not state_view:
            state_view.append(StateTopicView(settings))
        view = state_view[0]
        if view.error is not None:
            return None, None, f"no alert evaluator on this machine, and {view.error}"
        if not view.caught_up:
            return None, None, f"reading the state topic {settings.alert_state_topic}…"
        return view.firing(), None, f"from the state topic {settings.alert_state_topic}"

    def close_state_view() -> None:
        for view in state_view:
            view.close()

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def prometheus_remote_read(request: Request) -> Response:
        from sysmetrics.remote_read.http import respond

        return await respond(request, settings, query_warehouse)

    static = Path(__file__).parent / "static"

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        close_state_view()

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/", fleet),
            Route("/host", host),  # ?id=: host ids may hold "/" and are passed verbatim
            Route("/alerts", alerts),
            Route("/healthz", health),
            Route("/api/v1/read", prometheus_remote_read, methods=["POST"]),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ],
        middleware=[Middleware(AuthMiddleware, settings=settings)],
    )


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    check_exposure(settings, host or settings.dashboard_host)
    uvicorn.run(
        create_app(settings),
        host=host or settings.dashboard_host,
        port=port or settings.dashboard_port,
        log_level="warning",
    )
