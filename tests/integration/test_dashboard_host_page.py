"""The host page over a warehouse filled from a simulated fleet by the real hourly job: every
chart family the events carry, and a range selector that switches between raw-sample buckets
and hourly aggregates (Playwright + Debian Chromium, screenshots in test-output/dashboard/)."""

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
from tests.support.lakes import HOUR14, write_simulated_fleet
from tests.support.ports import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-output" / "dashboard"
HOURS = 8
START = HOUR14 - timedelta(hours=HOURS - 1)
NOW = HOUR14 + timedelta(minutes=59, seconds=50)
EVERY_HOST = ("CPU %", "Load (1 min)", "Memory and swap %", "Disk used %", "Disk I/O")
EVERY_HOST += ("Network bytes/s", "Temperature °C")
GPU = ("GPU utilization % per GPU", "GPU memory used", "GPU temperature °C per GPU", "GPU power W")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    root = tmp_path_factory.mktemp("simfleet")
    settings = Settings(
        data_dir=root / "data", lake_url=str(root / "lake"), warehouse_url=str(root / "wh.duckdb")
    )
    write_simulated_fleet(root / "lake", hosts=30, start=START, hours=HOURS)
    wh = DuckDBWarehouse(settings.warehouse_url)
    for n in range(HOURS):
        run_hour(settings, wh, LakeStore(settings.lake_url), START + timedelta(hours=n))
    kinds = {
        "gpu": wh.scalar("SELECT MIN(host_id) FROM {raw} WHERE gpu_count > 1"),
        "two mounts": wh.scalar("SELECT MIN(host_id) FROM {raw} WHERE disks_json LIKE '%/data%'"),
        "laptop": wh.scalar("SELECT MIN(host_id) FROM {raw} WHERE battery_pct IS NOT NULL"),
        "server": wh.scalar(
            "SELECT MIN(host_id) FROM {raw} WHERE gpu_count = 0 AND battery_pct IS NULL"
        ),
    }
    wh.close()
    assert all(kinds.values()), kinds  # the simulated fleet has each kind of machine
    port = free_port()
    app = create_app(settings, now=lambda: NOW)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", kinds
    server.should_exit = True
    thread.join(10)


def chart_points(page: object, title: str) -> int:
    svg = page.locator(f'svg.chart[aria-label^="{title}"]')  # type: ignore[attr-defined]
    assert svg.count() == 1, f"one {title!r} chart"
    return int(svg.get_attribute("data-points"))


def test_every_chart_family_and_the_range_selector(served: tuple[str, dict[str, str]]) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium missing: run scripts/install-system-deps.sh (apt install chromium)")
    from playwright.sync_api import sync_playwright

    url, kinds = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})

        page.goto(f"{url}/host?id={kinds['gpu']}")
        titles = page.locator("svg.chart").evaluate_all("s => s.map(e => e.ariaLabel)")
        for family in (*EVERY_HOST, *GPU):
            assert any(t.startswith(family) for t in titles), (family, titles)
        assert not any(t.startswith("Battery") for t in titles)  # a server has no battery
        assert page.locator(".ranges a.current").inner_text() == "24h"
        # 24 h of 10-s samples in 5-min buckets: this fleet's 8 hours are ~96 points a chart.
        assert 80 <= chart_points(page, "CPU %") <= 97
        labels = page.locator('svg.chart[aria-label^="CPU %"] text.tick').evaluate_all(
            "ts => ts.map(t => t.textContent)"
        )
        times = [t for t in labels if re.fullmatch(r"\d\d:\d\d", t)]
        assert len(times) == 3 and len(set(times)) == 3  # distinct, natural time labels
        page.screenshot(path=str(ARTIFACTS / "host-gpu-24h.png"), full_page=True)

        gpu_legend = page.locator('svg.chart[aria-label^="GPU utilization % per GPU"] .legend')
        assert gpu_legend.evaluate_all("ls => ls.map(l => l.textContent)")[:2] == ["GPU 0", "GPU 1"]

        page.goto(f"{url}/host?id={kinds['two mounts']}")
        mounts = page.locator('svg.chart[aria-label^="Disk used % per mount"] .legend')
        assert mounts.evaluate_all("ls => ls.map(l => l.textContent)") == ["/", "/data"]

        page.goto(f"{url}/host?id={kinds['gpu']}")
        page.click(".ranges >> text=6h")
        # A click returns once the navigation commits; the URL is the new one, its page may not
        # be there yet: wait for it to load before counting its charts.
        page.wait_for_url(re.compile(r"range=6h"))
        assert 330 <= chart_points(page, "CPU %") <= 361  # 1-min buckets over 6 h
        assert chart_points(page, "Network bytes/s") >= 330  # rates from counter deltas

        page.click(".ranges >> text=7d")
        page.wait_for_url(re.compile(r"range=7d"))
        assert chart_points(page, "CPU %") == HOURS  # hourly aggregates, each hour a point
        assert chart_points(page, "GPU utilization % (mean of GPUs)") == HOURS
        assert page.locator('svg.chart[aria-label^="CPU %"] circle').count() == 3 * HOURS
        page.screenshot(path=str(ARTIFACTS / "host-gpu-7d.png"), full_page=True)

        page.goto(f"{url}/host?id={kinds['laptop']}&range=24h")
        titles = page.locator("svg.chart").evaluate_all("s => s.map(e => e.ariaLabel)")
        assert any(t.startswith("Battery %") for t in titles)
        assert not any(t.startswith("GPU") for t in titles)
        assert chart_points(page, "Battery %") >= 80
        page.screenshot(path=str(ARTIFACTS / "host-laptop.png"), full_page=True)

        page.goto(f"{url}/host?id={kinds['server']}&range=30d")
        assert page.locator(".ranges a.current").inner_text() == "30d"
        assert chart_points(page, "Disk used %") == HOURS
        browser.close()
