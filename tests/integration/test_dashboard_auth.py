"""The dashboard is safe to expose: no login, no start on a public address; with a token or a
trusted proxy header, requests without it get 401 and no fleet data."""

from __future__ import annotations

import base64
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import Settings
from sysmetrics.dashboard.app import create_app
from sysmetrics.dashboard.auth import DashboardAuthError, check_exposure
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.kafka_io import SYSMETRICS
from tests.support.lakes import HOUR14, LakeBuilder, steady_host

TOKEN = "correct horse battery staple"


@pytest.fixture
def fleet_settings(settings: Settings) -> Settings:
    LakeBuilder(Path(settings.lake_url)).add_batch(steady_host("secret-host", HOUR14, cpu=20.0))
    wh = DuckDBWarehouse(settings.warehouse_url)
    run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14)
    wh.close()
    return settings


def client(settings: Settings, **update: object) -> TestClient:
    app = create_app(settings.model_copy(update=update), now=lambda: HOUR14 + timedelta(minutes=59))
    return TestClient(app)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_with_a_token_only_the_right_credentials_see_the_fleet(fleet_settings: Settings) -> None:
    web = client(fleet_settings, dashboard_token=SecretStr(TOKEN))
    for headers in ({}, basic("admin", "wrong"), {"Authorization": "Bearer wrong"}):
        response = web.get("/", headers=headers)
        assert response.status_code == 401
        assert "secret-host" not in response.text
    assert web.get("/").headers["www-authenticate"] == 'Basic realm="sysmetrics"'
    assert "secret-host" in web.get("/", headers=basic("anyone", TOKEN)).text
    host = web.get("/host?id=secret-host", headers={"Authorization": f"Bearer {TOKEN}"})
    assert host.is_success and "in progress" in host.text  # the page's clock is at 14:59
    assert web.get("/alerts").status_code == 401
    assert web.get("/healthz").json() == {"status": "ok"}  # no fleet data there


def test_behind_a_proxy_the_trusted_header_is_required(fleet_settings: Settings) -> None:
    web = client(fleet_settings, dashboard_trusted_user_header="X-Forwarded-User")
    assert web.get("/").status_code == 401
    assert "secret-host" in web.get("/", headers={"X-Forwarded-User": "ops@example"}).text


def test_loopback_needs_no_login_public_addresses_do(fleet_settings: Settings) -> None:
    assert "secret-host" in client(fleet_settings).get("/").text
    check_exposure(fleet_settings, "127.0.0.1")
    with pytest.raises(DashboardAuthError, match="SYSMETRICS_DASHBOARD_TOKEN"):
        check_exposure(fleet_settings, "0.0.0.0")
    check_exposure(fleet_settings.model_copy(update={"dashboard_token": SecretStr("x")}), "0.0.0.0")


def test_cli_refuses_to_serve_publicly_without_credentials(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSMETRICS_DASHBOARD")}
    result = subprocess.run(
        [SYSMETRICS, "dashboard", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "SYSMETRICS_DASHBOARD_TOKEN" in result.stderr


def test_the_token_can_come_from_a_file_and_is_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "dashboard_token"
    secret.write_text(TOKEN + "\n")
    env = dict(os.environ, SYSMETRICS_DASHBOARD_TOKEN_FILE=str(secret))
    env.pop("SYSMETRICS_DASHBOARD_TOKEN", None)
    shown = subprocess.run(
        [SYSMETRICS, "config", "show", "--json"], env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert '"dashboard_token": "***"' in shown.stdout and TOKEN not in shown.stdout
    env["SYSMETRICS_DASHBOARD_TOKEN_FILE"] = str(tmp_path / "missing")
    missing = subprocess.run(
        [SYSMETRICS, "config", "show"], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 1 and "SYSMETRICS_DASHBOARD_TOKEN_FILE" in missing.stderr
