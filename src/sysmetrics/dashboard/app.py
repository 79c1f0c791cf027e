"""The dashboard web app (Starlette): reads the warehouse, renders HTML with inline SVG charts."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from sysmetrics.config import Settings
from sysmetrics.dashboard.charts import Series, line_chart
from sysmetrics.warehouse import open_warehouse, sql
from sysmetrics.warehouse.base import Warehouse

log = logging.getLogger(__name__)
_templates = Environment(
    loader=PackageLoader("sysmetrics.dashboard"), autoescape=select_autoescape()
)

LATEST = """
-- Each host's newest sample of the last 24 h: the fleet page's rows (a CTE of its queries).
SELECT host_id, MAX_BY(hostname, ts) AS hostname, MAX(ts) AS last_seen,
       MAX_BY(cpu_pct, ts) AS cpu, MAX_BY(mem_used_pct, ts) AS mem,
       MAX_BY(disk_used_pct, ts) AS disk, MAX_BY(temp_max_celsius, ts) AS temp,
       MAX_BY(os, ts) AS os
FROM {raw} WHERE ts >= @since GROUP BY host_id
"""
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
FLEET_PAGE = """
WITH latest AS ({latest}),
counts AS (SELECT host_id, COUNT(*) AS n FROM {alerts} WHERE hour >= @since GROUP BY host_id),
hosts AS (
  SELECT l.*, COALESCE(c.n, 0) AS alerts, l.last_seen < @stale AS silent
  FROM latest AS l LEFT JOIN counts AS c ON c.host_id = l.host_id
)
SELECT *, COUNT(*) OVER () AS matching FROM hosts
WHERE (@q = '' OR STRPOS(LOWER(hostname), LOWER(@q)) > 0 OR STRPOS(LOWER(host_id), LOWER(@q)) > 0)
  AND (@os = '' OR os = @os)
  AND (NOT @with_alerts OR alerts > 0)
  AND (NOT @only_silent OR silent)
ORDER BY {order}, host_id
LIMIT @limit OFFSET @offset
"""
FLEET_SUMMARY = """
WITH latest AS ({latest})
SELECT COUNT(*) AS hosts, COUNTIF(last_seen < @stale) AS silent,
       ARRAY_AGG(DISTINCT os IGNORE NULLS) AS systems
FROM latest
"""
SEVERITY_COUNTS = """
SELECT severity, COUNT(*) AS n FROM {alerts} WHERE hour >= @since GROUP BY severity
"""
WORST = """
WITH latest AS ({latest})
SELECT host_id, hostname, {column} AS value FROM latest WHERE {column} IS NOT NULL
ORDER BY {column} DESC, host_id LIMIT 3
"""
PAGE_SIZES = (25, 50, 100, 200)
HOST_HOURLY = """
SELECT * FROM {hourly} WHERE host_id = @host AND hour >= @since ORDER BY hour
"""
HOST_RAW = """
SELECT ts, cpu_pct, mem_used_pct, temp_max_celsius FROM {raw}
WHERE host_id = @host AND ts >= @since ORDER BY ts
"""
ALERTS = """
SELECT * FROM {alerts}
WHERE hour >= @since AND (@severity = '' OR severity = @severity)
  AND (@rule = '' OR rule = @rule) AND (@host = '' OR host_id = @host)
