"""The dashboard in a real headless Chromium (Playwright) against a generated warehouse."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn

from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import Settings
from sysmetrics.dashboard.app import create_app
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.lakes import HOUR14, LakeBuilder, event, steady_host
from tests.support.ports import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-output" / "dashboard"


@pytest.fixture
def dashboard_url(settings: Settings) -> Iterator[str]:
    lake = LakeBuilder(Path(settings.lake_url))
    for hour in (HOUR14 - timedelta(hours=1), HOUR14):
        lake.add_batch(steady_host("web-1", hour, cpu=22.0, temp=55.0))
        lake.add_batch(steady_host("gpu-7", hour, cpu=97.0, temp=91.0))
    # Two VMs cloned from one image: one host id, two hostnames.
    for name in ("a", "b"):
        clone = [
            event("golden", HOUR14 + timedelta(seconds=10 * i), 5.0, hostname=f"vm-{name}", seq=i)
            for i in range(30)
        ]
        lake.add_batch(clone)
    wh = DuckDBWarehouse(settings.warehouse_url)
    for hour in (HOUR14 - timedelta(hours=1), HOUR14):
        run_hour(settings, wh, LakeStore(settings.lake_url), hour)
    wh.close()
    port = free_port()
    app = create_app(settings, now=lambda: HOUR14 + timedelta(minutes=59, seconds=55))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_fleet_host_page_chart_and_alerts_in_chromium(dashboard_url: str, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium missing: run scripts/install-system-deps.sh (apt install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(dashboard_url + "/")
        rows = page.locator("#fleet tbody tr")
        assert rows.count() == 3
        gpu = rows.filter(has_text="gpu-7.example")
        assert gpu.locator("td.hot").count() >= 2  # CPU and temperature in red
        duplicates = page.locator("#duplicates").inner_text()
        assert "golden" in duplicates and "about 2 machines" in duplicates
        summary = page.locator("#summary").inner_text().replace("\n", " ")
        assert "2 reporting 1 silent" in summary  # the clones last reported at 14:04
        assert "Highest Temperature gpu-7.example 91°C" in summary
        page.screenshot(path=str(ARTIFACTS / "fleet.png"), full_page=True)

        # Sort by CPU, highest first (the header toggles), then search and filter: the state
        # is in the URL, so the view can be shared.
        # A click returns once the navigation commits, before the new page has loaded:
        # each one waits for its URL (and load) before the rows are read.
        page.click("#fleet th >> text=CPU %")
        page.wait_for_url(re.compile(r"sort=cpu.*dir=asc|dir=asc.*sort=cpu"))
        page.click("#fleet th >> text=CPU %")
        page.wait_for_url(re.compile(r"sort=cpu.*dir=desc|dir=desc.*sort=cpu"))
        assert "gpu-7.example" in rows.nth(0).inner_text()
        page.fill("input[name=q]", "web")
        page.click("#filters button")
        page.wait_for_url(re.compile(r"q=web"))
        assert rows.count() == 1 and "web-1.example" in rows.nth(0).inner_text()
        assert "q=web" in page.url and "sort=cpu" in page.url
        page.goto(dashboard_url + "/")
        page.check("input[name=alerts]")
        page.click("#filters button")
        page.wait_for_url(re.compile(r"alerts="))
        assert rows.count() == 2  # gpu-7 and the clones have alerts, web-1 has none
        assert "web-1.example" not in page.locator("#fleet").inner_text()
        page.goto(dashboard_url + "/")

        page.click("text=gpu-7.example")
        page.wait_for_url("**/host?id=gpu-7")
        charts = page.locator("svg.chart")
        assert charts.count() == 7  # every family these events carry (no GPU, no battery)
        assert page.locator("svg.chart polyline").count() >= 12
        box = charts.first.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100
        assert "cpu_p95_high" in page.locator("table.alerts").inner_text()
        page.screenshot(path=str(ARTIFACTS / "host.png"), full_page=True)

        page.goto(dashboard_url + "/host?id=golden")
        assert "duplicate_host_id" in page.locator("table.quality").inner_text()

        page.goto(dashboard_url + "/alerts?severity=critical")
        text = page.locator("table.alerts").inner_text()
        assert "temperature_high" in text and "cpu_p95_high" not in text
        page.screenshot(path=str(tmp_path / "alerts.png"), full_page=True)
        shutil.copy(tmp_path / "alerts.png", ARTIFACTS / "alerts.png")
        browser.close()
    assert (ARTIFACTS / "host.png").stat().st_size > 10_000


def test_pages_explain_an_empty_warehouse(settings: Settings) -> None:
    from starlette.testclient import TestClient

    client = TestClient(create_app(settings))
    response = client.get("/")
    assert response.status_code == 200
    assert "hourly job has not run" in response.text
    assert client.get("/healthz").json() == {"status": "ok"}
