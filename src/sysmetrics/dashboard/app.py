"""The dashboard's HTML routes (Starlette): each page parses its query, asks the read model,
and renders a template with the host page's server-side SVG charts. Remote read shares the
server and its login."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sysmetrics.alerts.live import STOPPED_AFTER_S
from sysmetrics.config import Settings
from sysmetrics.dashboard.auth import AuthMiddleware, check_exposure
from sysmetrics.dashboard.host_charts import (
    device_series,
    host_charts,
    with_counter_rates,
    with_hourly_rates,
)
from sysmetrics.dashboard.read_model import (
    DEFAULT_HOST_RANGE,
    FLEET_SORTS,
    HOST_RANGES,
    FiringNow,
    FleetQuery,
    WarehouseReader,
    read_alerts,
    read_fleet,
    read_host,
    warehouse_s,
)
from sysmetrics.warehouse import NoWarehouseYet

log = logging.getLogger(__name__)
_templates = Environment(
    loader=PackageLoader("sysmetrics.dashboard"), autoescape=select_autoescape()
)
PAGE_SIZES = (25, 50, 100, 200)
PAGES_MAX = 10**9
"""Past any fleet's last page; a larger number would overflow the query's OFFSET."""
ALERT_HOURS_MAX = 24 * 366 * 100
"""The alerts page looks back at most a century (a larger number made no date: a 500)."""
STATIC = Path(__file__).parent / "static"


def _whole(q: QueryParams, key: str, default: int, most: int) -> int:
    """A whole number from the query, at most ``most``; ``default`` if it is none (ASCII
    digits only: ``int`` refuses "²", which ``str.isdigit`` takes)."""
    text = q.get(key, "")
    return min(int(text), most) if text.isascii() and text.isdigit() else default


def _paging(q: QueryParams) -> tuple[int, int]:
    """(rows per page, page number) from the query, within what is offered."""
    per = _whole(q, "per", 50, max(PAGE_SIZES))
    return (per if per in PAGE_SIZES else 50), max(1, _whole(q, "page", 1, PAGES_MAX))


def _pages(matching: int, per: int) -> int:
    return max(1, -(-matching // per))


class Pages:
    """The HTML routes over one read model."""

    def __init__(self, settings: Settings, now: Callable[[], datetime]) -> None:
        self.settings = settings
        self.now = now
        self.read = WarehouseReader(settings)
        self.firing_now = FiringNow(settings)

    def unreadable(self, exc: Exception) -> HTMLResponse:
        """The page for a warehouse read that failed: before the first hourly run an empty
        state (200); any other error a 503 that says so, not "nothing to show"."""
        if isinstance(exc, NoWarehouseYet):
            return self.render("error.html", message=str(exc))
        log.error("the dashboard cannot read the warehouse: %s: %s", type(exc).__name__, exc)
        return self.render(
            "error.html",
            heading="The warehouse cannot be read",
            message=f"{type(exc).__name__}: {exc}",
            status=503,
        )

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = _templates.get_template(name).render(now=self.now(), **context)
        # The warehouse's share of the response time, visible in the browser's dev tools and
        # in the Navigation Timing API (benchmarks/dashboard.py reads it from there).
        timing = f'warehouse;dur={warehouse_s.get() * 1000:.1f};desc="warehouse queries"'
        return HTMLResponse(html, status_code=status, headers={"Server-Timing": timing})

    async def fleet(self, request: Request) -> Response:
        q = request.query_params
        per, page_no = _paging(q)
        query = FleetQuery(
            q=q.get("q", "").strip()[:200],
            os=q.get("os", "")[:50],
            source=q.get("source", "")[:64],
            alerts=q.get("alerts") == "1",
            silent=q.get("silent") == "1",
            sort=q.get("sort", "host") if q.get("sort") in FLEET_SORTS else "host",
            descending=q.get("dir") == "desc",
            per=per,
            page=page_no,
        )
        now = self.now()
        try:
            data = await self.read(lambda wh: read_fleet(wh, now, query))
        except Exception as exc:
            return self.unreadable(exc)
        state = {
            "q": query.q,
            "os": query.os,
            "source": query.source,
            "alerts": query.alerts,
            "silent": query.silent,
            "sort": query.sort,
            "dir": "desc" if query.descending else "asc",
            "per": per,
        }

        def link(**change: Any) -> str:
            params = {**state, "page": page_no, **change}
            kept = {
                k: ("1" if v is True else v)
                for k, v in params.items()
                if v not in ("", False, None) and not (k == "page" and v == 1)
            }
            return "/?" + urlencode(kept)

        return self.render(
            "fleet.html",
            state=state,
            per=per,
            page_no=page_no,
            pages=_pages(data["matching"], per),
            link=link,
            **data,
        )

    async def host(self, request: Request) -> Response:
        host_id = request.query_params.get("id", "")
        chosen = request.query_params.get("range", DEFAULT_HOST_RANGE)
        chosen = chosen if chosen in HOST_RANGES else DEFAULT_HOST_RANGE
        span, bucket_s = HOST_RANGES[chosen]
        now = self.now()
        try:
            data = await self.read(lambda wh: read_host(wh, host_id, now, chosen))
        except Exception as exc:
            return self.unreadable(exc)
        if not data.hourly and not data.samples:
            return self.render("error.html", message=f"no data for host {host_id}", status=404)
        if bucket_s:
            charts = host_charts(
                with_counter_rates(data.samples),
                "ts",
                f"· {bucket_s // 60} min averages",
                device_series(data.devices, bucket_s),
            )
        else:
            in_range = [r for r in data.hourly if r["hour"] >= now - span]
            charts = host_charts(with_hourly_rates(in_range), "hour", "· hourly")
        latest = data.hourly[-1] if data.hourly else None
        return self.render(
            "host.html",
            host_id=host_id,
            charts=charts,
            alerts=data.alerts,
            latest=latest,
            in_progress=latest is not None and latest["hour"] + timedelta(hours=1) > now,
            quality=data.quality,
            ranges=list(HOST_RANGES),
            chosen=chosen,
            range_link=lambda r: "/host?" + urlencode({"id": host_id, "range": r}),
        )

    async def alerts(self, request: Request) -> Response:
        q = request.query_params
        filters = {key: q.get(key, "") for key in ("severity", "rule", "host")}
        hours = _whole(q, "hours", 168, ALERT_HOURS_MAX)
        per, page_no = _paging(q)
        since = self.now() - timedelta(hours=hours)
        hourly_error = None
        try:
            rows = await self.read(lambda wh: read_alerts(wh, since, filters, per, page_no))
        except Exception as exc:  # the live view still shows without a warehouse
            rows, hourly_error = [], str(exc)
        live, live_age_s, live_note = await run_in_threadpool(self.firing_now.read)
        matching = rows[0]["matching"] if rows else 0

        def link(**change: Any) -> str:
            params = {**filters, "hours": hours, "per": per, "page": page_no, **change}
            kept = {k: v for k, v in params.items() if v not in ("", None)}
            return "/alerts?" + urlencode(kept)

        return self.render(
            "alerts.html",
            alerts=rows,
            matching=matching,
            page_no=page_no,
            pages=_pages(matching, per),
            per=per,
            link=link,
            hourly_error=hourly_error,
            filters=filters,
            hours=hours,
            live=live,
            live_age_s=live_age_s,
            live_note=live_note,
            stopped_after_s=STOPPED_AFTER_S,
        )

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def prometheus_remote_read(self, request: Request) -> Response:
        from sysmetrics.remote_read.http import respond

        return await respond(request, self.settings, self.read)


def create_app(
    settings: Settings, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> Starlette:
    pages = Pages(settings, now)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        pages.firing_now.close()

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/", pages.fleet),
            Route("/host", pages.host),  # ?id=: host ids may hold "/" and are passed verbatim
            Route("/alerts", pages.alerts),
            Route("/healthz", pages.health),
            Route("/api/v1/read", pages.prometheus_remote_read, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(AuthMiddleware, settings=settings)],
    )


def serve(settings: Settings) -> None:
    import uvicorn

    check_exposure(settings, settings.dashboard_host)
    uvicorn.run(
        create_app(settings),
        host=settings.dashboard_host,
        port=settings.dashboard_port,
        log_level="warning",
    )
