"""Who may see the dashboard: loopback only, unless requests carry the token (HTTP Basic or
bearer) or an authenticating proxy's user header."""

from __future__ import annotations

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp

from sysmetrics.config import Settings
from sysmetrics.http_auth import carries_token, is_loopback


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