ORDER BY hour DESC, severity, host_id LIMIT 500
"""


class DashboardAuthError(RuntimeError):
    """The dashboard would be reachable from other machines without any authentication."""


LOOPBACK = ("127.", "::1", "localhost")
OPEN_PATHS = ("/healthz", "/static/")
"""Paths without fleet data: a load balancer's health check and the CSS need no login."""


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve on a non-loopback address unless requests must authenticate."""
    if (
        host.startswith(LOOPBACK)
        or settings.dashboard_token
        or settings.dashboard_trusted_user_header
    ):
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
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(credentials.strip().encode(), token)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(decoded.partition(b":")[2], token)
    return False


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
        # DuckDB file's write lock between our reads. Retry briefly while it holds it.
        if (
            not settings.warehouse_url.startswith("bigquery://")
            and not Path(settings.warehouse_url).exists()
        ):
            raise LookupError(
                "no warehouse yet: the hourly job has not run (sysmetrics up runs it every "
                "minute; or run 'sysmetrics batch run --hour ...')"
            )
        last: Exception | None = None
        for _ in range(20):
            try:
                wh = open_warehouse(settings, read_only=True)
            except Exception as exc:
                last = exc
                time.sleep(0.25)
                continue
            try:
                return fn(wh)
            finally:
                wh.close()
        raise RuntimeError(f"warehouse busy or missing: {last}")

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = _templates.get_template(name).render(now=now(), **context)
        return HTMLResponse(html, status_code=status)

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

        def read(wh: Warehouse) -> dict[str, Any]:
            rows = wh.rows(
                FLEET_PAGE.replace("{latest}", LATEST).replace("{order}", order),
                since=since,
                stale=stale,
                q=state["q"],
                os=state["os"],
                with_alerts=state["alerts"],
                only_silent=state["silent"],
                limit=per,
                offset=(page_no - 1) * per,
            )
            summary = wh.rows(FLEET_SUMMARY.replace("{latest}", LATEST), since=since, stale=stale)
            worst = {
                name: wh.rows(
                    WORST.replace("{latest}", LATEST).replace("{column}", name), since=since
                )
                for name in ("cpu", "disk", "temp")
            }
            severities = {r["severity"]: r["n"] for r in wh.rows(SEVERITY_COUNTS, since=since)}
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
            data = with_warehouse(read)
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
            page_no=page_no,
            pages=pages,
            link=link,
            **data,
        )

    async def host(request: Request) -> Response:
        host_id = request.query_params.get("id", "")
        since = now() - timedelta(hours=48)

        def read(wh: Warehouse) -> tuple[list[dict[str, Any]], ...]:
            hourly = wh.rows(HOST_HOURLY, host=host_id, since=since)
            raw = wh.rows(HOST_RAW, host=host_id, since=now() - timedelta(hours=1))
            alerts = wh.rows(ALERTS, since=since, severity="", rule="", host=host_id)
            quality = wh.rows(sql.FLAGGED_HOSTS, since=since, anomaly="", host=host_id)
            return hourly, raw, alerts, quality

        try:
            hourly, raw, alerts, quality = with_warehouse(read)
        except Exception as exc:
            return page("error.html", message=str(exc))
        if not hourly and not raw:
            return page("error.html", message=f"no data for host {host_id}", status=404)

        def series(
            rows: list[dict[str, Any]], key: str, label: str, time_key: str = "hour"
        ) -> Series:
            return Series(label, [(r[time_key], r[key]) for r in rows])

        charts = [
            line_chart(
                "CPU % per hour",
                [
                    series(hourly, "cpu_avg", "average"),
                    series(hourly, "cpu_p95", "p95"),
                    series(hourly, "cpu_max", "max"),
                ],
                "%",
                100,
            ),
            line_chart(
                "Memory % per hour",
                [series(hourly, "mem_avg", "average"), series(hourly, "mem_max", "max")],
                "%",
                100,
            ),
            line_chart(
                "Network bytes/s per hour",
                [
                    series(hourly, "net_recv_rate_avg", "recv avg"),
                    series(hourly, "net_sent_rate_avg", "sent avg"),
                    series(hourly, "net_recv_rate_peak", "recv peak"),
                ],
            ),
            line_chart(
                "Temperature °C per hour",
                [series(hourly, "temp_avg", "average"), series(hourly, "temp_max", "max")],
                "°",
            ),
            line_chart(
                "Last hour: raw samples",
                [
                    series(raw, "cpu_pct", "CPU %", "ts"),
                    series(raw, "mem_used_pct", "memory %", "ts"),
                ],
                "%",
                100,
            ),
        ]
        latest = hourly[-1] if hourly else None
        return page(
            "host.html",
            host_id=host_id,
            charts=charts,
            alerts=alerts,
            latest=latest,
            in_progress=latest is not None and latest["hour"] + timedelta(hours=1) > now(),
            last_raw=raw[-1] if raw else None,
            quality=quality,
        )

    async def alerts(request: Request) -> Response:
        q = request.query_params
        filters = {
            "severity": q.get("severity", ""),
            "rule": q.get("rule", ""),
            "host": q.get("host", ""),
        }
        hours = int(q.get("hours", "168")) if q.get("hours", "168").isdigit() else 168
        try:
            rows = with_warehouse(
                lambda wh: wh.rows(ALERTS, since=now() - timedelta(hours=hours), **filters)
            )
        except Exception as exc:
            return page("error.html", message=str(exc))
        return page("alerts.html", alerts=rows, filters=filters, hours=hours)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    static = Path(__file__).parent / "static"
    return Starlette(
        routes=[
            Route("/", fleet),
            Route("/host", host),  # ?id=: host ids may hold "/" and are passed verbatim
            Route("/alerts", alerts),
            Route("/healthz", health),
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
